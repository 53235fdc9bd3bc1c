"""A tiny network whose activations and gradients are known by hand, for the CAM tests."""

import keras
import numpy as np

CLASSES = np.array([0, 2])


def hand_net():
    """8x8 RGB -> "feat" (1x1 conv + ReLU, 2 channels) -> "pooled" (2x2 mean) -> flatten -> 3 logits.

    Returns the model and its weights (K, b, W), from which activations and
    gradients follow by hand: A_feat = ReLU(x K + b), A_pooled = the 2x2 block
    means of A_feat, and since logit c is sum W[:, c] * flatten(A_pooled) + bias,
    d y^c / d A_pooled = W[:, c] reshaped to (4, 4, 2) and d y^c / d A_feat is
    that gradient spread evenly over each 2x2 block (a quarter each).
    """
    inputs = keras.Input((8, 8, 3))
    feat = keras.layers.Conv2D(2, 1, activation="relu", name="feat")
    x = feat(inputs)
    x = keras.layers.AveragePooling2D(2, name="pooled")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    dense = keras.layers.Dense(3, name="predictions")
    model = keras.Model(inputs, dense(x), name="hand_net")
    # A seed whose GradCAM maps of CLASSES are not all zero, so that every
    # comparison below has something to compare.
    rng = np.random.default_rng(6)
    kernel = rng.normal(0, 1 / 255, (3, 2)).astype(np.float32)
    bias = np.array([0.5, 0.5], np.float32)
    weights = rng.normal(0, 1, (4 * 4 * 2, 3)).astype(np.float32)
    feat.set_weights([kernel[np.newaxis, np.newaxis], bias])
    dense.set_weights([weights, np.zeros(3, np.float32)])
    return model, (kernel, bias, weights)


def hand_images():
    return np.random.default_rng(4).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)


def hand_activations_and_gradients(parameters, images, classes):
    """{layer: (A, dy^c/dA)} of `hand_net`, computed without autodiff, in float64."""
    kernel, bias, weights = (p.astype(np.float64) for p in parameters)
    feat = np.maximum(images.astype(np.float64) @ kernel + bias, 0.0)  # (n, 8, 8, 2)
    pooled = feat.reshape(-1, 4, 2, 4, 2, 2).mean(axis=(2, 4))  # (n, 4, 4, 2)
    pooled_gradients = weights[:, classes].T.reshape(-1, 4, 4, 2)
    feat_gradients = pooled_gradients.repeat(2, axis=1).repeat(2, axis=2) / 4.0
    return {"feat": (feat, feat_gradients), "pooled": (pooled, pooled_gradients)}


FORMULAS = {
    # Jiang et al. 2021: each activation weighted by its own positive gradient.
    "layercam": lambda a, g: np.maximum((np.maximum(g, 0.0) * a).sum(axis=-1), 0.0),
    # Draelos and Carin 2020: each activation weighted by its own gradient.
    "hirescam": lambda a, g: np.maximum((g * a).sum(axis=-1), 0.0),
    # Selvaraju et al. 2017: each channel weighted by its mean gradient.
    "gradcam": lambda a, g: np.maximum((g.mean(axis=(1, 2), keepdims=True) * a).sum(axis=-1), 0.0),
}


def relative_error(actual, expected):
    return np.max(np.abs(actual - expected)) / np.max(np.abs(expected))


def small_cnn_model(name="small_cnn", seed=None):
    """Random conv net, any input size: "conv1" at full resolution, target layer
    "target" (8 channels) at 1/4 size, then global average pooling and 3 logits.

    Args:
        name: the model's name.
        seed: seeds Keras before any layer is made (None: leave the global state).
    """
    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(4, name="pool")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="target_conv")(x)
    x = keras.layers.Activation("relu", name="target")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="predictions")(x), name=name)
