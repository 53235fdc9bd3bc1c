"""What kerascam's compiled engines share on every Keras backend.

An engine explains one model at one or several target layers: its
extractor, a functional model from the model's input to [activations of each
target layer..., logits], is built once; the backend's engine
(`tf_engine.py` for TensorFlow, `jax_engine.py` for JAX) compiles the
computation of a batch, and `CAMEngine.explain` here feeds it the images in
chunks and gathers NumPy arrays. The maths of each method is not here: a
gradient method's weights come from its hook (`GradientCAM.weights`), and
ScoreCAM's masks and weights from its class (`score_cam.py`), both written in
`keras.ops` so that both backends run the same arithmetic.
"""

import keras
import numpy as np

from kerascam.cams.fusion import unscaled_index
from kerascam.models.layers import SEPARATOR as LAYER_PATH_SEPARATOR
from kerascam.models.layers import build_extractor

PREDICTED_CLASS = -1  # a class index that asks the engine for the predicted class


def weighted_map(activations, weights):
    """A gradient method's raw map at one layer: ReLU(sum_k W_k * A_k), (n, h, w)."""
    return keras.ops.relu(keras.ops.sum(activations * weights, axis=-1))


class CAMEngine:
    """Compiled explanation of one model at one or several target layers.

    Subclasses (one per method kind and backend) implement `_explain_batch`
    and `tracing_count`. Build engines with `kerascam.cams.engine.get_engine`,
    which caches them.

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
        self.name = f"{model.name}_{'_'.join(self.target_layers)}_cam".replace(LAYER_PATH_SEPARATOR, "_")
        # The extractor takes the single input tensor, not a one-element list, so
        # that calling it with a tensor matches its structure. A layer of a nested
        # sub-model ("outer/inner") is reached by re-running the graph on the
        # model's own layers (`kerascam.models.layers.build_extractor`).
        self.extractor = build_extractor(model, self.target_layers, name=self.name)
        self.input_dtype = model.inputs[0].dtype
        self.input_shape = tuple(model.inputs[0].shape[1:])
        # Read in the extractor's graph: a nested layer's own output may have a
        # free spatial size where the outer model's input fixes it.
        self.target_shapes = [tuple(tensor.shape[1:]) for tensor in self.extractor.outputs[:-1]]

    @property
    def tracing_count(self):
        """How many times the engine's computations have been traced (for tests)."""
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
