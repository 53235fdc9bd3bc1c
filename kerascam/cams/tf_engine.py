"""kerascam's engines on Keras' TensorFlow backend: CAMs in compiled `tf.function` graphs.

Chosen by `kerascam.cams.engine.get_engine` when Keras runs on TensorFlow
(`jax_engine.py` is its twin on JAX); the only module of the CAM path that
imports TensorFlow.

tf-keras-vis, the reference implementation, builds a new Keras model and runs
an eager `GradientTape` on every call (the tape differentiates the class score
back through the whole network), resizes on the host with scipy, and its
ScoreCAM tiles every masked copy of every image at once (about 1.2 GB per
224x224 image for ResNet50's 2048 channels). The engines compute the same
maps (see `tests/test_engine.py`) as follows:

* A gradient method is one `tf.function` (`GradientEngine`): a single forward
  pass of the extractor (`engine_core.CAMEngine`) gives the activations and
  logits, one `tf.gradients` call differentiates the class logit back to all
  target layers at once (one backward pass that goes no deeper than the
  shallowest of them), the method's weights (the one hook a method
  overrides) and the weighted sum give each layer's map, and the maps are
  resized to the input size (and, for several layers, fused: `fusion.py`)
  in the same graph. The input signature leaves the batch dimension free,
  so every batch size reuses one trace.
* ScoreCAM (`ScoreCAMEngine`) compiles its forward pass, its chunk of masked
  images and its weighted sum, each with free sizes.

Conventions shared with tf-keras-vis 0.8.7 (read from its `gradcam.py`,
`gradcam_plus_plus.py`, `layercam.py` and `scorecam.py`), so that both
backends give the same raw maps: the gradient methods differentiate the class
logit, cast activations and gradients to float32 before the method's hook,
and apply a ReLU to the weighted sum. Each method's file documents the rest.
"""

import tensorflow as tf

from kerascam.cams.engine_core import PREDICTED_CLASS, CAMEngine, weighted_map
from kerascam.cams.fusion import fuse_maps

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


class _TFEngine(CAMEngine):
    """A `CAMEngine` whose computations are `tf.function`s with free batch (and image) sizes."""

    def __init__(self, model, target_layer, method):
        super().__init__(model, target_layer, method)
        # The batch dimension is left free so that one trace serves every batch.
        self.images_spec = tf.TensorSpec((None, *self.input_shape), tf.float32)

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
        return sum(f.experimental_get_tracing_count() for f in self._compiled_functions())

    def _compiled_functions(self):
        raise NotImplementedError


class GradientEngine(_TFEngine):
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
            weights: the method's hook, `GradientCAM.weights` of its class.
        """
        super().__init__(model, target_layer, method)
        self.weights = weights
        self._compiled = tf.function(self._graph, input_signature=[self.images_spec, CLASS_SPEC])

    def _compiled_functions(self):
        return [self._compiled]

    def layer_map(self, activations, gradients, class_scores):
        """One layer's raw map (n, h, w), after the ReLU."""
        return weighted_map(activations, self.weights(activations, gradients, class_scores))

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


class ScoreCAMEngine(_TFEngine):
    """Score-CAM and Faster-ScoreCAM (`kerascam.cams.score_cam`), compiled and in chunks.

    Per image: one forward pass gives the activations (and the predicted
    class); Faster-ScoreCAM keeps the `max_N` channels of largest spatial
    standard deviation; then chunks of `batch_size` channels are each
    upsampled to the input size (align-corners bilinear, as scipy's zoom),
    turned into masked images and passed through the model; a channel's
    weight is softmax(logits)[class] of its masked image. The map is
    ReLU(sum_k w_k A^k). Peak memory depends on the chunk size, not on the
    number of channels (tf-keras-vis holds every masked image at once).
    """

    def __init__(self, model, target_layer, method, scorecam):
        """Builds the extractor and the three compiled graphs.

        Args:
            model, target_layer, method: as `CAMEngine`.
            scorecam: the method's class (`score_cam.ScoreCAM`), whose static
                functions hold the maths (channel selection, masked images,
                channel weights).
        """
        super().__init__(model, target_layer, method)
        if self.fused:
            raise ValueError(f"{method} explains one layer at a time. Received: target_layer={target_layer!r}")
        self.scorecam = scorecam
        height, width, _ = self.target_shapes[0]
        # The raw pixel the model's preprocessing maps to zero: masked pixels go there.
        self.mask_baseline = tf.constant(scorecam.mask_baseline(model), tf.float32)
        self._compiled_forward = tf.function(self._forward_graph, input_signature=[self.images_spec, CLASS_SPEC])
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
        (activations,), logits = self._forward(images)
        return tf.cast(activations, tf.float32), self._choose_classes(classes, logits)

    def _chunk_graph(self, image, channel_maps, class_index):
        """Softmax probability of `class_index` for the image masked by each channel."""
        maps = tf.transpose(channel_maps, (2, 0, 1))[..., tf.newaxis]  # (k, h, w, 1)
        masks = self.scorecam.masks(resize_align_corners(maps, tf.shape(image)[:2]))
        _, logits = self._forward(self.scorecam.masked_images(image, masks, self.mask_baseline))
        return self.scorecam.channel_weights(logits, class_index)

    def _combine_graph(self, channel_maps, weights, size):
        native = weighted_map(channel_maps, weights)[tf.newaxis]
        return native[0], resize_half_pixel(native, size)[0]

    def _explain_batch(self, images, classes, max_N, batch_size):
        native, resized, explained = [], [], []
        size = tf.constant(images.shape[1:3], tf.int32)
        for image, class_index in zip(images, classes):
            activations, chosen = self._compiled_forward(image[None], class_index[None])
            channel_maps = self.scorecam.select_channels(activations[0], max_N)
            weights = [
                self._compiled_chunk(image, channel_maps[..., start : start + batch_size], chosen[0])
                for start in range(0, int(channel_maps.shape[-1]), batch_size)
            ]
            image_native, image_resized = self._compiled_combine(channel_maps, tf.concat(weights, 0), size)
            native.append(image_native)
            resized.append(image_resized)
            explained.append(chosen[0])
        return tf.stack(native), tf.stack(resized), tf.stack(explained)
