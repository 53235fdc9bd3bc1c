"""Tests of kerascam.cams on tiny models built here (32x32 inputs)."""

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from kerascam import cams

METHODS = ["gradcam", "gradcam++", "layercam", "hirescam", "scorecam"]
GRADIENT_METHODS = ["gradcam", "gradcam++", "layercam", "hirescam"]
SQUARE = (slice(16, 24), slice(4, 12))  # rows, cols of the bright square


def _random_cnn(pool, name):
    """Conv net on raw pixels, target layer "target" at 1 / pool of the input size."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(x)
    if pool > 1:
        x = keras.layers.MaxPooling2D(pool, name="pool")(x)
    # The target is an Activation, not a Conv (like ResNet50's "conv5_block3_out"):
    # tf-keras-vis must use it as given, not seek back to "target_conv".
    x = keras.layers.Conv2D(8, 3, padding="same", name="target_conv")(x)
    x = keras.layers.Activation("relu", name="target")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def _square_detector(pool):
    """A hand-set net whose class-0 evidence is where the image is bright.

    Channel 0 of "evidence" is ReLU(local mean brightness - 0.5): positive only
    inside a bright square on a black background. Channel 1 is the constant
    0.1. Class 0 reads channel 0, class 1 channel 1 (its maps are constant),
    class 2 reads both with negative weights (its gradient maps are all zero).
    """
    inputs = keras.Input((32, 32, 3))
    evidence = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="evidence")
    x = evidence(inputs)
    if pool > 1:
        x = keras.layers.AveragePooling2D(pool, name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    dense = keras.layers.Dense(3, name="predictions")
    outputs = dense(x)
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    kernel[..., 0] = 1.0 / (9 * 3 * 255.0)
    evidence.set_weights([kernel, np.array([-0.5, 0.1], np.float32)])
    weights = np.array([[4.0, 0.0, -1.0], [0.0, 1.0, -1.0]], np.float32)
    dense.set_weights([weights, np.zeros(3, np.float32)])
    return keras.Model(inputs, outputs, name=f"square_detector_{pool}")


def _square_images(n=2):
    images = np.zeros((n, 32, 32, 3), np.float32)
    images[:, SQUARE[0], SQUARE[1]] = 255.0
    return images


@pytest.fixture(scope="module")
def coarse_model():
    keras.utils.set_random_seed(0)
    return _random_cnn(pool=4, name="coarse")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)


def _native_and_logits(model, layer, images):
    extractor = keras.Model(model.inputs, [model.get_layer(layer).output, model.outputs[0]])
    images = tf.constant(images)
    with tf.GradientTape() as tape:
        activations, logits = extractor(images, training=False)
        classes = tf.argmax(logits, axis=-1)
        class_logits = tf.gather(logits, classes, batch_dims=1)
    gradients = tape.gradient(class_logits, activations)
    return (
        activations.numpy().astype(np.float64),
        gradients.numpy().astype(np.float64),
        class_logits.numpy().astype(np.float64),
    )


def _relative_error(actual, expected):
    return np.max(np.abs(actual - expected)) / np.max(np.abs(expected))


@pytest.mark.parametrize("method", METHODS)
def test_shapes_range_and_native_resolution(coarse_model, images, method):
    maps, native = cams.explain(coarse_model, images, method, target_layer="target", return_native=True)
    assert maps.shape == (2, 32, 32) and maps.dtype == np.float32
    assert native.shape == (2, 8, 8) and native.dtype == np.float32
    assert np.all(np.isfinite(maps))
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert np.all(cams.map_status(native) == "ok")
    np.testing.assert_array_equal(maps.max(axis=(1, 2)), 1.0)
    np.testing.assert_array_equal(maps.min(axis=(1, 2)), 0.0)


@pytest.mark.parametrize("method", METHODS)
def test_resized_is_bilinear_of_native_then_normalised(coarse_model, images, method):
    maps, native = cams.explain(coarse_model, images, method, target_layer="target", return_native=True)
    for got, raw in zip(maps, native):
        resized = cv2.resize(raw, (32, 32), interpolation=cv2.INTER_LINEAR)
        expected = (resized - resized.min()) / (resized.max() - resized.min())
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_non_square_input(coarse_model):
    wide = np.random.default_rng(1).uniform(0, 255, (1, 32, 48, 3)).astype(np.float32)
    maps, native = cams.explain(coarse_model, wide, "gradcam", target_layer="target", return_native=True)
    assert maps.shape == (1, 32, 48)
    assert native.shape == (1, 8, 12)


@pytest.mark.parametrize("method", METHODS)
def test_map_peaks_on_the_class_evidence(method):
    model = _square_detector(pool=4)
    maps = cams.explain(model, _square_images(), method, class_index=0, target_layer="pool")
    for cam in maps:
        row, col = np.unravel_index(np.argmax(cam), cam.shape)
        assert SQUARE[0].start <= row < SQUARE[0].stop and SQUARE[1].start <= col < SQUARE[1].stop
        # Every pixel tied for the maximum lies inside the square.
        inside = np.zeros(cam.shape, bool)
        inside[SQUARE] = True
        assert np.all(inside[cam == cam.max()])


def test_gradcam_matches_direct_implementation(coarse_model, images):
    activations, gradients, _ = _native_and_logits(coarse_model, "target", images)
    weights = gradients.mean(axis=(1, 2), keepdims=True)
    expected = np.maximum((weights * activations).sum(axis=-1), 0.0)
    _, native = cams.explain(coarse_model, images, "gradcam", target_layer="target", return_native=True)
    assert _relative_error(native, expected) < 1e-4


def _gradcam_plus_plus_paper_weights(activations, gradients, class_logits):
    """Chattopadhay et al. 2018, eq. 19, with Y^c = exp(y^c), in float64; the
    alphas of each channel are then divided by their spatial sum as in the
    authors' code (and tf-keras-vis)."""
    exp_score = np.exp(class_logits)[:, None, None, None]
    d1 = exp_score * gradients
    d2, d3 = d1 * gradients, d1 * gradients**2
    activation_sums = activations.sum(axis=(1, 2), keepdims=True)
    denominator = 2.0 * d2 + activation_sums * d3
    alphas = np.where(d2 != 0.0, d2 / np.where(d2 != 0.0, denominator, 1.0), 0.0)
    alpha_sums = alphas.sum(axis=(1, 2), keepdims=True)
    alphas = alphas / np.where(alpha_sums != 0.0, alpha_sums, 1.0)
    return (alphas * np.maximum(d1, 0.0)).sum(axis=(1, 2), keepdims=True)


