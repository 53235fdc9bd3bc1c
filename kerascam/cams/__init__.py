"""Class activation maps: GradCAM, GradCAM++ and ScoreCAM.

One call for users and for `evaluate.py`::

    maps = kerascam.cams.explain(model, images, "gradcam++")

`METHODS` maps each method's name to its implementation (a `BaseCAM`
subclass); to explain many batches with the same model, build the method once
(`METHODS["scorecam"](model)`) and call it per batch; its `compute` also
returns the classes explained (a `CAMResult`). The conventions (logits,
bilinear resize, normalisation, undefined maps) are described in
`kerascam/cams/base.py`.

`BACKENDS` are the two implementations of every method: "kerascam" (the
default), compiled graphs that are cached per model (`kerascam/cams/engine.py`),
and "tf-keras-vis", the reference they reproduce.
"""

from kerascam.cams.base import (
    BACKENDS,
    BaseCAM,
    CAMResult,
    normalize_maps,
    predicted_classes,
    resize_maps,
    resolve_class_index,
)
from kerascam.cams.gradcam import GradCAM
from kerascam.cams.gradcam_plus_plus import GradCAMPlusPlus
from kerascam.cams.score_cam import ScoreCAM
from kerascam.metrics import map_status

METHODS = {cls.name: cls for cls in (GradCAM, GradCAMPlusPlus, ScoreCAM)}


def available_methods():
    """The names accepted by `explain`, in registry order."""
    return list(METHODS)


def get_method(name):
    """The `BaseCAM` subclass registered under `name` (case-insensitive)."""
    key = name.lower() if isinstance(name, str) else name
    if key not in METHODS:
        raise ValueError(f"Unknown CAM method {name!r}. Valid methods: {available_methods()}")
    return METHODS[key]


def explain(
    model,
    images,
    method,
    class_index=None,
    target_layer=None,
    *,
    max_N=None,
    batch_size=None,
    return_native=False,
    backend="kerascam",
):
    """Explanation maps of a classifier for a batch of images.

    Args:
        model: a flat functional Keras classifier taking raw RGB pixels
            (0-255) and returning logits. A softmax head (a Dense with
            activation="softmax", a Softmax or Activation("softmax") layer)
            is explained at its logits (`kerascam.cams.logits`).
        images: array (N, H, W, 3), uint8 or float.
        method: one of `available_methods()`: "gradcam", "gradcam++" or
            "scorecam".
        class_index: None for the model's predicted class per image, an int
            for the same class in all images, or an int array of length N
            (e.g. the true labels).
        target_layer: the layer the CAM is computed at; None for
            `kerascam.models.target_layer_name(model)`.
        max_N: scorecam only: Faster-ScoreCAM's number of channels (largest
            spatial variance first); None for all channels. Record it with the
            results: it changes the maps.
        batch_size: images per model call (gradient methods) or masked images
            per forward pass (scorecam). Defaults to 32.
        return_native: also return the raw maps at the target layer.
        backend: "kerascam" (default): compiled graphs, cached per model and
            reused across calls; "tf-keras-vis": the reference
            implementation, which gives the same maps up to float32 rounding
            (see `BACKENDS`).

    Returns:
        float32 maps (N, H, W): the raw maps at the target layer (after the
        method's ReLU) resized bilinearly (half-pixel centres) to the input
        size, then min-max normalised per map to [0, 1]. A map that cannot be
        normalised (constant, all zero or non-finite) is all zeros; count them
        with `map_status(native_maps)`. With `return_native=True` a tuple
        (maps, native_maps), native_maps float32 (N, h, w) at the target
        layer's resolution, neither resized nor normalised.

        GradCAM and GradCAM++ differentiate the class logit; ScoreCAM weights
        channels by softmax(logits)[class] of the masked images.

    Raises:
        ValueError: for an unknown method or backend, a bad class_index,
            max_N given to a gradient method or out of range, or a target
            layer that is not a 4-D layer of the model.
    """
    cam = get_method(method)(model, target_layer)
    return cam(
        images,
        class_index,
        max_N=max_N,
        batch_size=batch_size,
        return_native=return_native,
        backend=backend,
    )


__all__ = [
    "BACKENDS",
    "BaseCAM",
    "CAMResult",
    "GradCAM",
    "GradCAMPlusPlus",
    "METHODS",
    "ScoreCAM",
    "available_methods",
    "explain",
    "get_method",
    "map_status",
    "normalize_maps",
    "predicted_classes",
    "resize_maps",
    "resolve_class_index",
]
