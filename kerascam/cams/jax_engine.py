"""kerascam's engines on Keras' JAX backend: CAMs in `jax.jit`-compiled functions, without TensorFlow.

Chosen by `kerascam.cams.engine.get_engine` when ``KERAS_BACKEND=jax``; the
twin of `tf_engine.py`, giving the same maps to float32 rounding
(`tests/test_jax_cams.py`). Nothing here or in what it imports needs
TensorFlow, so CAMs run on machines that have JAX only (GPU machines whose
CUDA stack TensorFlow cannot use).

* The model's variables are arguments of the compiled functions, not
  constants baked into them (``stateless_call``): an engine follows the
  weights when they change (training, randomization), as the TensorFlow
  engine does by reading its variables.
* A gradient method (`GradientEngine`) is one compiled function: one forward
  and one backward pass. ``jax.grad`` differentiates a function's inputs,
  not tensors inside it, so the forward pass runs the extractor built with
  ``perturbed=True`` (`kerascam.models.layers.build_extractor`): each target
  layer's activations A get a zero input P added, and the gradient of the
  class logits with respect to P is their gradient with respect to A,
  exactly (adding zero changes no value). XLA drops the backward ops below
  the shallowest target, which no gradient asked for needs. The method's
  weights (its `keras.ops` hook), the weighted sum, the resize to the input
  (`kerascam.cams.resize`, TensorFlow's arithmetic) and the fusion of
  several layers run in the same function.
* ScoreCAM (`ScoreCAMEngine`) compiles its forward pass, its chunk of masked
  images and its weighted sum; the maths is the method's (`score_cam.py`).

`jax.jit` traces once per input shape, where the TensorFlow engine leaves
the sizes free: a gradient method once per batch size (the last, shorter
batch of a call is a second one) and image size; ScoreCAM's chunks once per
chunk size, min(batch_size, channels), as the last chunk of an image is
padded to it.
"""

import jax
import keras
import numpy as np

from kerascam.cams.engine_core import PREDICTED_CLASS, CAMEngine, weighted_map
from kerascam.cams.fusion import fuse_maps
from kerascam.cams.resize import resize_bilinear
from kerascam.models.layers import build_extractor


def _choose_classes(classes, logits):
    """The requested classes, with `PREDICTED_CLASS` replaced by the arg-max of `logits`.

    int32: JAX computes in 32 bits unless told otherwise (``jax_enable_x64``);
    `CAMEngine.explain` returns the classes as int64.
    """
    predicted = keras.ops.cast(keras.ops.argmax(logits, axis=-1), "int32")
    return keras.ops.where(classes == PREDICTED_CLASS, predicted, classes)


class _JAXEngine(CAMEngine):
    """A `CAMEngine` whose computations are `jax.jit`-compiled, with the variables as arguments."""

    def __init__(self, model, target_layer, method):
        super().__init__(model, target_layer, method)
        self._traces = 0

    @property
    def tracing_count(self):
        return self._traces

    @staticmethod
    def _variables(model):
        """The current values of `model`'s (trainable, non-trainable) variables, in its order."""
        return (
            [variable.value for variable in model.trainable_variables],
            [variable.value for variable in model.non_trainable_variables],
        )

    def _forward(self, variables, images):
        """The target layers' activations (a list) and the logits of one inference forward pass."""
        trainable, non_trainable = variables
        images = keras.ops.cast(images, self.input_dtype)
        outputs, _ = self.extractor.stateless_call(trainable, non_trainable, images, training=False)
        *activations, logits = outputs
        return activations, logits


