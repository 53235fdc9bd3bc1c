import keras
import numpy as np
import pytest

from conftest import run_python

from kerascam.cams import explain, normalize_maps
from kerascam.export import (
    EXPLAIN_OUTPUTS,
    SERVE_OUTPUTS,
    explain_signature_name,
    export_saved_model,
    load_keras,
    normalize_maps_in_graph,
    save_keras,
    saved_model_holds,
)
from kerascam.models import build_model


@pytest.fixture()
def model():
    return build_model("unet", 32, 3, unet_filters=2)


def test_save_is_atomic_and_round_trips(tmp_path, model):
    path = tmp_path / "model.keras"
    save_keras(model, path)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(load_keras(path)(images), model(images), rtol=1e-6, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]  # no temporary left behind


def test_failed_save_keeps_the_previous_file(tmp_path, model, monkeypatch):
    path = tmp_path / "model.keras"
    save_keras(model, path)
    before = path.read_bytes()

    def broken_save(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_keras(model, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_saved_model_replaces_an_existing_export(tmp_path, model):
    export_saved_model(model, tmp_path / "saved_model", methods=())  # the serve signatures suffice here
    export_saved_model(model, tmp_path / "saved_model", methods=())
    assert (tmp_path / "saved_model" / "saved_model.pb").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]


def test_saved_model_holds_tells_the_exported_weights_from_others(tmp_path, model):
    path = tmp_path / "saved_model"
    assert saved_model_holds(model, path) is None  # nothing exported: cannot tell
    export_saved_model(model, path, methods=())
    assert saved_model_holds(model, path) is True
    weights = model.get_weights()
    # One weight of one kernel moved by the smallest float32 step: other weights.
    changed = [w.copy() for w in weights]
    changed[0].flat[0] = np.nextafter(changed[0].flat[0], np.float32(np.inf))
    model.set_weights(changed)
    assert saved_model_holds(model, path) is False
    model.set_weights(weights)
    assert saved_model_holds(model, path) is True
    # The same architecture freshly initialised holds other weights too.
    assert saved_model_holds(build_model("unet", 32, 3, unet_filters=2), path) is False


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_damaged_model_file_gives_one_clear_error(tmp_path, model, damage):
    path = tmp_path / "model.keras"
    save_keras(model, path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    else:
        path.unlink()
    with pytest.raises(ValueError, match=str(path).replace("\\", "\\\\")) as error:
        load_keras(path)
    assert "\n" not in str(error.value)


def test_lambda_layer_is_refused(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    path = tmp_path / "untrusted.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="Lambda layer"):
        load_keras(path)


# ------------------------------------------------ the SavedModel's signatures

# Runs in a fresh process that imports TensorFlow and numpy only: what a
# serving client has. Saves every output of every signature, and its output
# and input names. Then, Keras being imported, it imports kerascam and loads
# the model's .keras file with plain Keras (its custom layer registered by the
# import).
READ_SAVED_MODELS = r"""
import sys
import numpy as np
import tensorflow as tf
images_path, out, keras_path, folder = sys.argv[1:]
images = np.load(images_path)
results = {}
for name, function in tf.saved_model.load(folder).signatures.items():
    batch = images if name.endswith("_uint8") else images.astype(np.float32)
    outputs = function(images=tf.constant(batch))
    results[f"{name}|inputs"] = np.array(sorted(function.structured_input_signature[1]))
    results[f"{name}|outputs"] = np.array(sorted(outputs))
    results.update((f"{name}|{key}", value.numpy()) for key, value in outputs.items())
assert "kerascam" not in sys.modules, "the child imported kerascam"
import keras
import kerascam
results["load_model|logits"] = keras.saving.load_model(keras_path)(images.astype(np.float32)).numpy()
np.savez(out, **results)
"""

KERASCAM_THEN_KERAS = r"""
import os, sys
# The user's own log level (not the one the test process's kerascam set):
# kerascam then leaves the import of TensorFlow to them (kerascam/_quiet.py).
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ.pop("_KERASCAM_QUIET", None)
import kerascam
early = sorted(name for name in ("tensorflow", "keras") if name in sys.modules)
assert not early, f"import kerascam imported {early}"
import keras
import numpy as np
keras_path, images_path, out = sys.argv[1:]
np.save(out, keras.saving.load_model(keras_path)(np.load(images_path).astype(np.float32)).numpy())
"""

SERVE_SIGNATURES = ("serving_default", "serve", "serve_uint8")
TARGET_LAYER = "dec3_relu2"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A small U-Net exported with the default methods (GradCAM++, GradCAM) at
    dec3_relu2, a layer at 1/4 of the input (so that the maps are resized and
    native maps differ from maps), read back by a process without kerascam.
    The default target layer is exported by every training test."""
    folder = tmp_path_factory.mktemp("served")
    keras.utils.set_random_seed(1)
    unet = build_model("unet", 32, 3, unet_filters=4)
    export_saved_model(unet, folder / "saved_model", target_layer=TARGET_LAYER)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("uint8")
    np.save(folder / "images.npy", images)
    save_keras(unet, folder / "unet.keras")
    files = ("images.npy", "out.npz", "unet.keras", "saved_model")
    done = run_python(["-c", READ_SAVED_MODELS, *(str(folder / name) for name in files)])
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(folder / "out.npz") as saved:
        outputs = {tuple(key.split("|")): saved[key] for key in saved.files}
    return unet, images, outputs, folder


@pytest.mark.parametrize(
    "method, signatures", [("gradcam++", ("explain", "explain_gradcam_plus_plus")), ("gradcam", ("explain_gradcam",))]
)
def test_explain_signatures_match_the_engine_in_a_process_without_kerascam(served, method, signatures):
    unet, images, outputs, _ = served
    maps, native = explain(unet, images, method, target_layer=TARGET_LAYER, return_native=True)
    logits = unet(images.astype("float32")).numpy()
    assert np.ptp(maps) > 0 and np.ptp(logits) > 0  # maps and logits worth comparing
    assert native.shape == (3, 8, 8)
    for signature in signatures:
        for name in (signature, signature + "_uint8"):
            got = {key: outputs[name, key] for key in EXPLAIN_OUTPUTS}
            assert list(outputs[name, "outputs"]) == sorted(EXPLAIN_OUTPUTS), name
            assert list(outputs[name, "inputs"]) == ["images"], name
            np.testing.assert_allclose(got["map"], maps, atol=1e-5, err_msg=name)
            np.testing.assert_allclose(got["native_map"], native, rtol=1e-5, atol=1e-6, err_msg=name)
            np.testing.assert_array_equal(got["class"], np.argmax(logits, axis=-1), err_msg=name)
            assert got["class"].dtype == np.int64
            np.testing.assert_allclose(got["logits"], outputs["serve", "logits"], rtol=1e-5, atol=1e-5, err_msg=name)
            np.testing.assert_allclose(got["probabilities"], keras.ops.softmax(logits).numpy(), atol=1e-6)


def test_every_signature_is_written_and_serve_returns_named_logits_and_probabilities(served):
    unet, images, outputs, _ = served
    logits = unet(images.astype("float32")).numpy()
    for name in SERVE_SIGNATURES:
        assert list(outputs[name, "outputs"]) == sorted(SERVE_OUTPUTS), name
        np.testing.assert_allclose(outputs[name, "logits"], logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(outputs[name, "probabilities"], keras.ops.softmax(logits).numpy(), atol=1e-6)
    explain_names = {explain_signature_name(m, uint8=u) for m in ("gradcam++", "gradcam") for u in (False, True)}
    names = {key[0] for key in outputs if key[0] != "load_model"}
    assert names == {*SERVE_SIGNATURES, "explain", "explain_uint8", *explain_names}


def test_graph_normalisation_is_normalize_maps():
    rng = np.random.default_rng(0)
    maps = rng.uniform(-1, 3, (6, 5, 4)).astype("float32")
    maps[1] = 0.0  # zero
    maps[2] = 2.5  # constant
    maps[3, 0, 0] = np.nan
    maps[4, 1, 1] = np.inf
    expected = normalize_maps(maps)
    assert np.all(expected[[0, 5]].max(axis=(1, 2)) == 1)
    np.testing.assert_array_equal(normalize_maps_in_graph(maps).numpy(), expected)


@pytest.mark.parametrize(
    "methods, message",
    [
        (("scorecam",), "scorecam cannot be exported"),
        (("gradcam", "gradcam"), "'gradcam' more than once"),
        (("gradcam+",), "Unknown CAM method 'gradcam\\+'"),
    ],
)
def test_bad_methods_are_refused_before_anything_is_written(tmp_path, model, methods, message):
    with pytest.raises(ValueError, match=message) as error:
        export_saved_model(model, tmp_path / "saved_model", methods)
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_signature_names():
    assert explain_signature_name("gradcam++") == "explain_gradcam_plus_plus"
    assert explain_signature_name("gradcam++", uint8=True) == "explain_gradcam_plus_plus_uint8"
    assert explain_signature_name("gradcam", uint8=True) == "explain_gradcam_uint8"


def test_keras_file_loads_with_plain_keras_when_keras_was_imported_first(served):
    unet, images, outputs, _ = served
    expected = unet(images.astype("float32")).numpy()
    np.testing.assert_allclose(outputs["load_model", "logits"], expected, rtol=1e-6, atol=1e-6)


def test_keras_file_loads_with_plain_keras_imported_after_kerascam(served):
    unet, images, _, folder = served
    out = folder / "kerascam_first.npy"
    done = run_python(["-c", KERASCAM_THEN_KERAS, str(folder / "unet.keras"), str(folder / "images.npy"), str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(np.load(out), unet(images.astype("float32")).numpy(), rtol=1e-6, atol=1e-6)
