"""Score-CAM (Wang et al., "Score-CAM: Score-Weighted Visual Explanations for
Convolutional Neural Networks", CVPR-W 2020) and Faster-ScoreCAM.

Each channel A^k of the target layer is upsampled to the input size, min-max
normalised and used as a mask on the image; the channel's weight is the
softmax probability of class c for the masked image, and
L^c = ReLU(sum_k w_k A^k). With `max_N`, only the max_N channels of largest
spatial standard deviation are used (Faster-ScoreCAM, tabayashi0117).

Softmax: tf-keras-vis 0.8.7 applies the softmax itself. In
`tf_keras_vis/scorecam.py` the weights are
`score(K.softmax(tf.constant(p)))` for the raw predictions `p` of the masked
images, i.e. the score function sees softmax(model output). The model must
therefore output logits: fed an already-softmaxed output it would compute a
softmax of probabilities, which squeezes all weights towards 1/classes and
flattens the map (tf-keras-vis issue #103). kerascam models output logits, so
the weights are the paper's post-softmax class probabilities. With a single
output unit the softmax is always 1, hence the check for >= 2 classes.

tf-keras-vis subtracts no baseline score and applies no softmax across
channels (the first arXiv version of the paper).

Masked pixels: the engine blends each pixel towards the model's normalised
zero b, the raw pixel its own preprocessing maps to zero
(`kerascam.models.preprocessing.input_baseline`): masked = b + (x - b) * m,
so after an affine preprocessing P with P(b) = 0 the network sees P(x) * m,
the paper's masked input, on every model. b is black for the U-Nets
("unit": x / 255) and the ImageNet mean for ResNet50 and VGG16 ("caffe"),
where tf-keras-vis' raw x * m would give a masked pixel -(ImageNet mean)
after preprocessing, far outside their data. The tf-keras-vis backend keeps
its own x * m (b = 0): the two backends agree where b is zero.

One channel rule for every model: `display_name` names what ran,
"ScoreCAM" (all channels) or "Faster-ScoreCAM(N)"; the evaluation runs the
same N on every model (`kerascam.evaluation.config.EvalConfig.max_N`).

Both backends are here: `ScoreCAMEngine`, kerascam's compiled perturbation
engine, and the binding to `tf_keras_vis.scorecam.Scorecam`, the reference.
The engine follows tf-keras-vis 0.8.7's conventions so that both give the
same raw maps: tf-keras-vis upsamples each channel with
`scipy.ndimage.zoom(order=1)`, i.e. bilinear interpolation on a grid whose
corner pixels coincide with the corner cells (align_corners); the engine uses
TensorFlow's `ResizeBilinear` with `align_corners=True`, the same
interpolation. Each upsampled channel is min-max normalised with Keras'
epsilon (1e-7) in the denominator; the channel weight is
softmax(logits)[class] of the masked image; Faster-ScoreCAM keeps the `max_N`
channels of largest spatial standard deviation, in decreasing order of it.
The map's own resize to the input size is kerascam's (bilinear, half-pixel
centres, see `base.py`), for both backends. ScoreCAM explains one layer at a
time: a list of target layers is refused.
"""

import contextlib
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from kerascam.cams.base import BaseCAM, _num_classes
from kerascam.cams.engine import CLASS_SPEC, CAMEngine, resize_align_corners, resize_half_pixel
from kerascam.models.preprocessing import input_baseline


def display_name(max_N=None):
    """What a ScoreCAM run is called in tables: "ScoreCAM" or "Faster-ScoreCAM(N)".

    Args:
        max_N: the channel count given (Faster-ScoreCAM, Wang et al.'s
            ScoreCAM on the N channels of largest spatial spread); None for
            all channels.
    """
    return "ScoreCAM" if max_N is None else f"Faster-ScoreCAM({int(max_N)})"


@contextlib.contextmanager
def _silent_predict():
    """Hides the progress bar of `model.predict`, which tf-keras-vis calls with
    Keras' default verbosity; restores Keras' logging mode afterwards."""
    was_interactive = keras.utils.is_interactive_logging_enabled()
    keras.utils.disable_interactive_logging()
    try:
        yield
    finally:
        if was_interactive:
            keras.utils.enable_interactive_logging()


class ScoreCAMEngine(CAMEngine):
    """Score-CAM and Faster-ScoreCAM, compiled and in chunks.

    Per image: one forward pass gives the activations (and the predicted
    class); Faster-ScoreCAM keeps the `max_N` channels of largest spatial
    standard deviation; then chunks of `batch_size` channels are each
    upsampled to the input size (align-corners bilinear, as scipy's zoom),
    min-max normalised, used to blend the image towards the model's
    normalised zero (`input_baseline`) and passed through the model; a channel's weight is softmax(logits)[class] of its masked image.
    The map is ReLU(sum_k w_k A^k). Peak memory depends on the chunk size, not
    on the number of channels (tf-keras-vis holds every masked image at once).
    """

    def __init__(self, model, target_layer, method="scorecam"):
        super().__init__(model, target_layer, method)
        if self.fused:
            raise ValueError(f"{method} explains one layer at a time. Received: target_layer={target_layer!r}")
        height, width, _ = self.target_shapes[0]
        # The raw pixel the model's preprocessing maps to zero: masked pixels go there.
        self.mask_baseline = tf.constant(input_baseline(model), tf.float32)
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
        upsampled = resize_align_corners(maps, tf.shape(image)[:2])
        low = tf.reduce_min(upsampled, axis=(1, 2), keepdims=True)
        high = tf.reduce_max(upsampled, axis=(1, 2), keepdims=True)
        masks = (upsampled - low) / (high - low + keras.config.epsilon())
        baseline = self.mask_baseline
        masked = baseline + (image[tf.newaxis] - baseline) * masks  # (k, H, W, 3)
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


class ScoreCAM(BaseCAM):
    name = "scorecam"
    reference = ("tf_keras_vis.scorecam", "Scorecam")
    supports_max_N = True
    display_name = staticmethod(display_name)

    def __init__(self, model, target_layer=None):
        super().__init__(model, target_layer)
        if _num_classes(model) < 2:
            raise ValueError(
                "scorecam needs a model with at least 2 output classes: its weights "
                "are softmax probabilities, always 1 for a single output."
            )
        if "TF_KERAS_VIS_MAX_STEPS" in os.environ:
            warnings.warn(
                "TF_KERAS_VIS_MAX_STEPS is set: tf-keras-vis caps ScoreCAM's channel "
                f"count at {os.environ['TF_KERAS_VIS_MAX_STEPS']}, whatever max_N says."
            )

    @classmethod
    def make_engine(cls, model, target_layer):
        return ScoreCAMEngine(model, target_layer, cls.name)

    def _compute_native(self, images, class_indices, *, layer, max_N, batch_size):
        # One image per tf-keras-vis call: with several images its Faster-ScoreCAM
        # keeps the union of every image's top max_N channels for all of them, so
        # a map would depend on its batch neighbours. It also bounds memory: the
        # masked inputs of one call take channels x images x H x W x 3 floats.
        from tf_keras_vis.utils.scores import CategoricalScore

        maps = []
        with _silent_predict():
            for image, class_index in zip(images, class_indices):
                cam = self._reference_visualizer()(
                    CategoricalScore([int(class_index)]),
                    image[np.newaxis],
                    max_N=max_N,
                    batch_size=batch_size,
                    **self._visualizer_options(layer),
                )
                maps.append(np.asarray(cam))
        return np.concatenate(maps)
