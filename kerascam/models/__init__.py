"""The four classifiers of the paper, by name.

``build_model("unet", ...)`` is what train.py, the tests and the benchmarks
call; ``target_layer_name(model)`` is the one place that says where each
model's CAM is taken.
"""

from kerascam.models import applications, unet
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
    """Name of the layer whose activations a CAM of ``model`` explains.

    U-Net twins: the last decoder activation (full input resolution). ResNet50:
    the output of its last residual block (1/32 of the input). VGG16:
    ``block5_conv3`` (1/16 of the input).
    """
    names = {layer.name for layer in model.layers}
    for candidate in _TARGET_LAYERS.get(model.name, ()):
        if candidate in names:
            return candidate
    raise ValueError(
        f"No CAM target layer is declared for a model named {model.name!r}; "
        f"pass target_layer=... explicitly (known models: {', '.join(MODEL_NAMES)})"
    )


__all__ = ["MODEL_NAMES", "ImagePreprocessing", "build_model", "check_image_size", "target_layer_name"]
