"""kerascam's explanation engine: CAMs computed in compiled TensorFlow graphs.

tf-keras-vis, the reference implementation, builds a new Keras model and runs
an eager `GradientTape` on every call (the tape differentiates the class score
back through the whole network), resizes on the host with scipy, and its
ScoreCAM tiles every masked copy of every image at once (about 1.2 GB per
224x224 image for ResNet50's 2048 channels). The engine computes the same maps
(see `tests/test_engine.py`) as follows:

* One functional model with two outputs, [target activations, logits], is
  built once per (model, target layer). It shares the model's layers and
  weights; the model itself is never modified.
* GradCAM and GradCAM++ are one `tf.function` each: a single forward pass
  gives activations and logits, `tf.gradients` differentiates the class logit
  back to the target layer only, the method's channel weights (the one hook a
  method overrides) and the weighted sum follow, and the map is resized to the
  input size in the same graph. The input signature leaves the batch dimension
  free, so every batch size reuses one trace.
* ScoreCAM runs one image at a time. Its channels go through the model in
  chunks of `batch_size` masked images, each chunk upsampled, normalised and
  applied in one compiled step, so peak memory depends on the chunk size and
  not on the number of channels.
* Engines are cached per model in a `weakref.WeakKeyDictionary`, keyed by the
  model and then by (target layer, method): repeated `explain` calls reuse the
  traced graphs and a model that is no longer used can still be freed (an
  engine holds the model's layers, never the model object).

Conventions shared with tf-keras-vis 0.8.7 (read from its `gradcam.py`,
`gradcam_plus_plus.py` and `scorecam.py`), so that both backends give the same
raw maps:

* GradCAM and GradCAM++ differentiate the class logit; GradCAM++ multiplies
  the gradients by exp(logit) before taking their powers (its "first, second
  and third derivatives"), exactly as tf-keras-vis does.
* ScoreCAM upsamples each channel with `scipy.ndimage.zoom(order=1)`, i.e.
  bilinear interpolation on a grid whose corner pixels coincide with the
  corner cells (align_corners); the engine uses TensorFlow's `ResizeBilinear`
  with `align_corners=True`, the same interpolation. Each upsampled channel is
  min-max normalised with Keras' epsilon (1e-7) in the denominator; the
  channel weight is softmax(logits)[class] of the masked image; Faster-ScoreCAM
  keeps the `max_N` channels of largest spatial standard deviation, in
  decreasing order of it. The map's own resize to the input size is kerascam's
  (bilinear, half-pixel centres, see `base.py`), for both backends.
"""

import weakref

import keras
import numpy as np
import tensorflow as tf

from kerascam.cams.logits import logits_model

