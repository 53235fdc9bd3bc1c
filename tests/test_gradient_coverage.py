"""Every cell of each model's CAM layer, and every quadrant of its input, reaches the logits.

A cell whose gradient is exactly zero can never light up in a gradient CAM
(LayerCAM, HiResCAM), so a model that drops part of its last feature map
confines every map to the rest. This is what "valid" pooling did to VGG16 at
the demo's 48x48 (issue #23, item 1): block5 is 3x3 there and only its
top-left 2x2 window reached the logits.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerascam.models import build_model, target_layer_name
from kerascam.models.applications import build_vgg16_bn

DEMO_SIZE = 48


def _unreached_parts(model, size, seed=0):
    """Names the CAM-layer cells and input quadrants whose gradient from the logits is exactly zero."""
    # he_initialize starts VGG16's classifier at zero, which would zero every
    # gradient; a random classifier asks only the geometry.
    predictions = model.get_layer("predictions")
    rng = np.random.default_rng(seed)
    predictions.kernel.assign(rng.normal(0, 0.05, predictions.kernel.shape).astype("float32"))
    layer = target_layer_name(model)
    probe = keras.Model(model.inputs, [model.get_layer(layer).output, model.outputs[0]])
    image = tf.constant(rng.uniform(0, 255, (1, size, size, 3)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(image)
        activation, logits = probe(image, training=False)
        # A random mix of the logits, so that no cell's contributions cancel.
        objective = tf.reduce_sum(logits * rng.normal(size=logits.shape).astype("float32"))
    cell_gradient = np.abs(tape.gradient(objective, activation).numpy()[0]).sum(axis=-1)
    input_gradient = np.abs(tape.gradient(objective, image).numpy()[0]).sum(axis=-1)
    unreached = [f"{layer}[{i},{j}]" for i, j in zip(*np.nonzero(cell_gradient == 0))]
    half = size // 2
    quadrants = {"top-left": (0, 0), "top-right": (0, half), "bottom-left": (half, 0), "bottom-right": (half, half)}
    unreached += [name for name, (i, j) in quadrants.items() if not input_gradient[i : i + half, j : j + half].any()]
    return unreached, cell_gradient.shape


@pytest.mark.parametrize("size", [DEMO_SIZE, 224])
@pytest.mark.parametrize(
    "name, options",
    [
        ("unet", {"unet_filters": 4}),
        ("unet_ablated", {"unet_filters": 4}),
        ("resnet50", {}),
        # The demo's VGG16. The plain one is built by the same function
        # (build_vgg16) with the same pools, at twice the build time.
        ("vgg16", {"vgg_batch_norm": True}),
    ],
    ids=["unet", "unet_ablated", "resnet50", "vgg16_bn"],
)
def test_every_cam_cell_and_input_quadrant_reaches_the_logits(name, options, size):
    unreached, _ = _unreached_parts(build_model(name, size, 5, **options), size)
    assert unreached == []


def test_valid_pooling_cuts_vgg16s_block5_at_the_demo_size():
    # The old geometry: block5 is 3x3 at 48x48, "valid" 2x2 pooling keeps its
    # top-left window only, so its last row and column never reach the logits.
    unreached, shape = _unreached_parts(build_vgg16_bn(DEMO_SIZE, 5, pool_padding="valid"), DEMO_SIZE)
    assert shape == (3, 3)
    assert unreached == [f"block5_relu3[{i},{j}]" for i, j in ((0, 2), (1, 2), (2, 0), (2, 1), (2, 2))]
