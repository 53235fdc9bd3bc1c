"""The pipeline shared by every CAM method: classes, raw maps, resize, normalise.

A method is a subclass of `BaseCAM` in a file of its own. A gradient method
subclasses `GradientCAM` and overrides one hook, `weights`: the weights of the
target layer's activations, per channel (GradCAM, GradCAM++) or per element
(LayerCAM, HiResCAM), from which the compiled engine makes the map. A method
of another kind (ScoreCAM) builds its own engine (`make_engine`). Where
tf-keras-vis has the method, `reference` names its class, which the
"tf-keras-vis" backend calls through the hook `_compute_native`. Everything
else (choosing the class, chunking, the bilinear resize, the fusion of
several layers, the min-max normalisation and the bookkeeping of maps that
cannot be normalised) lives here once.

Conventions, for every method:

* Models output logits. The gradient methods differentiate the class logit
  y^c (pre-softmax, as in the Grad-CAM paper); ScoreCAM is fed those logits
  and applies its own softmax (see `score_cam.py`). A model that ends in a
  softmax (keras.applications' default) is explained at its logits, read
  from its own layers and weights (`logits.py`), by both backends.
* Raw ("native") maps are tf-keras-vis' maps at the target layer, after its
  ReLU, neither resized nor normalised (`expand_cam=False`,
  `normalize_cam=False`). They keep the target layer's spatial shape (h, w).
  Two backends compute them (`BACKENDS`): "kerascam", the default, is the
  compiled engine of `engine.py`, which reproduces tf-keras-vis' maps to
  float32 rounding at a fraction of the cost; "tf-keras-vis" calls the
  reference implementation itself (for the methods it has).
* Maps at input resolution are the native maps resized to (H, W) by bilinear
  interpolation with half-pixel centres (`tf.image.resize`, the convention of
  OpenCV's INTER_LINEAR), then min-max normalised per map to [0, 1]. The paper
  resizes bilinearly; half-pixel centres put native cell i at the centre of
  the input block it summarises. tf-keras-vis' own expansion
  (`scipy.ndimage.zoom(order=1)`) aligns the corner pixels instead and shifts
  a coarse map towards the image border, so it is not used.
* A map that cannot be min-max normalised (all values equal, e.g. all zero,
  or some value non-finite) comes out as all zeros; `map_status` of the native
  maps tells the caller which ones were undefined.
* Several target layers (a list) are fused as in the LayerCAM paper
  (`fusion.py`): each layer's map is resized to the input and the fused map
  at input resolution is what `native` holds.
"""

import contextlib
import importlib
import warnings
from typing import NamedTuple

import keras
import numpy as np

from kerascam.cams.engine import get_engine
from kerascam.cams.fusion import deepest_index, fuse_maps, unscaled_index
from kerascam.cams.logits import logits_model
from kerascam.cams.resize import resize_bilinear
from kerascam.metrics import min_max_normalize
from kerascam.models.layers import get_layer_by_path, is_nested_path, resolve_layer_path

DEFAULT_BATCH_SIZE = 32
BACKENDS = ("kerascam", "tf-keras-vis")


def resize_maps(maps, size):
    """Bilinear resize of a batch of maps with half-pixel centres.

    Args:
        maps: array (N, h, w).
        size: the output (H, W).

    Returns:
        float32 array (N, H, W). Equal to `cv2.resize(map, (W, H),
        interpolation=cv2.INTER_LINEAR)` map by map; an identity when (h, w)
        already equals (H, W).
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.shape[1:] == tuple(size):
        return maps.copy()
    # TensorFlow's tf.image.resize arithmetic, on any backend (`kerascam.cams.resize`).
    return np.asarray(keras.ops.convert_to_numpy(resize_bilinear(maps, size)), dtype=np.float32)


def normalize_maps(maps):
    """Per-map min-max normalisation to [0, 1], as tf-keras-vis' `normalize`.

    `kerascam.metrics.min_max_normalize` in float32: no epsilon is added to the
    denominator, so the maximum of every defined map is exactly 1; a map for
    which min-max is undefined (see `map_status`) becomes all zeros instead of
    silently so.

    Args:
        maps: array (N, h, w).

    Returns:
        float32 array of the same shape.
    """
    return min_max_normalize(maps, dtype=np.float32)[0]


@contextlib.contextmanager
def _quiet_model_calls():
    """Hides Keras' warning that a model got its single input as a tensor where
    it was built with a list (keras.applications models), or the reverse
    (tf-keras-vis always passes a list). The values are the same either way."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The structure of `inputs`")
        yield


