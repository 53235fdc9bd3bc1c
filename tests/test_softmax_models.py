"""Models that end in a softmax are explained at their logits, by both backends."""

import keras
import numpy as np
import pytest

from kerascam import cams
from kerascam.cams.logits import logits_model, softmax_head

METHODS = list(cams.METHODS)
# Every (method, backend) pair; tf-keras-vis has no hirescam.
METHOD_BACKENDS = [(m, b) for m in METHODS for b in cams.BACKENDS if b == "kerascam" or cams.METHODS[m].reference]
HEADS = ["dense_softmax", "softmax_layer", "softmax_activation"]


def _features():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="target_conv")(x)
    x = keras.layers.Activation("relu", name="target")(x)
    return inputs, keras.layers.GlobalAveragePooling2D(name="gap")(x)


def _twins(head):
    """A logits classifier and the same network (same weights) ending in a softmax."""
    keras.utils.set_random_seed(4)
    inputs, pooled = _features()
    logits = keras.Model(inputs, keras.layers.Dense(4, name="predictions")(pooled), name="logits")
    if head == "dense_softmax":
        inputs, pooled = _features()
        dense = keras.layers.Dense(4, activation="softmax", name="predictions")
        softmax = keras.Model(inputs, dense(pooled), name="softmax")
        softmax.set_weights(logits.get_weights())
    else:
        layer = keras.layers.Softmax() if head == "softmax_layer" else keras.layers.Activation("softmax")
        softmax = keras.Model(logits.inputs, layer(logits.outputs[0]), name="softmax")
    return logits, softmax


def _images(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 255, (n, 16, 16, 3)) * rng.uniform(0, 1, (n, 1, 1, 3))).astype(np.float32)


@pytest.mark.parametrize("head", HEADS)
def test_softmax_heads_are_found_and_the_logits_model_gives_the_logits(head):
    logits, softmax = _twins(head)
    assert softmax_head(logits) is None and logits_model(logits) is logits
    assert softmax_head(softmax) is not None
    images = _images()
    expected = np.asarray(logits(images))
    np.testing.assert_allclose(np.asarray(logits_model(softmax)(images)), expected, rtol=1e-5, atol=1e-5)
    # The model is left as it was: it still outputs probabilities.
    np.testing.assert_allclose(np.asarray(softmax(images)).sum(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("method, backend", METHOD_BACKENDS)
@pytest.mark.parametrize("head", HEADS)
def test_a_softmax_model_gets_the_maps_of_its_logits(head, method, backend):
    logits, softmax = _twins(head)
    images = _images()
    options = dict(target_layer="target", backend=backend, return_native=True)
    maps, native = cams.explain(softmax, images, method, **options)
    expected_maps, expected_native = cams.explain(logits, images, method, **options)
    assert np.all(cams.map_status(expected_native) == "ok")
    np.testing.assert_allclose(native, expected_native, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(maps, expected_maps, atol=1e-4)


def test_explaining_the_probabilities_would_give_other_maps():
    """What the tests above guard against: tf-keras-vis on the softmax output.

    The gradient methods then differentiate a probability: other maps, even
    after normalisation. (ScoreCAM's softmax of probabilities squeezes its
    weights towards 1 / classes; on this random net that changes the raw maps'
    scale more than their shape, which the tests above compare too.)
    """
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.utils.scores import CategoricalScore

    logits, softmax = _twins("dense_softmax")
    images = _images()
    classes = np.argmax(np.asarray(logits(images)), axis=-1)
    options = dict(penultimate_layer="target", seek_penultimate_conv_layer=False, expand_cam=False, normalize_cam=False)
    for visualizer, method in ((Gradcam, "gradcam"), (GradcamPlusPlus, "gradcam++")):
        naive = np.asarray(visualizer(softmax)(CategoricalScore(classes.tolist()), images, **options))
        _, ours = cams.explain(softmax, images, method, classes, target_layer="target", return_native=True)
        naive, ours = cams.normalize_maps(naive), cams.normalize_maps(ours)
        assert np.max(np.abs(naive - ours)) > 0.05, method


def test_the_logits_follow_the_models_weights():
    logits, softmax = _twins("dense_softmax")
    images = _images()
    before = cams.explain(softmax, images, "gradcam", target_layer="target")
    dense = softmax.get_layer("predictions")
    kernel, bias = dense.get_weights()
    changed = np.random.default_rng(1).normal(0, 1, kernel.shape).astype(np.float32)
    dense.set_weights([changed, bias])
    logits.get_layer("predictions").set_weights([changed, bias])
    after = cams.explain(softmax, images, "gradcam", target_layer="target")
    np.testing.assert_allclose(after, cams.explain(logits, images, "gradcam", target_layer="target"), atol=1e-5)
    assert np.max(np.abs(after - before)) > 0.05


def test_keras_applications_resnet50_with_its_default_softmax():
    keras.utils.set_random_seed(0)
    options = dict(weights=None, input_shape=(64, 64, 3), classes=5)
    softmax = keras.applications.ResNet50(**options)  # classifier_activation="softmax"
    logits = keras.applications.ResNet50(classifier_activation=None, **options)
    logits.set_weights(softmax.get_weights())
    images = _images(2).repeat(4, axis=1).repeat(4, axis=2)
    maps, native = cams.explain(softmax, images, "gradcam++", return_native=True)  # target: conv5_block3_out
    expected_maps, expected_native = cams.explain(logits, images, "gradcam++", return_native=True)
    assert native.shape == (2, 2, 2) and np.all(cams.map_status(expected_native) == "ok")
    np.testing.assert_allclose(native, expected_native, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(maps, expected_maps, atol=1e-4)


def test_a_softmax_model_can_still_be_freed():
    import gc
    import weakref

    _, softmax = _twins("dense_softmax")
    for backend in cams.BACKENDS:
        cams.explain(softmax, _images(1), "gradcam", target_layer="target", backend=backend)
    reference = weakref.ref(softmax)
    del softmax
    gc.collect()
    assert reference() is None
