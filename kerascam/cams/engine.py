"""kerascam's explanation engine: CAMs computed in compiled TensorFlow graphs.

This file holds the machinery every method shares; each method's own maths
lives in its file (`gradcam.py`, `layercam.py`, ... hold the gradient hook,
`score_cam.py` its perturbation engine), and `kerascam.cams.METHODS` is the
one registry the engines are looked up in.

tf-keras-vis, the reference implementation, builds a new Keras model and runs
an eager `GradientTape` on every call (the tape differentiates the class score
back through the whole network), resizes on the host with scipy, and its
ScoreCAM tiles every masked copy of every image at once (about 1.2 GB per
224x224 image for ResNet50's 2048 channels). The engine computes the same maps
(see `tests/test_engine.py`) as follows:

* One functional model (the extractor) outputs [activations of each target
  layer..., logits]; it is built once per (model, target layers). It shares
  the model's layers and weights; the model itself is never modified.
* A gradient method is one `tf.function` (`GradientEngine`): a single forward
  pass gives the activations and logits, one `tf.gradients` call
  differentiates the class logit back to all target layers at once (one
  backward pass that goes no deeper than the shallowest of them), the
  method's weights (the one hook a method overrides) and the weighted sum
  give each layer's map, and the maps are resized to the input size (and,
  for several layers, fused: `fusion.py`) in the same graph. The input
  signature leaves the batch dimension free, so every batch size reuses one
  trace.
* Engines are cached per model in a `weakref.WeakKeyDictionary`, keyed by the
  model and then by (target layer(s), method): repeated `explain` calls reuse
  the traced graphs and a model that is no longer used can still be freed (an
  engine holds the model's layers, never the model object).

Conventions shared with tf-keras-vis 0.8.7 (read from its `gradcam.py`,
`gradcam_plus_plus.py`, `layercam.py` and `scorecam.py`), so that both
backends give the same raw maps: the gradient methods differentiate the class
logit, cast activations and gradients to float32 before the method's hook,
and apply a ReLU to the weighted sum. Each method's file documents the rest.
"""

import weakref

import numpy as np
import tensorflow as tf

from kerascam.cams.fusion import fuse_maps, unscaled_index
from kerascam.cams.logits import logits_model
from kerascam.models.layers import SEPARATOR as LAYER_PATH_SEPARATOR
from kerascam.models.layers import build_extractor

PREDICTED_CLASS = -1  # a class index that asks the engine for the predicted class
CLASS_SPEC = tf.TensorSpec((None,), tf.int64)


def resize_half_pixel(maps, size):
    """Bilinear resize of (n, h, w) maps to `size` with half-pixel centres, in graph.

    The same interpolation as `kerascam.cams.resize_maps`; returns `maps`
    itself when their static spatial shape already equals `size`.
    """
    static_size = tf.get_static_value(size)
    if static_size is not None and tuple(maps.shape[1:3]) == tuple(static_size):
        return maps
    return tf.image.resize(maps[..., tf.newaxis], size, method="bilinear", antialias=False)[..., 0]


def resize_align_corners(maps, size):
    """Bilinear resize of (n, h, w, 1) maps whose corner pixels stay on the corners.

    This is the grid of `scipy.ndimage.zoom(..., order=1)` (its default
    `grid_mode=False`): output pixel o samples input coordinate
    o * (h - 1) / (H - 1). tf-keras-vis' ScoreCAM upsamples its masks so.
    """
    return tf.raw_ops.ResizeBilinear(images=maps, size=size, align_corners=True, half_pixel_centers=False)


