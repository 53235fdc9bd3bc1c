"""CAMs of layers inside nested sub-models, named by path ("outer/inner"), and the default target layer.

A nested model's maps must equal those of the same network built flat with
the same weights, for every method, at any depth, fused or not; and, wherever
the nested model sits (after preprocessing, in a Sequential, two levels
deep), those of an eager GradientTape computation at the same layer, through
`kerascam.cams.explain`, the command and the SavedModel (issue #27).
"""

import importlib.util
import json
import os

import keras
import numpy as np
import pytest

from kerascam import cams
from kerascam.cams.fusion import deepest_index
from kerascam.models import target_layer_name
from kerascam.models.layers import build_extractor, layer_order_key, resolve_layer_path

from conftest import ROOT

TOLERANCE = 1e-5


def _stem(inputs):
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    return keras.layers.Activation("relu", name="relu1")(x)


def _body(x):
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="conv2")(x)
    return keras.layers.Activation("relu", name="relu2")(x)


def _head(x, activation=None):
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.layers.Dense(3, activation=activation, name="predictions")(x)


@pytest.fixture(scope="module")
def twins():
    """A Sequential holding "backbone", which holds "stem" (three levels), and
    the same network built flat, with the same weights. The Sequential ends in
    a softmax (explained at its logits), the flat twin in logits."""
    keras.utils.set_random_seed(3)
    stem_input = keras.Input((16, 16, 3))
    stem = keras.Model(stem_input, _stem(stem_input), name="stem")
    backbone_input = keras.Input((16, 16, 3))
    backbone = keras.Model(backbone_input, _body(stem(backbone_input)), name="backbone")
    pooling = keras.layers.GlobalAveragePooling2D(name="gap")
    dense = keras.layers.Dense(3, activation="softmax", name="predictions")
    nested = keras.Sequential([keras.Input((16, 16, 3)), backbone, pooling, dense], name="nested")

    flat_input = keras.Input((16, 16, 3))
    flat = keras.Model(flat_input, _head(_body(_stem(flat_input))), name="flat")
    rng = np.random.default_rng(0)
    bn = stem.get_layer("bn1")
    # Batch norm statistics away from the identity, so that inference mode matters.
    bn.set_weights([rng.uniform(0.5, 2, 4), rng.normal(0, 1, 4), rng.normal(0, 1, 4), rng.uniform(0.5, 2, 4)])
    for layer in (*stem.layers[1:], *backbone.layers[2:], pooling, dense):
        flat.get_layer(layer.name).set_weights(layer.get_weights())
    return nested, flat


def _images(n=3, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, (n, 16, 16, 3)).astype(np.float32)


def _assert_same(nested_result, flat_result):
    (maps, native), (flat_maps, flat_native) = nested_result, flat_result
    assert native.shape == flat_native.shape and maps.shape == flat_maps.shape
    status = cams.map_status(flat_native)
    assert np.count_nonzero(status == "ok") >= 2  # never a vacuous comparison
    np.testing.assert_array_equal(cams.map_status(native), status)
    np.testing.assert_allclose(native, flat_native, atol=TOLERANCE * np.abs(flat_native).max())
    np.testing.assert_allclose(maps, flat_maps, atol=TOLERANCE)


@pytest.mark.parametrize(
    "method, nested_layer, flat_layer",
    [
        ("gradcam", "backbone/stem/relu1", "relu1"),  # depth 3
        ("gradcam++", "backbone/relu2", "relu2"),
        ("layercam", "backbone/stem/relu1", "relu1"),
        ("hirescam", "backbone/stem/relu1", "relu1"),
        ("scorecam", "backbone/relu2", "relu2"),
        # Fused, deep to shallow, a nested model as a whole (a layer of the Sequential)
        # with a layer inside it: the deepest layer is found across levels.
        ("layercam", ["backbone", "backbone/stem/relu1"], ["relu2", "relu1"]),
    ],
)
def test_nested_maps_equal_the_flat_twins(twins, method, nested_layer, flat_layer):
    nested, flat = twins
    images = _images()
    classes = np.array([0, 1, 2])
    ours = cams.explain(nested, images, method, classes, target_layer=nested_layer, return_native=True)
    reference = cams.explain(flat, images, method, classes, target_layer=flat_layer, return_native=True)
    _assert_same(ours, reference)


