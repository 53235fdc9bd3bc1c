"""ScoreCAM masks towards each model's normalised zero, with one channel rule (issue #23, item 4)."""

import keras
import numpy as np

from kerascam import cams
from kerascam.evaluation.config import EvalConfig
from kerascam.models import build_model
from kerascam.models.preprocessing import ImagePreprocessing, input_baseline

# Logits = W [mean of the preprocessed B, G, R; 1] + b: the constant 1 comes
# from the target layer, a single channel that is 1 everywhere.
HEAD_KERNEL = np.array([[0.02, -0.01, 0.0], [0.0, 0.03, -0.02], [0.01, 0.0, 0.02], [0.5, 0.0, -0.5]], np.float32)
HEAD_BIAS = np.array([0.1, -0.2, 0.3], np.float32)


def _shifted_input_model():
    """Caffe preprocessing (RGB -> BGR, minus the ImageNet mean), then a constant target channel."""
    inputs = keras.Input((16, 16, 3))
    x = ImagePreprocessing("caffe", name="preprocessing")(inputs)
    constant = keras.layers.Conv2D(
        1, 1, kernel_initializer="zeros", bias_initializer="ones", activation="relu", name="target"
    )(x)
    features = keras.layers.Concatenate(name="features")(
        [keras.layers.GlobalAveragePooling2D(name="gap_pixels")(x), keras.layers.GlobalAveragePooling2D(name="gap")(constant)]
    )
    head = keras.layers.Dense(3, name="predictions")
    outputs = head(features)
    head.set_weights([HEAD_KERNEL, HEAD_BIAS])
    return keras.Model(inputs, outputs, name="shifted")


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_a_fully_masked_pixel_is_the_models_normalised_zero():
    model = _shifted_input_model()
    baseline = np.asarray(input_baseline(model), np.float32)
    np.testing.assert_allclose(baseline, [123.68, 116.779, 103.939], atol=1e-4)
    preprocessed = model.get_layer("preprocessing")(np.broadcast_to(baseline, (1, 2, 2, 3)))
    np.testing.assert_allclose(np.asarray(preprocessed), 0.0, atol=1e-4)
    # The constant channel min-max normalises to an all-zero mask: its masked
    # image is fully masked, and its weight, the whole native map, is the
    # class probability of the normalised zero: softmax(W [0, 0, 0, 1] + b).
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    _, native = cams.explain(model, images, "scorecam", class_index=2, target_layer="target", return_native=True)
    expected = _softmax(HEAD_KERNEL[3] + HEAD_BIAS)[2]
    np.testing.assert_allclose(native, expected, rtol=1e-5)
    # Raw x * m (tf-keras-vis) would have shown the network -(ImageNet mean) instead.
    raw_zero = _softmax(np.array([-103.939, -116.779, -123.68, 1.0]) @ HEAD_KERNEL + HEAD_BIAS)[2]
    assert abs(raw_zero - expected) > 0.1


def test_a_model_without_the_preprocessing_layer_masks_towards_raw_zero():
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3, name="c")(inputs)))
    assert input_baseline(keras.Model(inputs, outputs)) == (0.0,)
    assert input_baseline(build_model("unet", 32, 3, unet_filters=4)) == (0.0, 0.0, 0.0)


def test_the_evaluation_runs_the_same_scorecam_on_every_demo_model():
    max_N = EvalConfig().max_N
    # The demo U-Nets' target layer has 16 channels (16 filters); ResNet50's
    # conv5_block3_out 2048 and VGG16's block5_conv3 512 at any input size.
    channels = {name: cams.METHODS["scorecam"](build_model(name, 32, 5, unet_filters=16)).channels
                for name in ("unet", "unet_ablated")}
    channels.update(resnet50=2048, vgg16=512)
    assert max_N is not None and max_N <= min(channels.values())  # every model runs max_N channels
    assert cams.METHODS["scorecam"].display_name(max_N) == f"Faster-ScoreCAM({max_N})"
    assert cams.METHODS["scorecam"].display_name(None) == "ScoreCAM"