class CAMEngine:
    """Compiled explanation of one model at one or several target layers.

    Subclasses implement `_explain_batch` and `_compiled_functions`. Build
    engines with `get_engine`, which caches them.

    Attributes:
        method: the name of the method in `kerascam.cams.METHODS`.
        target_layers: the names of the target layers, as a tuple.
        fused: whether the layers' maps are fused into one (a list of layers
            was asked for, even of one layer).
    """

    def __init__(self, model, target_layer, method):
        """Builds the extractor.

        Args:
            model: a functional Keras classifier with one input and one output
                (logits).
            target_layer: name of a layer of `model` with a 4-D output, or a
                list or tuple of such names (maps fused).
            method: the method's name.
        """
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(
                "The kerascam engine explains models with one input and one output. "
                f"Received: {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                "use backend='tf-keras-vis' for such models."
            )
        self.method = method
        self.fused = not isinstance(target_layer, str)
        self.target_layers = (target_layer,) if isinstance(target_layer, str) else tuple(target_layer)
        self.unscaled = unscaled_index(model, self.target_layers)  # LayerCAM's deep layer: the coarsest
        # The extractor takes the single input tensor, not a one-element list, so
        # that calling it with a tensor matches its structure. A layer of a nested
        # sub-model ("outer/inner") is reached by re-running the graph on the
        # model's own layers (`kerascam.models.layers.build_extractor`).
        self.extractor = build_extractor(
            model,
            self.target_layers,
            name=f"{model.name}_{'_'.join(self.target_layers)}_cam".replace(LAYER_PATH_SEPARATOR, "_"),
        )
        self.input_dtype = model.inputs[0].dtype
        # The batch dimension is left free so that one trace serves every batch.
        self.images_spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
        # Read in the extractor's graph: a nested layer's own output may have a
        # free spatial size where the outer model's input fixes it.
        self.target_shapes = [tuple(tensor.shape[1:]) for tensor in self.extractor.outputs[:-1]]

    def _forward(self, images):
        """The target layers' activations (a list) and the logits of one
        forward pass (inference mode)."""
        *activations, logits = self.extractor(tf.cast(images, self.input_dtype), training=False)
        return activations, logits

    @staticmethod
    def _choose_classes(classes, logits):
        """The requested classes, with `PREDICTED_CLASS` replaced by the arg-max."""
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int64)
        return tf.where(classes == PREDICTED_CLASS, predicted, classes)

    @property
    def tracing_count(self):
        """How many times the engine's graphs have been traced (for tests)."""
        return sum(f.experimental_get_tracing_count() for f in self._compiled_functions())

    def _compiled_functions(self):
        raise NotImplementedError

    def _explain_batch(self, images, classes, max_N, batch_size):
        """(native, resized, explained classes) of one chunk of at most `batch_size` images."""
        raise NotImplementedError

    def explain(self, images, classes=None, *, max_N=None, batch_size=32):
        """Raw maps and the same maps resized to the input.

        Args:
            images: float32 array (N, H, W, channels) of raw pixels.
            classes: int array (N,) of classes to explain, or None for the
                predicted class of each image (taken from the same forward pass).
            max_N: scorecam only: Faster-ScoreCAM's channel count, None for all.
            batch_size: images per compiled call (gradient methods) or masked
                images per forward pass (scorecam).

        Returns:
            A tuple (native, resized, classes): float32 arrays (N, h, w) and
            (N, H, W), native after the method's ReLU, resized bilinearly with
            half-pixel centres, neither normalised; and the int64 classes
            explained (N,), the predicted ones where `classes` asked for them.
            For fused layers both arrays are the fused map (N, H, W).
        """
        images = np.asarray(images, dtype=np.float32)
        if classes is None:
            classes = np.full(len(images), PREDICTED_CLASS, np.int64)
        classes = np.asarray(classes, dtype=np.int64)
        native, resized, explained = [], [], []
        for start in range(0, len(images), batch_size):
            chunk_native, chunk_resized, chunk_classes = self._explain_batch(
                images[start : start + batch_size], classes[start : start + batch_size], max_N, batch_size
            )
            native.append(np.asarray(chunk_native, dtype=np.float32))
            resized.append(np.asarray(chunk_resized, dtype=np.float32))
            explained.append(np.asarray(chunk_classes, dtype=np.int64))
        return np.concatenate(native), np.concatenate(resized), np.concatenate(explained)

    def __repr__(self):
        return f"{type(self).__name__}(method={self.method!r}, extractor={self.extractor.name!r})"