def test_the_extractor_shares_the_weights_and_leaves_the_model_as_it_was(twins):
    nested, flat = twins
    images = _images()
    config, before = nested.get_config(), np.asarray(nested(images))
    extractor = build_extractor(nested, ["backbone/stem/relu1", "backbone"])
    relu1, backbone, probabilities = (np.asarray(t) for t in extractor(images))
    np.testing.assert_allclose(probabilities, before, atol=1e-6)
    flat_relu1 = keras.Model(flat.inputs, flat.get_layer("relu1").output)
    np.testing.assert_allclose(relu1, np.asarray(flat_relu1(images)), atol=1e-5)
    assert backbone.shape == (3, 8, 8, 6)
    # The same variables, not copies: the extractor follows later training.
    assert {id(v) for v in extractor.weights} == {id(v) for v in nested.weights}
    assert nested.get_config() == config
    np.testing.assert_array_equal(np.asarray(nested(images)), before)


def test_paths_resolve_and_order_across_nesting_levels(twins):
    nested, _ = twins
    # A plain name of exactly one nested model's layer stands for its path; a
    # plain top-level name stays as it is.
    assert resolve_layer_path(nested, "relu1") == "backbone/stem/relu1"
    assert resolve_layer_path(nested, "gap") == "gap"
    cam = cams.METHODS["gradcam"](nested, ["relu2", "conv1"])
    assert cam.target_layers == ("backbone/relu2", "backbone/stem/conv1")
    layers = ["backbone", "backbone/relu2", "backbone/stem/relu1", "backbone/stem", "backbone/stem/conv1"]
    assert sorted(layers, key=lambda path: layer_order_key(nested, path)) == [
        "backbone/stem/conv1",
        "backbone/stem/relu1",
        "backbone/stem",
        "backbone/relu2",
        "backbone",
    ]
    assert deepest_index(nested, ["backbone/stem/relu1", "backbone", "backbone/relu2"]) == 1
    assert target_layer_name(nested) == "backbone/relu2"
    assert cams.METHODS["layercam"](nested).target_layer == "backbone/relu2"


def _ambiguous():
    """Two nested models that both hold a layer called "features"."""
    models = []
    for name in ("left", "right"):
        inputs = keras.Input((8, 8, 3))
        models.append(keras.Model(inputs, keras.layers.Conv2D(2, 1, name="features")(inputs), name=name))
    inputs = keras.Input((8, 8, 3))
    merged = keras.layers.Concatenate(name="merge")([model(inputs) for model in models])
    return keras.Model(inputs, _head(merged), name="two_branches")


@pytest.mark.parametrize(
    "target_layer, backend, expected",
    [
        ("features", "kerascam", r"several nested models .*\['left/features', 'right/features'\]"),
        (
            "nope",
            "kerascam",
            r"'nope' is not a layer of model 'two_branches'.*nested models, whose layers are named by path: "
            r"'left' \(last feature layer 'left/features'\), 'right' \(last feature layer 'right/features'\)",
        ),
        ("left/nope", "kerascam", r"'nope' is not a layer of nested model 'left'.*'features'"),
        ("merge/features", "kerascam", r"'merge' is a Concatenate layer, not a nested"),
        ("left/features", "tf-keras-vis", r"tf-keras-vis cannot reach.*'left/features'.*backend='kerascam'"),
    ],
)
def test_bad_paths_are_refused_in_one_line(target_layer, backend, expected):
    with pytest.raises(ValueError, match=expected) as error:
        cams.explain(_ambiguous(), _images(1)[:, :8, :8], "gradcam", target_layer=target_layer, backend=backend)
    assert "\n" not in str(error.value)


def test_a_keras_applications_base_in_a_sequential_is_explained_as_its_flat_twin():
    """VGG16's convolutional base nested in a Sequential with a softmax head (the
    usual transfer-learning model), against the same base used flat under a
    logits head with the same weights."""
    keras.utils.set_random_seed(5)
    base = keras.applications.VGG16(input_shape=(32, 32, 3), include_top=False, weights=None)
    dense = keras.layers.Dense(4, activation="softmax", name="predictions")
    nested = keras.Sequential([keras.Input((32, 32, 3)), base, keras.layers.GlobalAveragePooling2D(), dense])
    flat_dense = keras.layers.Dense(4, name="predictions")
    flat = keras.Model(base.input, flat_dense(keras.layers.GlobalAveragePooling2D()(base.output)))
    flat_dense.set_weights(dense.get_weights())

    # The default target is the base's last convolution, found inside it (not
    # block5_pool, which only subsamples it).
    assert target_layer_name(nested) == "vgg16/block5_conv3"
    assert target_layer_name(flat) == "block5_conv3"
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    # At 32x32 block5_conv3 is 2x2; block4_conv3 is 4x4.
    ours = cams.explain(nested, images, "gradcam", [0, 3], target_layer="vgg16/block4_conv3", return_native=True)
    reference = cams.explain(flat, images, "gradcam", [0, 3], target_layer="block4_conv3", return_native=True)
    assert ours[1].shape == (2, 4, 4)
    _assert_same(ours, reference)


