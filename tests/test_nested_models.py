"""CAMs of layers inside nested sub-models, named by path ("outer/inner"), and the default target layer.

A nested model's maps must equal those of the same network built flat with
the same weights, for every method, at any depth, fused or not.
"""

import keras
import numpy as np
import pytest

from kerascam import cams
from kerascam.cams.fusion import deepest_index
from kerascam.models import target_layer_name
from kerascam.models.layers import build_extractor, layer_order_key, resolve_layer_path

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
        ("nope", "kerascam", r"'nope' is not a layer of model 'two_branches'.*named by path \('left/<layer>'\)"),
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
