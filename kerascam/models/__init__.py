"""The four classifiers of the paper, by name (each one spec in ``kerascam.specs``).

``build_model("unet", ...)`` is what train.py, the tests and the benchmarks
call; ``target_layer_name(model)`` is the one place that says where each
model's CAM is taken, and ``fusion_layer_names(model)`` where its maps are
taken to be fused (LayerCAM over several layers).
"""

from kerascam.models.layers import default_target_layer
from kerascam.models.preprocessing import ImagePreprocessing
from kerascam.specs import MODEL_NAMES, SPECS, ModelSpec, get_spec, register


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
    spec = get_spec(name)
    spec.check_image_size(image_size)
    return spec.build(image_size, num_classes, weights=weights, unet_filters=unet_filters, batch_norm=batch_norm,
                      vgg_batch_norm=vgg_batch_norm)


def check_image_size(name, image_size):
    """Raises ValueError if model ``name`` cannot take ``image_size`` inputs."""
    get_spec(name).check_image_size(image_size)


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
    spec = SPECS.get(model.name)
    for candidate in spec.target_layers if spec else ():
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
    spec = SPECS.get(model.name)
    layers = spec.fusion_layers(names) if spec and spec.fusion_layers else []
    if not layers or None in layers:
        raise ValueError(
            f"No fusion layers are declared for a model named {model.name!r}; "
            f"pass target_layer=[...] with its layer names, shallow to deep (known models: {', '.join(SPECS)})"
        )
    return layers


__all__ = [
    "MODEL_NAMES",
    "SPECS",
    "ImagePreprocessing",
    "ModelSpec",
    "build_model",
    "check_image_size",
    "fusion_layer_names",
    "get_spec",
    "register",
    "target_layer_name",
]
