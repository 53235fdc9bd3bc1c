"""The CAM engine on Keras' JAX backend, with TensorFlow unimportable, against the TensorFlow engine (issue #25).

This process (TensorFlow) builds the four models small, a model with nested
sub-models and a pooled head whose GradCAM has a closed form
(`helpers_parity`), with random weights, and saves them. One child process
(`helpers_jax.run_without_tensorflow`: KERAS_BACKEND=jax, importing
tensorflow fails) loads them and explains the same images (every method and fused LayerCAM on
the two U-Nets, one method on ResNet50 and on VGG16: see
`helpers_parity.METHODS_COMPARED`; `benchmarks/backend_parity.py` runs the
whole matrix; layers of nested models). The maps must equal this process' to 1e-5 (float32;
the normalised maps absolutely, the raw maps relative to their peak).
"""

import json

import numpy as np
import pytest

import helpers_parity as parity
from helpers_jax import run_without_tensorflow
from kerascam import cams

TOLERANCE = 1e-5
CASES = ("unet", "unet_ablated", "resnet50", "vgg16", "nested", "gap_dense")

_CHILD = """
import json, os, sys
sys.path.insert(0, "tests")
import keras
import numpy as np
import helpers_parity as parity
from kerascam import cams
from kerascam.cams.engine import get_engine

# The initial weights are replaced by the parent's (JAX would compile every
# random initializer once per weight shape).
parity.draw_zero_initial_weights()

out = sys.argv[1]
report = {"backend": keras.backend.backend()}
arrays, models, _, engines = parity.explain_all(sys.argv[2:], out)
report["engines"] = sorted(engines)

# The same call again reuses the compiled functions.
model = models["gap_dense"]
cam = cams.get_method("gradcam")(model, "feat")
cam(parity.images("gap_dense"))
engine = get_engine(model, "feat", "gradcam")
traced = engine.tracing_count
cam(parity.images("gap_dense"))
report["retraced"] = engine.tracing_count - traced

try:
    cams.explain(model, parity.images("gap_dense"), "gradcam", backend="tf-keras-vis")
except ValueError as error:
    report["tf_keras_vis_error"] = str(error)
report["tensorflow_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
np.savez(os.path.join(out, "maps.npz"), **arrays)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def weights_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cams")


@pytest.fixture(scope="module")
def tf_models(weights_folder):
    """The models on TensorFlow, with random weights saved for the child."""
    built = {}
    for name in CASES:
        built[name] = parity.randomized(name)
        built[name].save_weights(weights_folder / f"{name}.weights.h5")
    return built


@pytest.fixture(scope="module")
def jax_run(tf_models, weights_folder):
    """The child's report and maps."""
    result = run_without_tensorflow(_CHILD, [weights_folder, *CASES], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    with np.load(weights_folder / "maps.npz") as maps:
        return report, dict(maps)


def test_the_jax_process_runs_the_jax_engine_without_tensorflow(jax_run):
    report, _ = jax_run
    assert report["backend"] == "jax"
    assert report["engines"] == ["kerascam.cams.jax_engine"]
    assert report["tensorflow_modules"] == []
    assert report["retraced"] == 0


def test_tf_keras_vis_under_jax_is_a_one_line_error_naming_tensorflow(jax_run):
    message = jax_run[0]["tf_keras_vis_error"]
    assert "\n" not in message and "TensorFlow backend" in message and "'jax'" in message


@pytest.mark.parametrize("name", CASES)
def test_jax_maps_equal_tensorflow_maps(jax_run, tf_models, name):
    _, arrays = jax_run
    compared = 0
    for found in parity.differences(name, tf_models[name], arrays):
        label, expected, received = found["label"], found["expected"], found["received"]
        np.testing.assert_array_equal(received.classes, expected.classes, err_msg=label)
        status = cams.map_status(expected.native)
        np.testing.assert_array_equal(cams.map_status(received.native), status, err_msg=label)
        assert found["peak"] > 0, label  # a comparison of all-zero maps would prove nothing
        np.testing.assert_allclose(received.native, expected.native, rtol=0, atol=TOLERANCE * found["peak"], err_msg=label)
        np.testing.assert_allclose(received.maps, expected.maps, rtol=0, atol=TOLERANCE, err_msg=label)
        compared += int(np.any(status == "ok"))
    assert compared >= 1


def test_gradcam_under_jax_has_the_pooled_heads_closed_form(jax_run, tf_models):
    # GAP + dense head: d y^c / d A_k = W[k, c] / (h * w) everywhere, so
    # GradCAM = HiResCAM = ReLU(sum_k A_k W[k, c]) / 64, computed here in float64.
    _, arrays = jax_run
    kernel, bias = (w.astype(np.float64) for w in tf_models["gap_dense"].get_layer("feat").get_weights())
    dense = tf_models["gap_dense"].get_layer("predictions").get_weights()[0].astype(np.float64)
    activations = np.maximum(parity.images("gap_dense").astype(np.float64) @ kernel[0, 0] + bias, 0.0)
    classes = arrays["gap_dense|gradcam|classes"]
    expected = np.maximum(np.einsum("nhwk,kn->nhw", activations, dense[:, classes]) / 64.0, 0.0)
    assert np.all(cams.map_status(expected) == "ok")
    for label in ("gradcam", "hirescam"):
        native = arrays[f"gap_dense|{label}|native"]
        np.testing.assert_allclose(native, expected, rtol=1e-5, atol=1e-6 * expected.max(), err_msg=label)


@pytest.mark.parametrize("shape, size", [((8, 12), (32, 48)), ((2, 3), (7, 5)), ((9, 6), (4, 4)), ((1, 1), (3, 2))])
def test_keras_ops_resize_is_tensorflows_and_scipys_arithmetic(shape, size):
    # The JAX engine's resizes (kerascam.cams.resize) against the TensorFlow
    # engine's: half-pixel centres as tf.image.resize (bilinear, no antialias,
    # also when shrinking), aligned corners as scipy's zoom(order=1).
    import scipy.ndimage
    import tensorflow as tf

    from kerascam.cams.resize import resize_bilinear

    maps = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    expected = tf.image.resize(maps[..., None], size, method="bilinear", antialias=False).numpy()[..., 0]
    np.testing.assert_array_equal(np.asarray(resize_bilinear(maps, size)), expected)
    corners = np.asarray(resize_bilinear(maps[..., None], size, align_corners=True))
    tf_corners = tf.raw_ops.ResizeBilinear(images=maps[..., None], size=size, align_corners=True, half_pixel_centers=False)
    np.testing.assert_array_equal(corners, tf_corners.numpy())
    # scipy samples in float64, TensorFlow and kerascam at float32 coordinates.
    zoomed = [scipy.ndimage.zoom(m.astype(np.float64), np.divide(size, shape), order=1) for m in maps]
    np.testing.assert_allclose(corners[..., 0], np.stack(zoomed), rtol=0, atol=1e-5)
