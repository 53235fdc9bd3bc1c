"""Class activation maps: GradCAM, GradCAM++, LayerCAM, HiResCAM and ScoreCAM.

One call for users and for `evaluate.py`::

    maps = kerascam.cams.explain(model, images, "gradcam++")
    fused = kerascam.cams.explain(model, images, "layercam", target_layer=fusion_layer_names(model))

`METHODS` is the one registry: it maps each method's name to its
implementation (a `BaseCAM` subclass, one file per method), and the engine,
the command line, the evaluation, the tests and the benchmark all loop over
it. To explain many batches with the same model, build the method once
(`METHODS["scorecam"](model)`) and call it per batch; its `compute` also
returns the classes explained (a `CAMResult`). The conventions (logits,
bilinear resize, normalisation, undefined maps, fusion) are described in
`kerascam/cams/base.py`.

`BACKENDS` are the two implementations: "kerascam" (the default), compiled
computations that are cached per model (`kerascam/cams/engine.py`), on Keras'
TensorFlow backend (`tf.function`) or JAX (`jax.jit`, with TensorFlow not even
installed), and "tf-keras-vis", the reference they reproduce, for the methods
it has (all but hirescam), on TensorFlow only.
"""

from kerascam.cams.base import (
    BACKENDS,
    BaseCAM,
    CAMResult,
    GradientCAM,
    normalize_maps,
    predicted_classes,
    resize_maps,
    resolve_class_index,
)
from kerascam.cams.fusion import fuse_maps
from kerascam.cams.gradcam import GradCAM
from kerascam.cams.gradcam_plus_plus import GradCAMPlusPlus
from kerascam.cams.hirescam import HiResCAM
from kerascam.cams.layercam import LayerCAM
from kerascam.cams.registry import METHODS, available_methods, get_method, register
from kerascam.cams.score_cam import ScoreCAM
from kerascam.metrics import map_status

# The one registry (`registry.METHODS`): name -> method class, in the order tables list them.
register(GradCAM, GradCAMPlusPlus, LayerCAM, HiResCAM, ScoreCAM)


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
        model: a Sequential or functional Keras classifier with one input
            and one output, returning logits. A softmax head (a Dense with
            activation="softmax", a Softmax or Activation("softmax") layer)
            is explained at its logits (`kerascam.cams.logits`). It may nest
            other models anywhere in its graph (a keras.applications base
            after its `preprocess_input` or a Rescaling layer, in a functional
            model or a Sequential): their layers are named by path (see
            `target_layer`).
        images: array (N, H, W, 3), uint8 or float.
        method: one of `available_methods()`: "gradcam", "gradcam++",
            "layercam", "hirescam" or "scorecam".
        class_index: None for the model's predicted class per image, an int
            for the same class in all images, or an int array of length N
            (e.g. the true labels).
        target_layer: the layer the CAM is computed at: a layer of `model`
            by name, or a layer of a nested sub-model by path, the names of
            the nested models and of the layer joined by "/"
            ("resnet50/conv5_block3_out", any depth: "a/b/c"); a name that is
            not a layer of `model` but of exactly one nested model stands for
            its path. None for `kerascam.models.target_layer_name(model)`:
            the declared layer of the paper's four models, else the last
            feature map before the classifier head, searched into nested
            models. A list of layer names or paths (gradient methods only; e.g.
            `kerascam.models.fusion_layer_names(model)`) computes the method
            at every listed layer in one forward and one backward pass and
            fuses the maps as the LayerCAM paper does (Jiang et al., IEEE TIP
            2021): each layer's map is resized to the input and divided by
            its maximum, every layer but the coarsest (the deep one in the
            paper's sense) is rescaled by tanh(2 * map), and the fused map is their element-wise maximum
            (`kerascam.cams.fusion`).
        max_N: scorecam only: Faster-ScoreCAM's number of channels (largest
            spatial variance first); None for all channels. Record it with the
            results: it changes the maps.
        batch_size: images per model call (gradient methods) or masked images
            per forward pass (scorecam). Defaults to 32.
        return_native: also return the raw maps at the target layer.
        backend: "kerascam" (default): compiled graphs, cached per model and
            reused across calls, on Keras' TensorFlow or JAX backend (the
            same maps to float32 rounding); "tf-keras-vis": the reference
            implementation, which gives the same maps up to float32 rounding
            (see `BACKENDS`), on TensorFlow only; it has no hirescam, and
            fuses layers by calling its method once per layer.

    Returns:
        float32 maps (N, H, W): the raw maps at the target layer (after the
        method's ReLU) resized bilinearly (half-pixel centres) to the input
        size, then min-max normalised per map to [0, 1]. A map that cannot be
        normalised (constant, all zero or non-finite) is all zeros; count them
        with `map_status(native_maps)`. With `return_native=True` a tuple
        (maps, native_maps), native_maps float32 (N, h, w) at the target
        layer's resolution, neither resized nor normalised; for a list of
        layers, native_maps is the fused map at input resolution (N, H, W),
        before the final min-max normalisation.

        The gradient methods differentiate the class logit; ScoreCAM weights
        channels by softmax(logits)[class] of the masked images.

    Raises:
        ValueError: for an unknown method or backend, a bad class_index,
            max_N given to a gradient method or out of range, a target
            layer that is not a 4-D layer of the model or is listed twice,
            a list of layers given to scorecam, or backend="tf-keras-vis"
            under Keras' JAX backend, or for a method tf-keras-vis does not
            have (hirescam) or for a layer inside a nested model (tf-keras-vis cannot reach those),
            or for a layer inside a nested model that the graph calls twice
            (a shared base: the error names both calls).
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
    "GradientCAM",
    "HiResCAM",
    "LayerCAM",
    "METHODS",
    "ScoreCAM",
    "available_methods",
    "explain",
    "fuse_maps",
    "get_method",
    "map_status",
    "normalize_maps",
    "predicted_classes",
    "resize_maps",
    "resolve_class_index",
]