class GradientEngine(CAMEngine):
    """A gradient method (GradCAM, GradCAM++, LayerCAM, HiResCAM) in one graph.

    Per batch: one forward pass, one `tf.gradients` call for all target
    layers, then per layer

        L = ReLU(sum_k W_k * A_k)

    with W the method's weights (`weights(activations, gradients,
    class_scores)`, the method class' hook): per channel, shape (n, 1, 1, k),
    or per element, shape (n, h, w, k). Several layers' maps are resized to
    the input and fused (`fusion.fuse_maps`).
    """

    def __init__(self, model, target_layer, method, weights):
        """Builds the extractor and the compiled graph.

        Args:
            model, target_layer, method: as `CAMEngine`.
            weights: the method's hook, a function of (activations, gradients,
                class_scores) as float32 tensors, (n, h, w, k), (n, h, w, k)
                and (n,), returning weights that broadcast against the
                activations.
        """
        super().__init__(model, target_layer, method)
        self.weights = weights
        self._compiled = tf.function(self._graph, input_signature=[self.images_spec, CLASS_SPEC])

    def _compiled_functions(self):
        return [self._compiled]

    def layer_map(self, activations, gradients, class_scores):
        """One layer's raw map (n, h, w), after the ReLU."""
        weights = self.weights(activations, gradients, class_scores)
        return tf.nn.relu(tf.reduce_sum(activations * weights, axis=-1))

    def _graph(self, images, classes):
        outputs = self.explain_tensors(images, classes)
        return outputs["native"], outputs["resized"], outputs["classes"]

    def explain_tensors(self, images, classes=None):
        """One batch's explanation as tensors, for a graph of the caller's.

        The graph `explain` runs, with the logits of its forward pass
        returned too, for a `tf.function` that embeds the explanation (the
        SavedModel's explain signatures, `kerascam.export`): one forward pass
        and one backward pass that stops at the (shallowest) target layer.
        `tf.gradients` works on graphs only: call this while a `tf.function`
        is being traced, not eagerly.

        Args:
            images: float tensor (n, H, W, channels) of raw pixels.
            classes: int64 tensor (n,) of the classes to explain,
                `PREDICTED_CLASS` where the predicted class is wanted; None
                for the predicted class of every image.

        Returns:
            A dict of tensors: "logits", the model's logits (n, classes) as
            the model computes them; "native", float32 (n, h, w), the maps
            after the method's ReLU (the fused map (n, H, W) for fused
            layers); "resized", float32 (n, H, W), the same resized
            bilinearly with half-pixel centres, not normalised; "classes",
            int64 (n,), the classes explained.
        """
        activations, logits = self._forward(images)
        if classes is None:
            classes = tf.fill(tf.shape(logits)[:1], tf.constant(PREDICTED_CLASS, tf.int64))
        classes = self._choose_classes(classes, logits)
        class_scores = tf.gather(logits, classes, batch_dims=1)
        # One tf.gradients call for every layer: a single backward pass from the
        # class logits down to the shallowest target, whose ops the deeper
        # targets' gradients share. tf.gradients works on the traced graph, so it
        # emits no op below that layer. The images are independent, so the
        # gradient of the sum is each image's.
        gradients = tf.gradients(
            tf.reduce_sum(class_scores), activations, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        class_scores = tf.cast(class_scores, tf.float32)
        maps = [
            self.layer_map(tf.cast(a, tf.float32), tf.cast(g, tf.float32), class_scores)
            for a, g in zip(activations, gradients)
        ]
        size = tf.shape(images)[1:3]
        if not self.fused:
            return dict(logits=logits, native=maps[0], resized=resize_half_pixel(maps[0], size), classes=classes)
        fused = fuse_maps([resize_half_pixel(m, size) for m in maps], self.unscaled)
        return dict(logits=logits, native=fused, resized=fused, classes=classes)

    def _explain_batch(self, images, classes, max_N, batch_size):
        del max_N, batch_size
        return self._compiled(images, classes)


_ENGINES = weakref.WeakKeyDictionary()  # model -> {(target layer(s), method): engine}


def get_engine(model, target_layer, method):
    """The cached engine of `model` at `target_layer` for `method`.

    Args:
        model: a functional Keras classifier (one input, one output: logits,
            or probabilities from a softmax head, explained at its logits;
            see `kerascam.cams.logits`).
        target_layer: the name of a 4-D layer of `model`, or a list or tuple
            of names (their maps fused).
        method: a name in `kerascam.cams.METHODS`; the method class builds
            the engine (`make_engine`).

    Returns:
        A `CAMEngine`, built on the first request and reused while `model`
        lives.
    """
    from kerascam.cams import METHODS  # the package imports this module

    if method not in METHODS:
        raise ValueError(f"The kerascam engine has no method {method!r}. Valid: {list(METHODS)}")
    key = (target_layer if isinstance(target_layer, str) else tuple(target_layer), method)
    engines = _ENGINES.setdefault(model, {})
    if key not in engines:
        engines[key] = METHODS[method].make_engine(logits_model(model), target_layer)
    return engines[key]