def _check_images(images):
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(
            "images must be a non-empty batch of shape (N, H, W, channels). "
            f"Received: images.shape={images.shape}"
        )
    return images


def _check_batch_size(batch_size):
    if batch_size is None:
        return DEFAULT_BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")
    return int(batch_size)


def _check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}. Received: backend={backend!r}")
    return backend


def _num_classes(model):
    return int(model.outputs[0].shape[-1])


def predicted_classes(model, images, batch_size=None):
    """The arg-max class of the model's output per image.

    Args:
        model: a Keras classifier.
        images: array (N, H, W, 3) of raw pixels.
        batch_size: images per forward pass. Defaults to 32.

    Returns:
        int64 array (N,).
    """
    images = _check_images(images)
    batch_size = _check_batch_size(batch_size)
    with _quiet_model_calls():
        chunks = [
            np.argmax(np.asarray(model(images[i : i + batch_size], training=False)), axis=-1)
            for i in range(0, len(images), batch_size)
        ]
    return np.concatenate(chunks).astype(np.int64)


def resolve_class_index(model, images, class_index=None, batch_size=None):
    """The class to explain for each image.

    Args:
        model: a Keras classifier.
        images: array (N, H, W, 3).
        class_index: None for the model's predicted class per image, an int
            for the same class in every image, or an int array of length N
            (e.g. the true labels).
        batch_size: images per forward pass when predicting. Defaults to 32.

    Returns:
        int64 array (N,).

    Raises:
        ValueError: when an index is not an integer, out of range, or the
            array does not have one index per image.
    """
    images = _check_images(images)
    if class_index is None:
        return predicted_classes(model, images, batch_size)
    indices = np.asarray(class_index)
    if indices.dtype == bool or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(
            f"class_index must be None, an int or an int array. Received dtype {indices.dtype}"
        )
    if indices.ndim == 0:
        indices = np.full(len(images), int(indices))
    if indices.shape != (len(images),):
        raise ValueError(
            "class_index must hold one class per image. "
            f"Received: class_index.shape={indices.shape} for {len(images)} images"
        )
    num_classes = _num_classes(model)
    if np.any((indices < 0) | (indices >= num_classes)):
        raise ValueError(
            f"class_index must lie in [0, {num_classes}) for this model. "
            f"Received: {sorted(set(indices[(indices < 0) | (indices >= num_classes)].tolist()))}"
        )
    return indices.astype(np.int64)


class CAMResult(NamedTuple):
    """What `BaseCAM.compute` returns for a batch of N images of size (H, W).

    Attributes:
        maps: float32 (N, H, W) in [0, 1], as `explain` returns them.
        native: float32 (N, h, w), the raw maps at the target layer.
        classes: int64 (N,), the class each map explains (the predicted one
            unless a class was given), read from the same forward pass.
    """

    maps: np.ndarray
    native: np.ndarray
    classes: np.ndarray


