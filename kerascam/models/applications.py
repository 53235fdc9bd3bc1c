"""keras.applications ResNet50 and VGG16 as kerascam classifiers.

The architectures are keras.applications' own, built on top of kerascam's
preprocessing layer through ``input_tensor``, so the result is one flat graph
(VGG16 is rebuilt here with the same layer names, with "same" pooling so that
no row of an odd-sized feature map is cut off; with ImageNet weights, at
224x224, it is keras.applications' own, whose geometry is the same there):
the CAM target layers (``conv5_block3_out``, ``block5_conv3``) stay reachable
from the top-level model, which tf-keras-vis needs (a nested sub-model hides
them). The parameter counts equal keras.applications' (25,636,712 and
138,357,544 at 224x224 and 1000 classes): the preprocessing layer has none.
"""

import os

import keras

from kerascam.models.preprocessing import ImagePreprocessing

_ARCHITECTURES = {
    "resnet50": (keras.applications.ResNet50, "conv5_block3_out"),
    "vgg16": (keras.applications.VGG16, "block5_conv3"),
}
MIN_IMAGE_SIZE = 32  # both networks pool by 32 before their top


def check_image_size(name, image_size):
    """Raises ValueError for an unknown ``name`` or an input smaller than 32."""
    if name not in _ARCHITECTURES:
        raise ValueError(f"name must be one of {sorted(_ARCHITECTURES)}. Received: name={name!r}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be at least {MIN_IMAGE_SIZE} for {name}. Received: image_size={image_size}"
        )


def build_vgg16(image_size=224, num_classes=1000, *, batch_norm=False, pool_padding="same"):
    """VGG16 (Simonyan and Zisserman, ICLR 2015) with keras.applications' layer names.

    Args:
        image_size: Side of the square RGB input. Default 224.
        num_classes: Number of output logits. Default 1000.
        batch_norm: Batch normalization after every convolution (like
            torchvision's vgg16_bn): each 3x3 ``blockB_convC`` (no bias) is
            followed by ``blockB_bnC`` and ``blockB_reluC``, and the CAM target
            is ``block5_relu3``. Trained from scratch it learns the shapes
            dataset in a few epochs, where the plain VGG16 stays at chance for
            the whole demo budget. Default False: keras.applications' layers,
            each convolution with its bias and ReLU.
        pool_padding: Padding of the five 2x2 max-pooling layers. ``"same"``
            (the default) keeps every cell of an odd-sized map: at 48x48,
            block5 is 3x3 and pools to 2x2, where ``"valid"`` (keras.applications')
            pools it to 1x1 from its top-left 2x2 window only, so block5's
            bottom row and right column never reach the logits. At sizes that
            are multiples of 32 the two agree (same shapes, same parameters).

    Returns:
        A functional ``keras.Model`` named ``"vgg16"`` from raw RGB pixels
        (0-255, caffe-preprocessed inside) to logits.
    """
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = ImagePreprocessing("caffe", name="preprocessing")(inputs)
    for block, (convs, filters) in enumerate(zip((2, 2, 3, 3, 3), (64, 128, 256, 512, 512)), start=1):
        for i in range(1, convs + 1):
            name = f"block{block}_conv{i}"
            if batch_norm:
                x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
                x = keras.layers.BatchNormalization(name=f"block{block}_bn{i}")(x)
                x = keras.layers.Activation("relu", name=f"block{block}_relu{i}")(x)
            else:
                x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=name)(x)
        x = keras.layers.MaxPooling2D(2, strides=2, padding=pool_padding, name=f"block{block}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(4096, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(4096, activation="relu", name="fc2")(x)
    outputs = keras.layers.Dense(num_classes, name="predictions")(x)
    return keras.Model(inputs, outputs, name="vgg16")


def build_vgg16_bn(image_size=224, num_classes=1000, pool_padding="same"):
    """VGG16 with batch normalization: ``build_vgg16(..., batch_norm=True)``."""
    return build_vgg16(image_size, num_classes, batch_norm=True, pool_padding=pool_padding)


def build_application(name, image_size=224, num_classes=1000, weights=None):
    """Builds ResNet50 or VGG16 with its full classification top, emitting logits.

    Args:
        name: ``"resnet50"`` (He et al., CVPR 2016) or ``"vgg16"`` (Simonyan
            and Zisserman, ICLR 2015).
        image_size: Side of the square RGB input, at least 32. Default 224.
        num_classes: Number of output logits. Default 1000.
        weights: ``None`` (random initialization, the default), ``"imagenet"``
            (keras.applications downloads them: needs 1000 classes and the
            network) or the path of a weights file (``.weights.h5``) saved from
            a model of the same architecture, size and class count.

    Returns:
        A functional ``keras.Model`` from raw RGB pixels (0-255) to logits.
    """
    check_image_size(name, image_size)
    if weights == "imagenet" and num_classes != 1000:
        raise ValueError(
            f"weights='imagenet' needs num_classes=1000 (the ImageNet top). Received: num_classes={num_classes}"
        )
    if weights not in (None, "imagenet") and not os.path.isfile(weights):
        raise ValueError(
            f"weights must be None, 'imagenet' or the path of a weights file. Received: weights={weights!r}"
        )
    if name == "vgg16" and weights != "imagenet":
        # Our own VGG16, for its "same" pools (see build_vgg16); ImageNet
        # weights need 224x224, where keras.applications' geometry is the same.
        model = build_vgg16(image_size, num_classes)
        if weights is None:
            he_initialize(model)
        else:
            model.load_weights(weights)
        return model
    constructor, _ = _ARCHITECTURES[name]
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = ImagePreprocessing("caffe", name="preprocessing")(inputs)
    model = constructor(
        include_top=True,
        weights=weights,
        input_tensor=x,
        input_shape=(image_size, image_size, 3),
        classes=num_classes,
        classifier_activation=None,
        name=name,
    )
    return model


def he_initialize(model, seed=None):
    """Re-draws VGG16's kernels so that it trains from scratch.

    keras.applications' VGG16 uses Glorot initialization, which halves the
    signal's variance at each of its 15 ReLU layers: trained from scratch, its
    logits start out equal for every image and its loss sits at log(classes)
    for epochs (seen here on the shapes dataset). He initialization ("Delving
    Deep into Rectifiers", ICCV 2015) keeps the variance through the ReLUs.
    Two adjustments for the caffe-style inputs, which span about +-128 instead
    of +-1: the first convolution's He weights are divided by the standard
    deviation of such inputs (128 / sqrt(3), a uniform spread over +-128), so
    activations start near unit scale; and the classifier layer starts at
    zero, so every class starts equally likely. Biases stay zero; the
    architecture and parameter count are unchanged. Pretrained weights are
    never touched.
    """
    initializer = keras.initializers.HeNormal(seed=seed)
    input_std = 128.0 / 3**0.5
    for layer in model.layers:
        if layer.name == "predictions":
            layer.kernel.assign(keras.ops.zeros(layer.kernel.shape, dtype=layer.kernel.dtype))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel = initializer(layer.kernel.shape, dtype=layer.kernel.dtype)
            if layer.name == "block1_conv1":
                kernel = kernel / input_std
            layer.kernel.assign(kernel)


def target_layer(name):
    """The CAM target layer of the application ``name``."""
    return _ARCHITECTURES[name][1]
