"""LayerCAM and HiResCAM against their formulas, on a net whose gradients are known by hand.

The agreement of LayerCAM with tf-keras-vis on the four real models is in
tests/test_engine.py (`test_engine_matches_tf_keras_vis`), with the other
methods.
"""

import keras
import numpy as np
import pytest
from helpers_cams import CLASSES, FORMULAS, hand_activations_and_gradients, hand_images, hand_net, relative_error

from kerascam import cams


@pytest.mark.parametrize("method", ["layercam", "hirescam"])
def test_element_wise_methods_match_their_formulas(method):
    model, parameters = hand_net()
    images = hand_images()
    by_hand = hand_activations_and_gradients(parameters, images, CLASSES)
    for layer, (activations, gradients) in by_hand.items():
        expected = FORMULAS[method](activations, gradients)
        assert np.all(expected.max(axis=(1, 2)) > 0)  # not vacuous
        _, native = cams.explain(model, images, method, CLASSES, target_layer=layer, return_native=True)
        assert native.shape == expected.shape
        assert relative_error(native, expected) < 1e-5, layer


def test_hirescam_equals_gradcam_only_where_global_average_pooling_follows():
    # "pooled" feeds a dense layer through a flatten: its gradient varies over
    # space, so keeping each element's own gradient (HiResCAM) differs from
    # GradCAM's mean per channel.
    model, parameters = hand_net()
    images = hand_images()
    activations, gradients = hand_activations_and_gradients(parameters, images, CLASSES)["pooled"]
    options = dict(class_index=CLASSES, target_layer="pooled", return_native=True)
    _, hirescam = cams.explain(model, images, "hirescam", **options)
    _, gradcam = cams.explain(model, images, "gradcam", **options)
    assert np.all(cams.map_status(gradcam) == "ok")
    assert relative_error(gradcam, FORMULAS["gradcam"](activations, gradients)) < 1e-5
    assert relative_error(hirescam, gradcam) > 0.1

    # A layer followed only by global average pooling and the dense head: every
    # gradient channel is constant, w_k / (h w), and the two methods coincide.
    keras.utils.set_random_seed(1)  # before any layer: the weights must not depend on the tests run earlier
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(6, 3, strides=4, padding="same", activation="relu", name="target")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    gap_model = keras.Model(inputs, keras.layers.Dense(3)(x))
    images = np.random.default_rng(5).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    options = dict(class_index=[1, 2], target_layer="target", return_native=True)
    _, hirescam = cams.explain(gap_model, images, "hirescam", **options)
    _, gradcam = cams.explain(gap_model, images, "gradcam", **options)
    assert np.all(cams.map_status(gradcam) == "ok")
    np.testing.assert_allclose(hirescam, gradcam, rtol=1e-5, atol=1e-6 * gradcam.max())
    # Before the strided convolution the same net's two maps differ.
    options["target_layer"] = "conv1"
    _, hirescam = cams.explain(gap_model, images, "hirescam", **options)
    _, gradcam = cams.explain(gap_model, images, "gradcam", **options)
    assert relative_error(hirescam, gradcam) > 0.1


def test_hirescam_is_tf_keras_vis_layercam_without_its_gradient_relu():
    # An independent reference for the method tf-keras-vis does not name.
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.utils.scores import CategoricalScore

    model, _ = hand_net()
    images = hand_images()
    reference = Layercam(model)(
        CategoricalScore(CLASSES.tolist()),
        images,
        penultimate_layer="pooled",
        seek_penultimate_conv_layer=False,
        gradient_modifier=None,
        expand_cam=False,
        normalize_cam=False,
    )
    _, native = cams.explain(model, images, "hirescam", CLASSES, target_layer="pooled", return_native=True)
    assert relative_error(native, np.asarray(reference)) < 1e-5