def test_gradcam_plus_plus_matches_direct_implementation(coarse_model, images):
    activations, gradients, class_logits = _native_and_logits(coarse_model, "target", images)
    # The native map is the paper's divided by the positive factor exp(y^c).
    weights = _gradcam_plus_plus_paper_weights(activations, gradients, class_logits)
    weights /= np.exp(class_logits)[:, None, None, None]
    expected = np.maximum((weights * activations).sum(axis=-1), 0.0)
    maps, native = cams.explain(
        coarse_model, images, "gradcam++", target_layer="target", return_native=True
    )
    assert _relative_error(native, expected) < 1e-4
    np.testing.assert_allclose(maps, cams.normalize_maps(cams.resize_maps(expected, (32, 32))), atol=1e-5)


@pytest.mark.parametrize("logit", [-5.0, 0.3, 20.0, 200.0, -200.0])
def test_gradcam_plus_plus_weights_survive_logits_whose_exp_overflows(logit):
    from kerascam.cams.gradcam_plus_plus import GradCAMPlusPlus

    rng = np.random.default_rng(3)
    activations = rng.uniform(0.0, 2.0, (2, 4, 5, 3))
    gradients = rng.normal(0.0, 0.1, (2, 4, 5, 3))
    gradients[1, ..., 2] = 0.0  # a channel without gradient: weight 0
    logits = np.array([logit, 1.0])
    # The old float32 formula (exp(y^c) inside) gives inf/nan at 200 and
    # all-zero weights at -200; the float64 paper formula fits both.
    paper = _gradcam_plus_plus_paper_weights(activations, gradients, logits) / np.exp(logits)[:, None, None, None]
    weights = GradCAMPlusPlus.weights(
        tf.constant(activations, tf.float32), tf.constant(gradients, tf.float32), tf.constant(logits, tf.float32)
    ).numpy()
    assert np.all(np.isfinite(weights)) and np.any(weights[0] > 0)
    np.testing.assert_allclose(weights, paper, rtol=1e-5, atol=1e-7)
    assert np.all(weights[1, ..., 2] == 0.0)
    maps = np.maximum((weights * activations).sum(axis=-1), 0.0)
    expected = np.maximum((paper * activations).sum(axis=-1), 0.0)
    np.testing.assert_allclose(cams.normalize_maps(maps), cams.normalize_maps(expected), atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_full_resolution_layer_gives_a_full_resolution_map(method):
    model = _square_detector(pool=1)
    images = np.zeros((1, 32, 32, 3), np.float32)
    images[:, 4:10, 3:9] = 255.0  # inside the top-left 16x16 block
    maps, native = cams.explain(
        model, images, method, class_index=0, target_layer="evidence", return_native=True
    )
    assert native.shape == (1, 32, 32)
    # No resize at full resolution: the map is the normalised native map.
    np.testing.assert_array_equal(maps, cams.normalize_maps(native))
    # ScoreCAM adds a constant (the weighted constant channel); all methods
    # leave the background at the map's minimum and raise the square above it.
    native = native[0]
    background = native.min()
    assert native[5:9, 4:8].min() > background
    block = native[:16, :16]  # a coarse 2x2 map would hold one value here
    np.testing.assert_array_equal(block[[0, 1, 12, 13, 15]], background)
    np.testing.assert_array_equal(block[:, [0, 1, 10, 15]], background)
    np.testing.assert_array_equal(native[16:], background)
    np.testing.assert_array_equal(native[:, 16:], background)


def test_class_index_none_is_the_predicted_class(coarse_model, images):
    predicted = np.argmax(coarse_model.predict(images, verbose=0), axis=-1)
    np.testing.assert_array_equal(cams.predicted_classes(coarse_model, images), predicted)
    by_default = cams.explain(coarse_model, images, "gradcam", target_layer="target")
    explicit = cams.explain(coarse_model, images, "gradcam", predicted, target_layer="target")
    np.testing.assert_array_equal(by_default, explicit)


def test_class_index_int_and_array_forms(coarse_model, images):
    as_int = cams.explain(coarse_model, images, "gradcam", 2, target_layer="target")
    as_array = cams.explain(coarse_model, images, "gradcam", np.array([2, 2]), target_layer="target")
    np.testing.assert_array_equal(as_int, as_array)
    mixed = cams.explain(coarse_model, images, "gradcam", [2, 0], target_layer="target")
    np.testing.assert_array_equal(mixed[0], as_int[0])
    other = cams.explain(coarse_model, images, "gradcam", 0, target_layer="target")
    np.testing.assert_array_equal(mixed[1], other[1])
    assert not np.allclose(as_int[1], other[1])


@pytest.mark.parametrize("bad", [[0, 1, 2], [0], 3, -1, 1.0, [[0, 1]]])
def test_bad_class_index_raises(coarse_model, images, bad):
    with pytest.raises(ValueError, match="class_index"):
        cams.explain(coarse_model, images, "gradcam", bad, target_layer="target")


def test_unknown_method_lists_the_valid_ones(coarse_model, images):
    with pytest.raises(ValueError, match=r"gradcam\+\+.*scorecam"):
        cams.explain(coarse_model, images, "lime", target_layer="target")
    assert cams.available_methods() == METHODS
    assert set(cams.METHODS) == set(METHODS)


def test_bad_target_layer_raises(coarse_model, images):
    with pytest.raises(ValueError, match="not a layer"):
        cams.explain(coarse_model, images, "gradcam", target_layer="nope")
    with pytest.raises(ValueError, match="4-D"):
        cams.explain(coarse_model, images, "gradcam", target_layer="gap")


@pytest.mark.parametrize(
    "method, target_layer, expected",
    [
        ("layercam", ["conv1", "nope"], r"'nope' is not a layer"),
        ("gradcam++", ["conv1", "gap"], r"4-D.*'gap'"),
        ("hirescam", ["target", "conv1", "target"], r"lists 'target' more than once"),
        ("gradcam", [], r"names no layer"),
        ("scorecam", ["conv1", "target"], r"scorecam explains one layer at a time"),
    ],
)
def test_bad_layer_lists_are_refused_in_one_line_naming_them(coarse_model, images, method, target_layer, expected):
    with pytest.raises(ValueError, match=expected) as error:
        cams.explain(coarse_model, images, method, target_layer=target_layer)
    assert "\n" not in str(error.value)


def test_the_registry_is_the_only_list_of_methods(coarse_model, images, monkeypatch):
    """A method added to `METHODS` alone reaches explain, the engine and evaluate.py's --cam."""
    from kerascam.cli import evaluate_parser

    class ActivationSum(cams.GradientCAM):
        """ReLU of the plain channel sum: a weight of 1 for every channel."""

        name = "activation-sum"

        @staticmethod
        def weights(activations, gradients, class_scores):
            return tf.ones_like(gradients[:, :1, :1, :])

    monkeypatch.setitem(cams.METHODS, ActivationSum.name, ActivationSum)
    assert ActivationSum.name in cams.available_methods()
    cam_option = next(action for action in evaluate_parser()._actions if action.dest == "cam")
    assert ActivationSum.name in cam_option.choices
    activations, _, _ = _native_and_logits(coarse_model, "target", images)
    _, native = cams.explain(coarse_model, images, "ACTIVATION-SUM", target_layer="target", return_native=True)
    np.testing.assert_allclose(native, np.maximum(activations.sum(axis=-1), 0.0), rtol=1e-5)
    fused = cams.explain(coarse_model, images, ActivationSum.name, target_layer=["conv1", "target"])
    assert fused.shape == (2, 32, 32)
    with pytest.raises(ValueError, match="exists only in kerascam"):
        cams.explain(coarse_model, images, ActivationSum.name, target_layer="target", backend="tf-keras-vis")


def test_max_n_keeps_shapes_and_is_per_image(coarse_model, images):
    maps, native = cams.explain(
        coarse_model, images, "scorecam", target_layer="target", max_N=3, return_native=True
    )
    assert maps.shape == (2, 32, 32) and native.shape == (2, 8, 8)
    assert np.all(np.isfinite(maps)) and maps.min() >= 0 and maps.max() <= 1
    alone = cams.explain(coarse_model, images[1:], "scorecam", target_layer="target", max_N=3)
    np.testing.assert_allclose(maps[1], alone[0], atol=1e-6)
    all_channels = cams.explain(coarse_model, images, "scorecam", target_layer="target", max_N=8)
    default = cams.explain(coarse_model, images, "scorecam", target_layer="target")
    np.testing.assert_allclose(all_channels, default, atol=1e-6)


@pytest.mark.parametrize("method, max_n", [("gradcam", 2), ("scorecam", 0), ("scorecam", 9)])
def test_bad_max_n_raises(coarse_model, images, method, max_n):
    with pytest.raises(ValueError, match="max_N"):
        cams.explain(coarse_model, images, method, target_layer="target", max_N=max_n)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_undefined_maps_are_zeros_and_reported(method):
    model = _square_detector(pool=4)
    images = _square_images(1)
    options = dict(target_layer="pool", return_native=True)
    constant, native_constant = cams.explain(model, images, method, 1, **options)
    zero, native_zero = cams.explain(model, images, method, 2, **options)
    assert cams.map_status(native_constant).tolist() == ["constant"]
    assert cams.map_status(native_zero).tolist() == ["zero"]
    np.testing.assert_array_equal(constant, 0.0)
    np.testing.assert_array_equal(zero, 0.0)


def test_batch_size_does_not_change_maps(coarse_model, images):
    for method in GRADIENT_METHODS:
        whole = cams.explain(coarse_model, images, method, target_layer="target")
        one_by_one = cams.explain(coarse_model, images, method, target_layer="target", batch_size=1)
        np.testing.assert_allclose(whole, one_by_one, atol=1e-5)


def test_uint8_images_and_model_left_untouched(coarse_model, images):
    weights = [w.copy() for w in coarse_model.get_weights()]
    layer_count = len(coarse_model.layers)
    as_uint8 = images.round().astype(np.uint8)
    maps = cams.explain(coarse_model, as_uint8, "gradcam++", target_layer="target")
    as_float = as_uint8.astype(np.float32)
    expected = cams.explain(coarse_model, as_float, "gradcam++", target_layer="target")
    np.testing.assert_array_equal(maps, expected)
    assert len(coarse_model.layers) == layer_count
    for before, after in zip(weights, coarse_model.get_weights()):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("backend", cams.BACKENDS)
@pytest.mark.parametrize("shape", [(24, 32, 3), (32, 32, 1)])
def test_images_that_do_not_fit_a_fixed_input_are_refused_in_one_line(backend, shape):
    model = _square_detector(pool=4)  # takes (32, 32, 3)
    images = np.zeros((2, *shape), np.float32)
    with pytest.raises(ValueError) as error:
        cams.explain(model, images, "gradcam", class_index=0, target_layer="pool", backend=backend)
    message = str(error.value)
    assert "\n" not in message and f"{shape}" in message and "(32, 32, 3)" in message, message
    # A model with a free input size takes any size.
    free = _random_cnn(pool=4, name="free")
    assert cams.explain(free, np.zeros((1, 24, 40, 3), np.float32), "gradcam", target_layer="target").shape == (1, 24, 40)