class GradientEngine(_JAXEngine):
    """A gradient method (GradCAM, GradCAM++, LayerCAM, HiResCAM) in one compiled function.

    Per batch: one forward pass through the perturbed extractor and one
    backward pass to all target layers, then per layer

        L = ReLU(sum_k W_k * A_k)

    with W the method's weights (`weights(activations, gradients,
    class_scores)`, the method class' `keras.ops` hook). Several layers' maps
    are resized to the input and fused (`fusion.fuse_maps`).
    """

    def __init__(self, model, target_layer, method, weights):
        """Builds the extractors and the compiled function.

        Args:
            model, target_layer, method: as `CAMEngine`.
            weights: the method's hook, `GradientCAM.weights` of its class.
        """
        super().__init__(model, target_layer, method)
        self.weights = weights
        self.perturbed = build_extractor(model, self.target_layers, name=f"{self.name}_perturbed", perturbed=True)
        self._compiled = jax.jit(self._explain)

    def _perturbation_shapes(self, images_shape):
        """Shapes and dtypes of the target layers' activations for images of `images_shape`."""
        spec = keras.KerasTensor(images_shape, self.input_dtype)
        return [(tuple(out.shape), out.dtype) for out in self.extractor.compute_output_spec(spec)[:-1]]

    def _layer_map(self, activations, gradients, class_scores):
        """One layer's raw map (n, h, w), after the ReLU, computed in float32 (as tf-keras-vis)."""
        activations, gradients = keras.ops.cast(activations, "float32"), keras.ops.cast(gradients, "float32")
        return weighted_map(activations, self.weights(activations, gradients, class_scores))

    def _explain(self, variables, images, classes):
        self._traces += 1  # runs only while jax.jit traces
        trainable, non_trainable = variables
        images = keras.ops.cast(images, self.input_dtype)
        zeros = [keras.ops.zeros(shape, dtype) for shape, dtype in self._perturbation_shapes(images.shape)]

        def class_logits(perturbations):
            outputs, _ = self.perturbed.stateless_call(
                trainable, non_trainable, [images, *perturbations], training=False
            )
            *activations, logits = outputs
            chosen = _choose_classes(classes, logits)
            scores = keras.ops.take_along_axis(logits, chosen[:, None], axis=1)[:, 0]
            # The images are independent: the gradient of the sum is each image's.
            return keras.ops.sum(scores), (activations, chosen, scores)

        gradients, (activations, chosen, scores) = jax.grad(class_logits, has_aux=True)(zeros)
        scores = keras.ops.cast(scores, "float32")
        maps = [self._layer_map(a, g, scores) for a, g in zip(activations, gradients)]
        size = images.shape[1:3]
        if not self.fused:
            return maps[0], resize_bilinear(maps[0], size), chosen
        fused = fuse_maps([resize_bilinear(m, size) for m in maps], self.unscaled)
        return fused, fused, chosen

    def _explain_batch(self, images, classes, max_N, batch_size):
        del max_N, batch_size
        return self._compiled(self._variables(self.perturbed), images, classes.astype(np.int32))


class ScoreCAMEngine(_JAXEngine):
    """Score-CAM and Faster-ScoreCAM (`kerascam.cams.score_cam`), compiled and in chunks.

    As `tf_engine.ScoreCAMEngine`: per image one forward pass, the channels
    kept (Faster-ScoreCAM), chunks of at most `batch_size` masked images
    through the model, then the weighted sum. Peak memory depends on the
    chunk size, not on the number of channels.
    """

    def __init__(self, model, target_layer, method, scorecam):
        """Builds the extractor and the three compiled functions.

        Args:
            model, target_layer, method: as `CAMEngine`.
            scorecam: the method's class (`score_cam.ScoreCAM`), whose static
                functions hold the maths.
        """
        super().__init__(model, target_layer, method)
        if self.fused:
            raise ValueError(f"{method} explains one layer at a time. Received: target_layer={target_layer!r}")
        self.scorecam = scorecam
        # The raw pixel the model's preprocessing maps to zero: masked pixels go there.
        self.mask_baseline = scorecam.mask_baseline(model)
        self._compiled_forward = jax.jit(self._forward_activations)
        self._compiled_chunk = jax.jit(self._chunk)
        self._compiled_combine = jax.jit(self._combine, static_argnums=2)  # the size is a shape

    def _forward_activations(self, variables, images, classes):
        self._traces += 1
        (activations,), logits = self._forward(variables, images)
        return keras.ops.cast(activations, "float32"), _choose_classes(classes, logits)

    def _chunk(self, variables, image, channel_maps, class_index):
        """Softmax probability of `class_index` for the image masked by each channel."""
        self._traces += 1
        maps = keras.ops.transpose(channel_maps, (2, 0, 1))[..., None]  # (k, h, w, 1)
        masks = self.scorecam.masks(resize_bilinear(maps, image.shape[:2], align_corners=True))
        _, logits = self._forward(variables, self.scorecam.masked_images(image, masks, self.mask_baseline))
        return self.scorecam.channel_weights(logits, class_index)

    def _combine(self, channel_maps, weights, size):
        self._traces += 1
        native = weighted_map(channel_maps, weights)[None]
        return native[0], resize_bilinear(native, size)[0]

    def _explain_batch(self, images, classes, max_N, batch_size):
        variables = self._variables(self.extractor)
        native, resized, explained = [], [], []
        size = tuple(images.shape[1:3])
        for image, class_index in zip(images, classes):
            activations, chosen = self._compiled_forward(variables, image[None], class_index[None].astype(np.int32))
            channel_maps = self.scorecam.select_channels(activations[0], max_N)
            channels = int(channel_maps.shape[-1])
            chunk = min(batch_size, channels)
            weights = []
            for start in range(0, channels, chunk):
                maps = channel_maps[..., start : start + chunk]
                count = int(maps.shape[-1])
                if count < chunk:
                    # The last, shorter chunk is padded with all-zero maps (whose weights
                    # are dropped), so that one trace serves every chunk of every image.
                    maps = keras.ops.pad(maps, [[0, 0], [0, 0], [0, chunk - count]])
                weights.append(self._compiled_chunk(variables, image, maps, chosen[0])[:count])
            image_native, image_resized = self._compiled_combine(
                channel_maps, keras.ops.concatenate(weights, 0), size
            )
            native.append(image_native)
            resized.append(image_resized)
            explained.append(chosen[0])
        return np.stack(native), np.stack(resized), np.stack(explained)
