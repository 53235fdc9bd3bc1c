"""The four classifiers of the paper, by name.

``build_model("unet", ...)`` is what train.py, the tests and the benchmarks
call; ``target_layer_name(model)`` is the one place that says where each
model's CAM is taken, and ``fusion_layer_names(model)`` where its maps are
taken to be fused (LayerCAM over several layers).
"""

import re

from kerascam.models import applications, unet
from kerascam.models.layers import default_target_layer
from kerascam.models.preprocessing import ImagePreprocessing

MODEL_NAMES = ("unet", "unet_ablated", "resnet50", "vgg16")

# Candidates in order: the first one the model has is its target.
_TARGET_LAYERS = {
    "unet": (unet.TARGET_LAYER,),
    "unet_ablated": (unet.TARGET_LAYER,),
    "resnet50": (applications.target_layer("resnet50"),),
    # With batch norm, block5_conv3's activation comes after its BN layer.
    "vgg16": ("block5_relu3", applications.target_layer("vgg16")),
}

# Fusion sets, shallow to deep, each level a tuple of candidates (the first one
# the model has is taken). The deepest level is the model's target layer.
_FUSION_LAYERS = {
    # The output of each of ResNet50's four stages (strides 4, 8, 16, 32).
    "resnet50": (("conv2_block3_out",), ("conv3_block4_out",), ("conv4_block6_out",), ("conv5_block3_out",)),
    # The activation of the last convolution of each of the five blocks (strides
    # 1 to 16), before the block's pooling: the last is block5_conv3, the target,
    # whose map the other methods give; the paper's own VGG16 demo takes the
    # pooled outputs instead, which would end at 1/32 of the input, coarser than
    # the target. keras.applications' convolutions apply their ReLU themselves;
    # with batch norm, the ReLU is its own layer after the BN.
    "vgg16": tuple(
        (f"block{block}_relu{convs}", f"block{block}_conv{convs}")
        for block, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
    ),
}
_UNET_DECODER_OUTPUT = re.compile(r"dec(\d+)_relu2")


def build_model(
    name, image_size=224, num_classes=1000, *, weights=None, unet_filters=64, batch_norm=True, vgg_batch_norm=False
):
    """Builds one of ``MODEL_NAMES``.

    Args:
        name: ``"unet"``, ``"unet_ablated"``, ``"resnet50"`` or ``"vgg16"``.
        image_size: Side of the square input. Default 224.
        num_classes: Number of output logits. Default 1000.
        weights: For ResNet50/VGG16: None, ``"imagenet"`` or a weights file.
            For the U-Nets: None or a weights file of the same configuration.
        unet_filters: U-Net filters at the first level (64 in the paper).
        batch_norm: U-Net batch normalization (see ``build_unet``).
        vgg_batch_norm: VGG16 with batch normalization after each conv
            (``applications.build_vgg16_bn``) instead of keras.applications'
            plain VGG16. Default False.

    Returns:
        A functional ``keras.Model`` from raw RGB pixels (0-255) to logits,
        whose ``name`` is ``name``.
    """
    check_image_size(name, image_size)
    if name == "vgg16" and vgg_batch_norm:
        model = applications.build_vgg16_bn(image_size, num_classes)
        if weights == "imagenet":
            raise ValueError("There are no ImageNet weights for VGG16 with batch norm. Received: weights='imagenet'")
        if weights is not None:
            model.load_weights(weights)
        return model
    if name in ("resnet50", "vgg16"):
        return applications.build_application(name, image_size, num_classes, weights=weights)
    if weights == "imagenet":
        raise ValueError(f"There are no ImageNet weights for {name}. Received: weights='imagenet'")
    model = unet.build_unet(
        image_size,
        num_classes,
        base_filters=unet_filters,
        batch_norm=batch_norm,
        skip_connections=(name == "unet"),
    )
    if weights is not None:
        model.load_weights(weights)
    return model


def check_image_size(name, image_size):
    """Raises ValueError if model ``name`` cannot take ``image_size`` inputs."""
    if name not in MODEL_NAMES:
        raise ValueError(f"Unknown model {name!r}. Choose one of: {', '.join(MODEL_NAMES)}")
    if name.startswith("unet"):
        unet.check_image_size(image_size)
    else:
        applications.check_image_size(name, image_size)


def target_layer_name(model):
    """Name (or path) of the layer whose activations a CAM of ``model`` explains.

    The paper's four models, found by name, have declared layers. U-Net twins:
    the last decoder activation (full input resolution). ResNet50: the output
    of its last residual block (1/32 of the input). VGG16: ``block5_conv3``
    (1/16 of the input).

    Any other model (or one of those names without its declared layer) gets
    ``kerascam.models.layers.default_target_layer(model)``: the last layer
    with a 4-D output before the classifier head (its last global pooling
    layer, or the end of the model), not counting pooling and zero-padding
    layers, searched inside nested models too, whose layers come back as
    paths (``"mobilenetv2_1.00_224/out_relu"``). On the paper's four models
    this rule finds their declared layers as well.

    Raises:
        ValueError: in one line, when the model has no such layer.
    """
    names = {layer.name for layer in model.layers}
    for candidate in _TARGET_LAYERS.get(model.name, ()):
        if candidate in names:
            return candidate
    return default_target_layer(model)


def fusion_layer_names(model):
    """The layers whose maps are fused for ``model`` (e.g. fused LayerCAM), shallow to deep.

    U-Net twins: the last activation of every decoder level, ``dec4_relu2``
    (1/8 of the input) to ``dec1_relu2`` (the target layer, full
    resolution). ResNet50: the outputs of its four stages,
    ``conv2_block3_out`` (1/4) to ``conv5_block3_out`` (the target, 1/32).
    VGG16: the activation of the last convolution of each block,
    ``block1_conv2`` (full resolution) to ``block5_conv3`` (the target, 1/16);
    ``block1_relu2`` ... ``block5_relu3`` with batch norm
    (``build_vgg16_bn``). The list always ends with ``target_layer_name(model)``.

    Other models have no declared set: which layers to fuse is a choice
    that changes the map, so it is left to the caller, who passes the
    layers' names or paths (``"outer/inner"`` in a nested model) as
    ``target_layer=[...]``.

    Args:
        model: a model built by ``build_model`` (found by its name).

    Returns:
        A list of layer names, to pass as ``target_layer`` to
        ``kerascam.cams.explain``.

    Raises:
        ValueError: in one line, when no set is declared for the model (any
            model but the paper's four).
    """
    names = {layer.name for layer in model.layers}
    if model.name in ("unet", "unet_ablated"):
        levels = sorted(
            (int(match.group(1)) for match in map(_UNET_DECODER_OUTPUT.fullmatch, names) if match), reverse=True
        )
        layers = [f"dec{level}_relu2" for level in levels]
    else:
        layers = [
            next((candidate for candidate in level if candidate in names), None)
            for level in _FUSION_LAYERS.get(model.name, ())
        ]
    if not layers or None in layers:
        raise ValueError(
            f"No fusion layers are declared for a model named {model.name!r}; "
            f"pass target_layer=[...] with its layer names, shallow to deep (known models: {', '.join(MODEL_NAMES)})"
        )
    return layers


__all__ = [
    "MODEL_NAMES",
    "ImagePreprocessing",
    "build_model",
    "check_image_size",
    "fusion_layer_names",
    "target_layer_name",
]
