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

The method's maths is here, in `keras.ops`, as static functions of
`ScoreCAM` that the compiled perturbation engines of both Keras backends run
(`ScoreCAMEngine` in `tf_engine.py` and `jax_engine.py`: chunks of masked
images, peak memory bounded by the chunk size), with the binding to
`tf_keras_vis.scorecam.Scorecam`, the reference. The engines follow
tf-keras-vis 0.8.7's conventions so that both give the same raw maps:
tf-keras-vis upsamples each channel with `scipy.ndimage.zoom(order=1)`, i.e.
bilinear interpolation on a grid whose corner pixels coincide with the corner
cells (align_corners); the engines do the same (TensorFlow's
`ResizeBilinear` with `align_corners=True`, and its arithmetic in
`kerascam.cams.resize` on JAX). Each upsampled channel is min-max normalised with Keras'
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

from kerascam.cams.base import BaseCAM, _num_classes
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
    def make_engine(cls, model, target_layer, engines):
        return engines.ScoreCAMEngine(model, target_layer, cls.name, cls)

    @staticmethod
    def mask_baseline(model):
        """The raw pixel that `model`'s preprocessing maps to zero, where masked pixels go (float32 (3,))."""
        return np.asarray(input_baseline(model), np.float32)

    @staticmethod
    def masks(upsampled):
        """Each upsampled channel (k, H, W, 1) min-max normalised, with Keras' epsilon in the denominator."""
        low = keras.ops.min(upsampled, axis=(1, 2), keepdims=True)
        high = keras.ops.max(upsampled, axis=(1, 2), keepdims=True)
        return (upsampled - low) / (high - low + keras.config.epsilon())

    @staticmethod
    def masked_images(image, masks, baseline):
        """The image (H, W, 3) blended towards `baseline` by each mask: (k, H, W, 3)."""
        return baseline + (image[None] - baseline) * masks

    @staticmethod
    def channel_weights(logits, class_index):
        """softmax(logits)[class_index] of each masked image: the channels' weights (k,), float32."""
        probabilities = keras.ops.softmax(keras.ops.cast(logits, "float32"), axis=-1)
        return keras.ops.take(probabilities, class_index, axis=-1)

    @staticmethod
    def select_channels(activations, max_N):
        """Faster-ScoreCAM: the `max_N` channels of largest spatial standard
        deviation of one image's (h, w, channels) activations, largest first
        (ties: lower index first); all channels, in order, for None or
        max_N >= channels."""
        if max_N is None or max_N >= activations.shape[-1]:
            return activations
        spread = keras.ops.std(activations[None], axis=(1, 2))[0]
        _, indices = keras.ops.top_k(spread, k=max_N)
        return keras.ops.take(activations, indices, axis=-1)

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
