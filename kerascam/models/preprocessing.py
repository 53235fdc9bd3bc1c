"""The preprocessing layer every kerascam model starts with.

Models take raw RGB pixels in 0-255, so one image tensor feeds training, the
CAM methods, ScoreCAM's masked copies and the SavedModel. Keeping the
normalisation inside the graph (instead of in the input pipeline) also means a
user can never feed a model data preprocessed the wrong way.
"""

import keras

# Per-channel means of ImageNet in BGR order, the "caffe" convention that the
# keras.applications ResNet50 and VGG16 weights were trained with.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

MODES = ("caffe", "unit")


@keras.saving.register_keras_serializable(package="kerascam")
class ImagePreprocessing(keras.layers.Layer):
    """Maps raw RGB pixels (0-255) to what the network after it expects.

    Args:
        mode: ``"caffe"`` flips RGB to BGR and subtracts the ImageNet channel
            means (keras.applications ResNet50 and VGG16); ``"unit"`` scales to
            [0, 1] (the U-Net classifiers).
    """

    def __init__(self, mode="unit", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}. Received: mode={mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = keras.ops.cast(inputs, self.compute_dtype)
        if self.mode == "unit":
            return x / 255.0
        bgr = keras.ops.flip(x, axis=-1)
        mean = keras.ops.convert_to_tensor(_CAFFE_BGR_MEAN, dtype=self.compute_dtype)
        return bgr - mean

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