# A nested base anywhere in the outer graph (issue #27): after preprocessing, in
# Sequential and functional models, two levels deep. The maps are checked against
# benchmarks/zoo.py's `tape_reference`, an eager GradientTape with a hook on the
# target layer, which shares no graph code with kerascam.


def _load_zoo():
    spec = importlib.util.spec_from_file_location("zoo", os.path.join(ROOT, "benchmarks", "zoo.py"))
    zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo)
    return zoo


def tiny_application(include_top=False, weights=None, input_shape=(16, 16, 3)):
    """A two-block convolutional base with a keras.applications constructor's signature."""
    assert not include_top and weights is None
    inputs = keras.Input(input_shape)
    x = _body(_stem(inputs))
    base = keras.Model(inputs, x, name="tiny")
    rng = np.random.default_rng(4)
    base.get_layer("bn1").set_weights(
        [rng.uniform(0.5, 2, 4), rng.normal(0, 1, 4), rng.normal(0, 0.2, 4), rng.uniform(0.5, 2, 4)]
    )
    return base


def _halve(pixels):
    """A stand-in for a family's preprocess_input: raw ops in the outer graph."""
    return keras.ops.subtract(keras.ops.divide(pixels, 127.5), 1.0)


@pytest.fixture(scope="module")
def zoo():
    return _load_zoo()


@pytest.fixture(scope="module")
def positions(zoo):
    """The zoo's three patterns around one tiny base, and two more places for it:
    after inactive augmentation, normalisation and a Lambda layer, and inside a
    model that is itself nested (two levels)."""
    keras.utils.set_random_seed(7)
    base = tiny_application()
    models = zoo.build_patterns(base, _halve)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.RandomFlip(name="flip")(inputs)
    x = keras.layers.Normalization(mean=[120.0, 110.0, 100.0], variance=[3600.0, 3000.0, 2500.0], name="norm")(x)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    x = base(x, training=False)
    models["augmented"] = keras.Model(inputs, _head(x), name="augmented")
    wrapper_input = keras.Input((16, 16, 3))
    wrapper = keras.Model(wrapper_input, base(keras.layers.Rescaling(1 / 255)(wrapper_input)), name="wrapper")
    models["two_levels"] = keras.Sequential(
        [keras.Input((16, 16, 3)), wrapper, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)],
        name="two_levels",
    )
    return models


def _pixels(n=2, seed=3):
    return np.random.default_rng(seed).uniform(0, 255, (n, 16, 16, 3)).astype(np.float32)


def test_the_zoo_patterns_of_a_tiny_base_equal_the_tape_reference(zoo, positions):
    """benchmarks/zoo.py's three patterns x three methods, as the zoo runs them, at the
    default layer: the base's last convolutional block, found inside the base."""
    models = {pattern: positions[pattern] for pattern in zoo.PATTERNS}
    records = zoo.explain_patterns(models, _pixels(), np.array([0, 2]))
    assert [(r["pattern"], r["method"]) for r in records] == [(p, m) for p in zoo.PATTERNS for m in zoo.METHODS]
    assert [r["layer"] for r in records] == ["relu2"] * 3 + ["tiny/relu2"] * 6
    assert all(r["ok"] and r["native_shape"] == [8, 8] and r["map_status"] == {"ok": 2} for r in records), records
    assert max(r["relative_error"] for r in records) <= zoo.TOLERANCE


@pytest.mark.parametrize(
    "position, method, layer",
    [
        ("guide", "gradcam++", "tiny/relu1"),  # a layer before the last block
        ("augmented", "gradcam++", None),
        ("two_levels", "gradcam", None),
    ],
)
def test_a_base_anywhere_equals_the_tape_reference(zoo, positions, position, method, layer):
    model = positions[position]
    expected = {"augmented": "tiny/relu2", "two_levels": "wrapper/tiny/relu2"}.get(position)
    if layer is None:
        assert target_layer_name(model) == expected
    path = layer or expected
    images, classes = _pixels(3, seed=5), np.array([1, 0, 2])
    _, native = cams.explain(model, images, method, classes, target_layer=layer, return_native=True)
    reference = zoo.tape_reference(model, path, images, classes)[method]
    assert np.count_nonzero(reference.max(axis=(1, 2)) > 0) >= 2  # never a vacuous comparison
    assert zoo.relative_error(native, reference) <= TOLERANCE


def test_fused_layercam_over_a_nested_base_after_preprocessing(zoo, positions):
    model, images, classes = positions["guide"], _pixels(), np.array([2, 1])
    _, fused = cams.explain(model, images, "layercam", classes, target_layer=["tiny/relu1", "tiny/relu2"],
                            return_native=True)
    reference = [
        cams.resize_maps(zoo.tape_reference(model, layer, images, classes)["layercam"], (16, 16))
        for layer in ("tiny/relu1", "tiny/relu2")
    ]
    np.testing.assert_allclose(fused, np.asarray(cams.fuse_maps(reference, 1)), atol=TOLERANCE)
    assert fused.max() == pytest.approx(1.0)


