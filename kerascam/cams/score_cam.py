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
"""

import contextlib
import os
import warnings

import numpy as np
from tf_keras_vis.scorecam import Scorecam

from kerascam.cams.base import BaseCAM, _num_classes


@contextlib.contextmanager
def _silent_predict():
    """Hides the progress bar of `model.predict`, which tf-keras-vis calls with
    Keras' default verbosity; restores Keras' logging mode afterwards."""
    import keras

    was_interactive = keras.utils.is_interactive_logging_enabled()
    keras.utils.disable_interactive_logging()
    try:
        yield
    finally:
        if was_interactive:
            keras.utils.enable_interactive_logging()


class ScoreCAM(BaseCAM):
    name = "scorecam"
    visualizer_class = Scorecam
    supports_max_N = True

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

    def _compute_native(self, images, class_indices, *, max_N, batch_size):
        # One image per tf-keras-vis call: with several images its Faster-ScoreCAM
        # keeps the union of every image's top max_N channels for all of them, so
        # a map would depend on its batch neighbours. It also bounds memory: the
        # masked inputs of one call take channels x images x H x W x 3 floats.
        from tf_keras_vis.utils.scores import CategoricalScore

        maps = []
        with _silent_predict():
            for image, class_index in zip(images, class_indices):
                cam = self._visualizer(
                    CategoricalScore([int(class_index)]),
                    image[np.newaxis],
                    max_N=max_N,
                    batch_size=batch_size,
                    **self._visualizer_options(),
                )
                maps.append(np.asarray(cam))
        return np.concatenate(maps)
