"""U-Net (Ronneberger et al., MICCAI 2015) used as an image classifier.

Mascolini et al. (VL/HCC 2022) put global average pooling and a dense layer on
top of the U-Net decoder. The last decoder convolution then has the input's
full resolution, so a CAM taken there is a pixel-level map instead of the 7x7
map of a ResNet50. Its "ablated twin" is the same network with the skip
connections removed: the decoder sees only the up-sampled bottleneck.

Layer names follow the block prefixes ``enc1`` (highest resolution) to
``enc4``, ``bottleneck``, ``dec4`` to ``dec1`` (back at full resolution):
``enc2_conv1``, ``dec1_up``, ``dec1_concat``, ``dec1_relu2``, ``predictions``.
"""

import keras

from kerascam.models.preprocessing import ImagePreprocessing

# The CAM target: the activation after the last 3x3 convolution of the
# decoder, at the input's resolution.
TARGET_LAYER = "dec1_relu2"


def check_image_size(image_size, levels=4):
    """Raises ValueError unless every pooling level halves ``image_size`` exactly."""
    if levels < 1:
        raise ValueError(f"levels must be at least 1. Received: levels={levels}")
    multiple = 2**levels
    if image_size < multiple or image_size % multiple:
        raise ValueError(
            f"image_size must be a positive multiple of {multiple} for a {levels}-level U-Net. "
            f"Received: image_size={image_size}"
        )


def apply_conv_block(x, filters, batch_norm, name):
    """Two 3x3 'same' convolutions, each followed by [batch norm and] ReLU."""
    for i in (1, 2):
        x = keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=not batch_norm,  # the BN offset makes a bias redundant
            kernel_initializer="he_normal",
            name=f"{name}_conv{i}",
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = keras.layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def build_unet(
    image_size=224,
    num_classes=1000,
    base_filters=64,
    levels=4,
    batch_norm=True,
    skip_connections=True,
    name=None,
):
    """Builds the U-Net classifier or, with ``skip_connections=False``, its ablated twin.

    Args:
        image_size: Side of the square RGB input. Must be divisible by
            ``2**levels`` (16 for the paper's 4 levels) so that every
            up-sampled map matches its encoder map. Default 224.
        num_classes: Number of output logits. Default 1000.
        base_filters: Filters at the first level; each level doubles them, so
            the default 64 gives Ronneberger's 64-128-256-512 encoder and a
            1024-filter bottleneck.
        levels: Number of encoder (and decoder) levels. Default 4.
        batch_norm: Batch normalization after every convolution. Default True:
            the original U-Net predates it, but trained from scratch as a
            classifier it converges in a fraction of the steps and tolerates a
            larger learning rate. ``False`` gives Ronneberger's exact layers.
        skip_connections: Concatenate each encoder output into the decoder
            (the U-Net). ``False`` removes them (the paper's ablated U-Net).
        name: Model name. Default ``"unet"`` or ``"unet_ablated"``; it selects
            the CAM target layer (see ``kerascam.models.target_layer_name``).

    Returns:
        A functional ``keras.Model`` mapping raw RGB pixels (0-255) of shape
        ``(image_size, image_size, 3)`` to ``num_classes`` logits.
    """
    check_image_size(image_size, levels)
    if base_filters < 1 or num_classes < 1:
        raise ValueError(
            "base_filters and num_classes must be positive. "
            f"Received: base_filters={base_filters}, num_classes={num_classes}"
        )
    if name is None:
        name = "unet" if skip_connections else "unet_ablated"

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = ImagePreprocessing("unit", name="preprocessing")(inputs)

    skips = []
    for level in range(1, levels + 1):
        x = apply_conv_block(x, base_filters * 2 ** (level - 1), batch_norm, f"enc{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)

    x = apply_conv_block(x, base_filters * 2**levels, batch_norm, "bottleneck")

    for level in range(levels, 0, -1):
        filters = base_filters * 2 ** (level - 1)
        x = keras.layers.Conv2DTranspose(filters, 2, strides=2, name=f"dec{level}_up")(x)
        if skip_connections:
            x = keras.layers.Concatenate(name=f"dec{level}_concat")([skips[level - 1], x])
        x = apply_conv_block(x, filters, batch_norm, f"dec{level}")

    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)