def test_a_base_called_twice_is_refused_naming_both_calls():
    base = tiny_application()
    inputs = keras.Input((16, 16, 3))
    flipped = keras.layers.RandomFlip("horizontal", name="flip")(inputs)
    merged = keras.layers.Add(name="merge")([base(inputs), base(flipped)])
    model = keras.Model(inputs, _head(merged), name="siamese")
    assert target_layer_name(model) == "merge"  # the features the head receives: explained as any layer
    with pytest.raises(ValueError, match=r"Nested model 'tiny' is called twice in model 'siamese' \(first on the "
                       r"output of 'input_layer\w*', then on the output of 'flip'\), so the activations") as error:
        cams.explain(model, _pixels(1), "gradcam", target_layer="tiny/relu2")
    assert "\n" not in str(error.value)


def test_the_command_explains_a_saved_guide_pattern_and_refuses_bad_layers_in_one_line(positions, tmp_path, capsys):
    """`kerascam explain` on .keras files (the guide's pattern: preprocessing ops, then the
    base): the default layer inside the base; a layer that is not there, or a nested
    base without a 4-D layer, is one line and exit 2."""
    import cv2

    from kerascam.cli import main
    from kerascam.export import save_keras

    save_keras(positions["guide"], tmp_path / "guide.keras")
    dense_input = keras.Input((16 * 16 * 3,))
    dense_base = keras.Model(dense_input, keras.layers.Dense(4, name="hidden")(dense_input), name="dense_base")
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Dense(3)(dense_base(keras.layers.Flatten()(inputs)))
    save_keras(keras.Model(inputs, outputs, name="dense_only"), tmp_path / "dense.keras")
    image = tmp_path / "image.png"
    assert cv2.imwrite(str(image), _pixels(1)[0].astype(np.uint8))

    def run(model, *extra):
        code = main(["explain", str(image), "--model", str(tmp_path / model), "--out", str(tmp_path / "out"), *extra])
        return code, capsys.readouterr().err.strip().splitlines()

    code, err = run("guide.keras")
    assert code == 0 and err == []
    with open(tmp_path / "out" / "explanations.jsonl", encoding="utf-8") as records:
        assert [json.loads(line)["layer"] for line in records] == ["tiny/relu2"]
    code, err = run("guide.keras", "--target-layer", "nope")
    assert code == 2 and len(err) == 1
    assert "'nope' is not a layer of model 'guide'" in err[0]
    assert "nested models, whose layers are named by path: 'tiny' (last feature layer 'tiny/relu2')" in err[0]
    code, err = run("dense.keras")
    assert code == 2 and len(err) == 1 and "has no layer with a 4-D output" in err[0]


def test_the_saved_model_of_a_guide_pattern_explains_as_kerascam_does(positions, tmp_path):
    import tensorflow as tf

    from kerascam.export import export_saved_model

    model, images = positions["guide"], _pixels(2, seed=9)
    export_saved_model(model, tmp_path / "saved_model", methods=("gradcam++",))
    served = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["explain"](images=tf.constant(images))
    maps, native = cams.explain(model, images, "gradcam++", np.asarray(served["class"]), return_native=True)
    assert native.shape == (2, 8, 8) and np.count_nonzero(cams.map_status(native) == "ok") == 2
    np.testing.assert_allclose(np.asarray(served["native_map"]), native, atol=TOLERANCE * native.max())
    np.testing.assert_allclose(np.asarray(served["map"]), maps, atol=TOLERANCE)


def test_the_zoo_table_counts_cases_and_names_failures(zoo):
    records = [
        dict(model="Tiny", pattern=p, method=m, ok=(p, m) != ("guide", "layercam"), layer="tiny/relu2",
             native_shape=[1, 1], map_status={"constant": 2} if p == "plain" else {"ok": 2},
             reason="" if (p, m) != ("guide", "layercam") else "ValueError: broken")
        for p in zoo.PATTERNS for m in zoo.METHODS
    ]
    lines = zoo.table(records).splitlines()
    assert lines[1].split()[:5] == ["Tiny", "plain", "ok", "ok", "ok"] and lines[1].endswith("6 of 6 maps undefined")
    assert lines[2].split()[:5] == ["Tiny", "guide", "ok", "ok", "FAIL"] and lines[2].endswith("ValueError: broken")
    assert lines[-2].startswith("8 of 9 cases explained") and lines[-1].startswith("3 of those 8 have a map")
