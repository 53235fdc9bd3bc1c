"""The models, images and CAM calls that `tests/test_jax_cams.py` runs under both Keras backends.

Imported by the TensorFlow parent and by the JAX child process, so both build
the same architectures; the parent builds them with random weights and saves
them, the child loads those weights.
"""

import keras
import numpy as np

from kerascam.models import build_model, fusion_layer_names

METHODS = ("gradcam", "gradcam++", "layercam", "hirescam", "scorecam")
SIZES = {"unet": 32, "unet_ablated": 32, "resnet50": 64, "vgg16": 64, "nested": 16, "gap_dense": 8}
# Every method on the paper's U-Net (ScoreCAM on all its channels), on the
# ablated U-Net GradCAM++ and ScoreCAM, on ResNet50 and VGG16 one gradient
# method each: the engines' code is the same for every model, and every
# (model, method) is a compilation of its own on both backends (seconds each
# for ResNet50 and VGG16; the test's CPU budget is about 40 s).
METHODS_COMPARED = {
    "unet": METHODS,
    "unet_ablated": ("gradcam++", "scorecam"),
    "resnet50": ("gradcam++",),
    "vgg16": ("layercam",),
}


def _nested_model():
    """A Sequential holding "backbone", which holds "stem": layers two levels deep, a softmax head."""
    stem_input = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(stem_input)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    stem = keras.Model(stem_input, keras.layers.Activation("relu", name="relu1")(x), name="stem")
    backbone_input = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="conv2")(stem(backbone_input))
    backbone = keras.Model(backbone_input, keras.layers.Activation("relu", name="relu2")(x), name="backbone")
    head = [keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dense(3, activation="softmax", name="predictions")]
    return keras.Sequential([keras.Input((16, 16, 3)), backbone, *head], name="nested")


def gap_dense_model():
    """8x8 RGB -> "feat" (1x1 conv, ReLU, 4 channels) -> global average pooling -> 3 logits.

    GradCAM's weights have a closed form here: d y^c / d A_k is the dense
    kernel's entry W[k, c] at every cell, divided by the 64 cells the pooling
    averages, so the map is ReLU(sum_k A_k W[k, c]) / 64.
    """
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 1, activation="relu", name="feat")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="predictions")(x), name="gap_dense")


def build(name):
    """The model `name` of `SIZES`, with Keras' initial (random) weights."""
    if name == "nested":
        return _nested_model()
    if name == "gap_dense":
        return gap_dense_model()
    return build_model(name, SIZES[name], 3, unet_filters=4)


def randomize(model, seed=0):
    """Random weights that make every comparison non-vacuous: a random classifier
    (VGG16's starts at zero) and, in the nested model, batch norm statistics
    away from the identity, so that inference mode matters."""
    rng = np.random.default_rng(seed)
    if model.name == "nested":
        bn = model.get_layer("backbone").get_layer("stem").get_layer("bn1")
        bn.set_weights([rng.uniform(0.5, 2, 4), rng.normal(0, 1, 4), rng.normal(0, 1, 4), rng.uniform(0.5, 2, 4)])
    kernel, bias = model.get_layer("predictions").get_weights()
    model.get_layer("predictions").set_weights([rng.normal(0, 0.5, kernel.shape), rng.normal(0, 0.1, bias.shape)])


def images(name, n=2):
    size = SIZES[name]
    return np.random.default_rng(7).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def calls(name, model):
    """(label, method, keyword arguments of `kerascam.cams.explain`) of every CAM compared on `name`."""
    if name == "gap_dense":
        return [("gradcam", "gradcam", dict(target_layer="feat")), ("hirescam", "hirescam", dict(target_layer="feat"))]
    if name == "nested":
        return [
            ("gradcam deep", "gradcam", dict(target_layer="backbone/stem/relu1")),
            ("gradcam++", "gradcam++", {}),
            ("layercam fused", "layercam", dict(target_layer=["backbone/stem/relu1", "backbone/relu2"])),
            ("scorecam deep", "scorecam", dict(target_layer="backbone/stem/relu1", class_index=[2, 0])),
        ]
    found = [(method, method, {}) for method in METHODS_COMPARED[name]]
    if name == "unet":
        found.append(("layercam fused", "layercam", dict(target_layer=fusion_layer_names(model))))
        # 4 channels in chunks of 3 masked images: JAX pads the last chunk to 3.
        found.append(("scorecam in chunks", "scorecam", dict(batch_size=3)))
    return found