PREDICTED_CLASS = -1  # a class index that asks the engine for the predicted class
_CLASS_SPEC = tf.TensorSpec((None,), tf.int64)


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
    """Compiled explanation of one model at one target layer by one method.

    Subclasses set `method` (the name in `kerascam.cams.METHODS`) and implement
    `_explain_batch`. Build engines with `get_engine`, which caches them.
    """

    method = None

    def __init__(self, model, target_layer):
        """Builds the two-output model.

        Args:
            model: a functional Keras classifier with one input and one output
                (logits).
            target_layer: name of a layer of `model` with a 4-D output.
        """
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(
                "The kerascam engine explains models with one input and one output. "
                f"Received: {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                "use backend='tf-keras-vis' for such models."
            )
        self.target_layer = target_layer
        # The extractor takes the single input tensor, not a one-element list, so
        # that calling it with a tensor matches its structure.
        self.extractor = keras.Model(
            model.inputs[0],
            [model.get_layer(target_layer).output, model.outputs[0]],
            name=f"{model.name}_{target_layer}_cam",
        )
        self.input_dtype = model.inputs[0].dtype
        # The batch dimension is left free so that one trace serves every batch.
        self.images_spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
        self.target_shape = tuple(model.get_layer(target_layer).output.shape[1:])

    def _forward(self, images):
        """Target activations and logits of one forward pass (inference mode)."""
        return self.extractor(tf.cast(images, self.input_dtype), training=False)

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
        """Raw maps at the target layer and the same maps resized to the input.

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
        return f"{type(self).__name__}(extractor={self.extractor.name!r})"


class GradCAMEngine(CAMEngine):
    """Grad-CAM (Selvaraju et al., ICCV 2017): w_k = mean_ij d y^c / d A^k_ij.

    Subclasses override `channel_weights` only.
    """

    method = "gradcam"

    def __init__(self, model, target_layer):
        super().__init__(model, target_layer)
        self._compiled = tf.function(self._graph, input_signature=[self.images_spec, _CLASS_SPEC])

    def _compiled_functions(self):
        return [self._compiled]

    @staticmethod
    def channel_weights(activations, gradients, class_scores):
        """Per-image, per-channel weights (n, 1, 1, channels) (the method's hook).

        Args:
            activations: A, (n, h, w, channels).
            gradients: d y^c / d A, same shape.
            class_scores: y^c, the class logits (n,).
        """
        del activations, class_scores
        return tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)

    def _graph(self, images, classes):
        activations, logits = self._forward(images)
        classes = self._choose_classes(classes, logits)
        class_scores = tf.gather(logits, classes, batch_dims=1)
        # tf.gradients works on the traced graph and only emits the backward ops
        # between the class logits and the target layer (the network's head).
        # The images are independent, so the gradient of the sum is each image's.
        (gradients,) = tf.gradients(
            tf.reduce_sum(class_scores), activations, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        activations = tf.cast(activations, tf.float32)
        gradients = tf.cast(gradients, tf.float32)
        class_scores = tf.cast(class_scores, tf.float32)
        weights = self.channel_weights(activations, gradients, class_scores)
        native = tf.nn.relu(tf.reduce_sum(activations * weights, axis=-1))
        return native, resize_half_pixel(native, tf.shape(images)[1:3]), classes

    def _explain_batch(self, images, classes, max_N, batch_size):
        del max_N, batch_size
        return self._compiled(images, classes)


class GradCAMPlusPlusEngine(GradCAMEngine):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018), as tf-keras-vis computes it.

    With Y^c = exp(y^c) and g = d y^c / d A, the paper's eq. 19 uses the
    derivatives of Y^c: D1 = Y^c g, D2 = D1 g, D3 = D2 g. Then

        alpha = D2 / (2 D2 + sum_ab A_ab D3)      (0 where D2 == 0)
        alpha /= sum_ij alpha                     (per channel, if non-zero)
        w_k = sum_ij alpha_ij ReLU(D1_ij)

    The order of operations is tf-keras-vis', so the two agree to rounding; a
    logit above about 88 overflows exp in float32 and gives a non-finite map
    with both backends.
    """

    method = "gradcam++"

    @staticmethod
    def channel_weights(activations, gradients, class_scores):
        exp_scores = tf.exp(class_scores)[:, tf.newaxis, tf.newaxis, tf.newaxis]
        first = exp_scores * gradients
        second = first * gradients
        third = second * gradients
        activation_sums = tf.reduce_sum(activations, axis=(1, 2), keepdims=True)
        denominator = second * 2.0 + third * activation_sums
        denominator = denominator + tf.cast(second == 0.0, denominator.dtype)
        alphas = second / denominator
        alpha_sums = tf.reduce_sum(alphas, axis=(1, 2), keepdims=True)
        alphas = alphas / (alpha_sums + tf.cast(alpha_sums == 0.0, alpha_sums.dtype))
        return tf.reduce_sum(tf.nn.relu(first) * alphas, axis=(1, 2), keepdims=True)


class ScoreCAMEngine(CAMEngine):
    """Score-CAM (Wang et al., CVPR-W 2020) and Faster-ScoreCAM, in chunks.

    Per image: one forward pass gives the activations (and the predicted
    class); Faster-ScoreCAM keeps the `max_N` channels of largest spatial
    standard deviation; then chunks of `batch_size` channels are each
    upsampled to the input size (align-corners bilinear, as scipy's zoom),
    min-max normalised, multiplied into the image and passed through the
    model; a channel's weight is softmax(logits)[class] of its masked image.
    The map is ReLU(sum_k w_k A^k).
    """

    method = "scorecam"

    def __init__(self, model, target_layer):
        super().__init__(model, target_layer)
        height, width, _ = self.target_shape
        self._compiled_forward = tf.function(
            self._forward_graph, input_signature=[self.images_spec, _CLASS_SPEC]
        )
        self._compiled_chunk = tf.function(
            self._chunk_graph,
            input_signature=[
                tf.TensorSpec(self.images_spec.shape[1:], tf.float32),
                tf.TensorSpec((height, width, None), tf.float32),
                tf.TensorSpec((), tf.int64),
            ],
        )
        self._compiled_combine = tf.function(
            self._combine_graph,
            input_signature=[
                tf.TensorSpec((height, width, None), tf.float32),
                tf.TensorSpec((None,), tf.float32),
                tf.TensorSpec((2,), tf.int32),
            ],
        )

    def _compiled_functions(self):
        return [self._compiled_forward, self._compiled_chunk, self._compiled_combine]

    def _forward_graph(self, images, classes):
        activations, logits = self._forward(images)
        return tf.cast(activations, tf.float32), self._choose_classes(classes, logits)

    def _chunk_graph(self, image, channel_maps, class_index):
        """Softmax probability of `class_index` for the image masked by each channel."""
        maps = tf.transpose(channel_maps, (2, 0, 1))[..., tf.newaxis]  # (k, h, w, 1)
        upsampled = resize_align_corners(maps, tf.shape(image)[:2])
        low = tf.reduce_min(upsampled, axis=(1, 2), keepdims=True)
        high = tf.reduce_max(upsampled, axis=(1, 2), keepdims=True)
        masks = (upsampled - low) / (high - low + keras.config.epsilon())
        masked = image[tf.newaxis] * masks  # (k, H, W, 3)
        _, logits = self._forward(masked)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        return tf.gather(probabilities, class_index, axis=-1)

    def _combine_graph(self, channel_maps, weights, size):
        native = tf.nn.relu(tf.reduce_sum(channel_maps * weights, axis=-1))[tf.newaxis]
        return native[0], resize_half_pixel(native, size)[0]

    @staticmethod
    def select_channels(activations, max_N):
        """Faster-ScoreCAM: the `max_N` channels of largest spatial standard
        deviation of one image's (h, w, channels) activations, largest first
        (ties: lower index first); all channels, in order, for None or
        max_N >= channels."""
        if max_N is None or max_N >= activations.shape[-1]:
            return activations
        spread = tf.math.reduce_std(activations[tf.newaxis], axis=(1, 2))[0]
        _, indices = tf.math.top_k(spread, k=max_N)
        return tf.gather(activations, indices, axis=-1)

    def _explain_batch(self, images, classes, max_N, batch_size):
        native, resized, explained = [], [], []
        size = tf.constant(images.shape[1:3], tf.int32)
        for image, class_index in zip(images, classes):
            activations, chosen = self._compiled_forward(image[np.newaxis], class_index[np.newaxis])
            channel_maps = self.select_channels(activations[0], max_N)
            weights = [
                self._compiled_chunk(image, channel_maps[..., start : start + batch_size], chosen[0])
                for start in range(0, int(channel_maps.shape[-1]), batch_size)
            ]
            image_native, image_resized = self._compiled_combine(channel_maps, tf.concat(weights, 0), size)
            native.append(image_native)
            resized.append(image_resized)
            explained.append(chosen[0])
        return tf.stack(native), tf.stack(resized), tf.stack(explained)


_ENGINE_CLASSES = {cls.method: cls for cls in (GradCAMEngine, GradCAMPlusPlusEngine, ScoreCAMEngine)}
_ENGINES = weakref.WeakKeyDictionary()  # model -> {(target_layer, method): engine}


def get_engine(model, target_layer, method):
    """The cached engine of `model` at `target_layer` for `method`.

    Args:
        model: a functional Keras classifier (one input, one output: logits,
            or probabilities from a softmax head, explained at its logits;
            see `kerascam.cams.logits`).
        target_layer: the name of a 4-D layer of `model`.
        method: a name of `kerascam.cams.METHODS`.

    Returns:
        A `CAMEngine`, built on the first request and reused while `model`
        lives.
    """
    if method not in _ENGINE_CLASSES:
        raise ValueError(f"The kerascam engine has no method {method!r}. Valid: {sorted(_ENGINE_CLASSES)}")
    engines = _ENGINES.setdefault(model, {})
    key = (target_layer, method)
    if key not in engines:
        engines[key] = _ENGINE_CLASSES[method](logits_model(model), target_layer)
    return engines[key]