class BaseCAM:
    """A CAM method bound to one model and one target layer (or several, fused).

    Build it once and call it on as many batches as needed: the kerascam
    engine comes from its per-model cache (`engine.get_engine`), so its graphs
    are traced once; the tf-keras-vis object (and tf-keras-vis itself) is only
    made when backend="tf-keras-vis" is first asked for. tf-keras-vis only
    clones a model when it is given a `model_modifier`; none is given (the
    models output logits, so `ReplaceToLinear` is not needed), so the caller's
    model is used as is and never modified.

    Subclasses set `name` and implement `make_engine`; they set `reference`
    to tf-keras-vis' class where it has the method (None: kerascam only), and
    may override `_compute_native` (the tf-keras-vis call).

    Attributes:
        name: the method's name in `kerascam.cams.METHODS`.
        reference: (module, class) of the tf-keras-vis implementation, or
            None where tf-keras-vis has no such method.
        supports_max_N: whether `max_N` (Faster-ScoreCAM) applies.
        supports_fusion: whether a list of target layers can be fused.
        fused_in_experiment: whether the evaluation also scores the method
            fused over `kerascam.models.fusion_layer_names(model)`.
        target_layer: the target layer used: its name, or its path
            ("outer/inner") inside a nested sub-model; a list of them when
            fused. The default layer, or a layer named without its path,
            appears here as found, so a caller can say which layer it was.
        target_layers: the same names or paths, always a tuple.
        fused: whether the maps of `target_layers` are fused (a list was
            given, even of one layer).
        channels: the channel count of the target layer (of the deepest
            layer when fused).
    """

    name = None
    reference = None
    supports_max_N = False
    supports_fusion = False
    fused_in_experiment = False

    def __init__(self, model, target_layer=None):
        """Binds the method to a model.

        Args:
            model: a Sequential or functional Keras classifier with one input
                whose output is logits (or a softmax of them, explained at the
                logits). It may nest other models anywhere in its graph, e.g.
                a keras.applications base after its ``preprocess_input`` or a
                ``Rescaling`` layer, in a functional model or a Sequential.
            target_layer: the layer whose activations the CAM is computed on:
                a layer of `model` by name (``"conv5_block3_out"``), or a
                layer of a nested sub-model by path, the nested models' names
                and the layer's joined by "/" (``"resnet50/conv5_block3_out"``,
                any depth: ``"a/b/c"``); a name that is not a layer of `model`
                but of exactly one nested model stands for its path. None for
                `kerascam.models.target_layer_name(model)`. A list of names or
                paths (gradient methods only) computes the method at each
                layer in one forward and one backward pass and fuses the maps
                (`kerascam.cams.fusion`), e.g.
                `kerascam.models.fusion_layer_names(model)`. Layers of nested
                models need backend="kerascam".

        Raises:
            ValueError: in one line, for a layer that is not in the model (or
                a name found in several nested models), not 4-D or listed
                twice, an empty list, or a list given to a method that cannot
                fuse.
        """
        if target_layer is None:
            from kerascam.models import target_layer_name

            target_layer = target_layer_name(model)
        fused = isinstance(target_layer, (list, tuple))
        layers = tuple(target_layer) if fused else (target_layer,)
        if fused and not self.supports_fusion:
            raise ValueError(
                f"{self.name} explains one layer at a time: pass target_layer as one layer name. "
                f"Received: target_layer={list(layers)}"
            )
        if fused and not layers:
            raise ValueError("target_layer=[] names no layer: list at least one layer to fuse.")
        layers = tuple(self._check_layer(model, name) for name in layers)
        repeated = sorted({name for name in layers if layers.count(name) > 1})
        if repeated:
            raise ValueError(
                f"target_layer lists {', '.join(map(repr, repeated))} more than once. "
                f"Received: target_layer={list(layers)}"
            )
        self.model = model
        self.fused = fused
        self.target_layers = layers
        self.target_layer = list(layers) if fused else layers[0]
        self._deepest = deepest_index(model, layers)
        self.channels = int(get_layer_by_path(model, layers[self._deepest]).output.shape[-1])
        self._visualizer = None  # tf-keras-vis' object, made on first use

    @staticmethod
    def _check_layer(model, name):
        """The path of the 4-D layer `name` names (`kerascam.models.layers.resolve_layer_path`)."""
        path = resolve_layer_path(model, name)
        shape = get_layer_by_path(model, path).output.shape
        if len(shape) != 4:
            raise ValueError(
                f"target_layer must output a 4-D feature map (N, h, w, channels). "
                f"Received: {path!r} with output shape {tuple(shape)}"
            )
        return path

    @classmethod
    def make_engine(cls, model, target_layer, engines):
        """The kerascam engine of this method (an `engine_core.CAMEngine`).

        Called by `engine.get_engine`, which caches the result per model.

        Args:
            model: the model to explain, with logits as output.
            target_layer: a layer name, or a list or tuple of names (fused).
            engines: the module of engines of the Keras backend in use
                (`kerascam.cams.tf_engine` or `kerascam.cams.jax_engine`).
        """
        raise NotImplementedError

    def _reference_visualizer(self):
        """tf-keras-vis' object for this model, imported and built on first use."""
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                f"backend='tf-keras-vis' runs on Keras' TensorFlow backend only (tf-keras-vis is TensorFlow "
                f"code), and Keras runs on {keras.backend.backend()!r} here; use backend='kerascam', or "
                "KERAS_BACKEND=tensorflow."
            )
        if self.reference is None:
            raise ValueError(
                f"{self.name} exists only in kerascam: tf-keras-vis has no such method, "
                "so backend='tf-keras-vis' cannot compute it; use backend='kerascam'."
            )
        nested = [layer for layer in self.target_layers if is_nested_path(layer)]
        if nested:
            raise ValueError(
                f"tf-keras-vis cannot reach layers inside nested sub-models (it takes their activations "
                f"from the nested model's own graph, which the input does not reach). Received: "
                f"target_layer={self.target_layer!r} with {nested} nested; use backend='kerascam'."
            )
        if self._visualizer is None:
            module, class_name = self.reference
            visualizer_class = getattr(importlib.import_module(module), class_name)
            # A softmax head is explained at its logits, by both backends.
            self._visualizer = visualizer_class(logits_model(self.model))
        return self._visualizer

    def _visualizer_options(self, layer):
        """Keyword arguments given to every tf-keras-vis call at `layer`."""
        return dict(
            penultimate_layer=layer,
            # tf-keras-vis would otherwise move from a non-Conv layer (ResNet50's
            # "conv5_block3_out" is an Activation) back to the previous Conv layer,
            # i.e. before batch norm, the residual add and the ReLU.
            seek_penultimate_conv_layer=False,
            expand_cam=False,
            normalize_cam=False,
        )

    def _compute_native(self, images, class_indices, *, layer, max_N, batch_size):
        """tf-keras-vis' raw maps at `layer` for one chunk of images (the hook).

        Args:
            images: float32 array (n, H, W, 3), n <= batch_size.
            class_indices: int array (n,), the class to explain per image.
            layer: the name of the layer.
            max_N: Faster-ScoreCAM's channel count, None unless supported.
            batch_size: the caller's batch size.

        Returns:
            array (n, h, w).
        """
        from tf_keras_vis.utils.scores import CategoricalScore

        score = CategoricalScore([int(c) for c in class_indices])
        return self._reference_visualizer()(score, images, **self._visualizer_options(layer))

    def _check_fits_model(self, images):
        """`images`, if their (H, W, channels) fit the model's input shape."""
        expected = tuple(self.model.inputs[0].shape[1:])
        if len(expected) != 3 or any(e is not None and e != r for e, r in zip(expected, images.shape[1:])):
            shown = tuple("any" if e is None else e for e in expected)
            raise ValueError(
                f"images of shape {images.shape[1:]} (height, width, channels) do not fit model "
                f"{self.model.name!r}, which takes {shown}; resize or crop them first."
            )
        return images

    def _check_max_N(self, max_N):
        if max_N is None:
            return None
        if not self.supports_max_N:
            raise ValueError(
                f"max_N applies to scorecam only; {self.name} uses all channels. "
                f"Received: max_N={max_N!r}"
            )
        if isinstance(max_N, bool) or not isinstance(max_N, (int, np.integer)):
            raise ValueError(f"max_N must be None or an int. Received: max_N={max_N!r}")
        if not 1 <= max_N <= self.channels:
            raise ValueError(
                f"max_N must be in [1, {self.channels}] (channels of {self.target_layer!r}). "
                f"Received: max_N={max_N}"
            )
        return int(max_N)

    def native_maps(self, images, class_index=None, *, max_N=None, batch_size=None, backend="kerascam"):
        """Raw maps at the target layer's resolution.

        Args: as `__call__`.

        Returns:
            float32 array (N, h, w): after the method's ReLU, not resized, not
            normalised; for fused layers the fused map (N, H, W).
        """
        return self._native_and_resized(images, class_index, max_N, batch_size, backend)[0]

    def _native_and_resized(self, images, class_index, max_N, batch_size, backend):
        """Raw maps (N, h, w), the same maps resized to (H, W), not normalised,
        and the classes explained (N,)."""
        images = self._check_fits_model(_check_images(images))
        max_N = self._check_max_N(max_N)
        batch_size = _check_batch_size(batch_size)
        if _check_backend(backend) == "kerascam":
            # None lets the engine take the predicted class from its own forward pass.
            classes = None if class_index is None else resolve_class_index(self.model, images, class_index)
            engine = get_engine(self.model, self.target_layer, self.name)
            return engine.explain(images, classes, max_N=max_N, batch_size=batch_size)
        self._reference_visualizer()  # refuses a method tf-keras-vis does not have, before any work
        classes = resolve_class_index(self.model, images, class_index, batch_size)
        size = images.shape[1:3]
        if self.fused:
            # tf-keras-vis explains one layer per call: one call per layer, then the
            # engine's fusion, eagerly.
            resized = [
                resize_maps(self._reference_native(images, classes, layer, max_N, batch_size), size)
                for layer in self.target_layers
            ]
            fused = np.asarray(fuse_maps(resized, unscaled_index(self.model, self.target_layers)), dtype=np.float32)
            return fused, fused.copy(), classes
        native = self._reference_native(images, classes, self.target_layer, max_N, batch_size)
        return native, resize_maps(native, size), classes

    def _reference_native(self, images, classes, layer, max_N, batch_size):
        """tf-keras-vis' raw maps at `layer` for all images, in chunks."""
        with _quiet_model_calls():
            chunks = [
                np.asarray(
                    self._compute_native(
                        images[i : i + batch_size],
                        classes[i : i + batch_size],
                        layer=layer,
                        max_N=max_N,
                        batch_size=batch_size,
                    ),
                    dtype=np.float32,
                )
                for i in range(0, len(images), batch_size)
            ]
        return np.concatenate(chunks)

    def __call__(
        self,
        images,
        class_index=None,
        *,
        max_N=None,
        batch_size=None,
        return_native=False,
        backend="kerascam",
    ):
        """Explanation maps at input resolution.

        Args:
            images: array (N, H, W, 3) of raw pixels (uint8 or float, 0-255).
            class_index: None for the predicted class per image, an int for
                one class for all images, or an int array of length N.
            max_N: Faster-ScoreCAM: use only the max_N channels of largest
                spatial variance (scorecam only); None for all channels.
            batch_size: images per model call (gradient methods), or masked
                images per forward pass (scorecam). Defaults to 32.
            return_native: also return the raw maps at the target layer.
            backend: "kerascam" (default, the compiled engine) or
                "tf-keras-vis" (the reference, where it has the method); see
                `BACKENDS`.

        Returns:
            float32 maps (N, H, W) in [0, 1]: the native maps resized
            bilinearly to (H, W), then min-max normalised per map; all zeros
            where a map is undefined (see `map_status`). With
            `return_native=True`, a tuple (maps, native_maps), native_maps of
            shape (N, h, w), or for fused layers the fused map (N, H, W)
            before the min-max normalisation.
        """
        result = self.compute(images, class_index, max_N=max_N, batch_size=batch_size, backend=backend)
        if return_native:
            return result.maps, result.native
        return result.maps

    def compute(self, images, class_index=None, *, max_N=None, batch_size=None, backend="kerascam"):
        """Maps, raw maps and the classes they explain, in one pass.

        Args: as `__call__`.

        Returns:
            A `CAMResult` (maps, native, classes). With the kerascam backend
            the predicted classes come from the forward pass that gives the
            activations, so a caller that needs them (evaluate.py records
            every prediction) runs no forward pass of its own.
        """
        native, resized, classes = self._native_and_resized(images, class_index, max_N, batch_size, backend)
        return CAMResult(normalize_maps(resized), native, classes)

    def __repr__(self):
        return f"{type(self).__name__}(model={self.model.name!r}, target_layer={self.target_layer!r})"


class GradientCAM(BaseCAM):
    """The base of the gradient methods: a method is its `weights` hook.

    With A the target layer's activations (n, h, w, k) and g = d y^c / d A the
    gradient of the class logit, the map is ReLU(sum_k W_k A_k), W being
    `weights(A, g, y^c)`: one weight per channel, shape (n, 1, 1, k), or one
    per element, shape (n, h, w, k). The compiled engine
    (`engine.GradientEngine`) computes it at one layer or at several in one
    forward and one backward pass, and fuses several (`fusion.py`).
    """

    supports_fusion = True

    @staticmethod
    def weights(activations, gradients, class_scores):
        """The weights of the activations (the method's hook).

        Written in `keras.ops`, so that the engines of both Keras backends
        (TensorFlow and JAX) run the same arithmetic.

        Args:
            activations: A, float32 (n, h, w, k).
            gradients: d y^c / d A, float32, same shape.
            class_scores: y^c, the class logits, float32 (n,).

        Returns:
            float32 tensor (n, 1, 1, k) or (n, h, w, k).
        """
        raise NotImplementedError

    @classmethod
    def make_engine(cls, model, target_layer, engines):
        return engines.GradientEngine(model, target_layer, cls.name, cls.weights)
