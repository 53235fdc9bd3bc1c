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

    def normalised_zero(self):
        """The raw RGB pixel (0-255) that this layer maps to zero, as 3 floats.

        ``"unit"``: black (0, 0, 0). ``"caffe"``: the ImageNet mean in RGB
        order, (123.68, 116.779, 103.939). ScoreCAM masks towards it
        (`input_baseline`), so a masked pixel is what the network sees as zero.
        """
        if self.mode == "unit":
            return (0.0, 0.0, 0.0)
        return tuple(float(m) for m in reversed(_CAFFE_BGR_MEAN))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def input_baseline(model):
    """The raw RGB pixel that ``model``'s own preprocessing maps to zero.

    The `ImagePreprocessing` layer fed by the model's input decides it
    (`ImagePreprocessing.normalised_zero`); a model without one (its inputs
    already normalised, or preprocessed some other way) gets raw zero, the
    value ScoreCAM's masks multiply towards in tf-keras-vis.

    Returns:
        A tuple of 3 floats (RGB), or ``(0.0,)`` (any channel count) when the
        model has no `ImagePreprocessing` layer.
    """
    inputs = {id(tensor) for tensor in getattr(model, "inputs", None) or ()}
    for layer in model.layers:
        if isinstance(layer, ImagePreprocessing) and any(id(node_input) in inputs for node_input in _inputs_of(layer)):
            return layer.normalised_zero()
    return (0.0,)


def _inputs_of(layer):
    try:
        return keras.tree.flatten(layer.input)
    except (AttributeError, ValueError):  # a layer called more than once, or never
        return ()
