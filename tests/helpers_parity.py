"""The models, images and CAM calls that `tests/test_jax_cams.py` runs under both Keras backends.

Imported by the TensorFlow parent and by the JAX child process, so both build
the same architectures; the parent builds them with random weights and saves
them, the child loads those weights (`explain_all`) and the parent compares
its maps with the child's (`differences`). `benchmarks/backend_parity.py`
runs the same functions on the whole matrix (`calls(..., full=True)`).
"""

import os
import time

import keras
import numpy as np

from kerascam.models import build_model, fusion_layer_names

METHODS = ("gradcam", "gradcam++", "layercam", "hirescam", "scorecam")
SIZES = {"unet": 32, "unet_ablated": 32, "resnet50": 64, "vgg16": 64, "nested": 16, "gap_dense": 8}
# Every method and fused LayerCAM on the two U-Nets (ScoreCAM on all their
# channels), on ResNet50 and VGG16 one gradient method each: the engines' code
# is the same for every model, and every (model, method) is a compilation of
# its own on both backends (1.3 to 7 s of CPU each for ResNet50 and VGG16, 40 s
# for the rest of their matrix). `benchmarks/backend_parity.py` runs all of it.
METHODS_COMPARED = {
    "unet": METHODS,
    "unet_ablated": METHODS,
    "resnet50": ("gradcam++",),
    "vgg16": ("layercam",),
}
FUSED_COMPARED = ("unet", "unet_ablated")  # fused LayerCAM, outside the full matrix
# The seed of each model's random weights (`randomized`), 0 unless listed.
# Where a max-pooling window's two largest inputs are closer than the two
# backends' float32 rounding, they route the gradient to different cells and
# the maps below differ: a test of rounding, not of the engines. VGG16's
# 123,000 windows per image make such a tie likely; seed 9 is the first whose
# every margin (`edge_margins`) clears the measured rounding. The measurements:
# benchmarks/README.md, "backend_parity.py".
WEIGHT_SEEDS = {"vgg16": 9}


def _nested_model():
    """A Sequential holding "backbone", which holds "stem": layers two levels deep, a softmax head."""
    stem_input = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(stem_input)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    stem = keras.Model(stem_input, keras.layers.Activation("relu", name="relu1")(x), name="stem")
    backbone_input = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="conv2")(stem(backbone_input))
    backbone = keras.Model(backbone_input, keras.layers.Activation("relu", name="relu2")(x), name="backbone")
    head = [keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dense(3, activation="softmax", name="predictions")]
    return keras.Sequential([keras.Input((16, 16, 3)), backbone, *head], name="nested")


def gap_dense_model():
    """8x8 RGB -> "feat" (1x1 conv, ReLU, 4 channels) -> global average pooling -> 3 logits.

    GradCAM's weights have a closed form here: d y^c / d A_k is the dense
    kernel's entry W[k, c] at every cell, divided by the 64 cells the pooling
    averages, so the map is ReLU(sum_k A_k W[k, c]) / 64.
    """
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 1, activation="relu", name="feat")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="predictions")(x), name="gap_dense")


def build(name):
    """The model `name` of `SIZES`, with Keras' initial (random) weights."""
    if name == "nested":
        return _nested_model()
    if name == "gap_dense":
        return gap_dense_model()
    return build_model(name, SIZES[name], 3, unet_filters=4)


def randomize(model, seed=0):
    """Random weights that make every comparison non-vacuous: a random classifier
    (VGG16's starts at zero) and, in the nested model, batch norm statistics
    away from the identity, so that inference mode matters.

    The classifier's kernel is drawn with standard deviation 0.5, or LeCun's
    1 / sqrt(fan_in) where that is smaller (VGG16: 4096 features, 0.016):
    at 0.5 VGG16's logits reach hundreds and its gradients cross GradCAM++'s
    pole, alpha = 1 / (2 + S g), where a channel's alphas of both signs
    cancel in their sum and magnify float32 rounding a hundredfold
    (benchmarks/README.md, "backend_parity.py").
    """
    rng = np.random.default_rng(seed)
    if model.name == "nested":
        bn = model.get_layer("backbone").get_layer("stem").get_layer("bn1")
        bn.set_weights([rng.uniform(0.5, 2, 4), rng.normal(0, 1, 4), rng.normal(0, 1, 4), rng.uniform(0.5, 2, 4)])
    kernel, bias = model.get_layer("predictions").get_weights()
    scale = min(0.5, 1 / np.sqrt(kernel.shape[0]))
    model.get_layer("predictions").set_weights([rng.normal(0, scale, kernel.shape), rng.normal(0, 0.1, bias.shape)])


def edge_margins(model, images):
    """How far `model`'s forward pass on `images` is from the points where its gradient jumps.

    Two backends compute the forward pass with different float32 rounding
    (2.3e-6 of a layer's peak at most, VGG16 at 64x64). Where a max-pooling
    window's two largest inputs are closer than that, the backends may pick
    different arg-maxes and route the gradient, and every gradient below,
    to different cells; where a dense ReLU's pre-activation is that close to
    zero, they may disagree on whether it passes. Such weights test float32
    rounding, not the engines.

    Returns:
        A dict: for each max-pooling layer, the smallest gap between the two
        largest inputs of a window whose maximum is positive, and for each
        dense layer with a ReLU, the smallest |pre-activation|; both divided
        by the layer's largest |input| or |pre-activation|.
    """
    pools = [l for l in model.layers if isinstance(l, keras.layers.MaxPooling2D)]
    dense = [l for l in model.layers if isinstance(l, keras.layers.Dense) and l.activation is keras.activations.relu]
    probe = keras.Model(model.inputs[0], [layer.input for layer in pools + dense])
    outputs = probe(images)
    outputs = [np.asarray(o, np.float64) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]
    margins = {}
    for layer, inputs in zip(pools, outputs):
        (ph, pw), (sh, sw) = layer.pool_size, layer.strides
        if layer.padding == "same":  # TensorFlow's: the extra row or column goes after
            pad = [max((-(-size // s) - 1) * s + k - size, 0) for size, k, s in zip(inputs.shape[1:3], (ph, pw), (sh, sw))]
            inputs = np.pad(inputs, [(0, 0), (pad[0] // 2, pad[0] - pad[0] // 2), (pad[1] // 2, pad[1] - pad[1] // 2), (0, 0)],
                            constant_values=-np.inf)
        windows = np.lib.stride_tricks.sliding_window_view(inputs, (ph, pw), axis=(1, 2))[:, ::sh, ::sw]
        windows = np.sort(windows.reshape(*windows.shape[:4], -1), axis=-1)
        positive = windows[..., -1] > 0
        gaps = (windows[..., -1] - windows[..., -2])[positive]
        margins[layer.name] = float(gaps.min() / np.abs(inputs[np.isfinite(inputs)]).max()) if gaps.size else np.inf
    for layer, inputs in zip(dense, outputs[len(pools):]):
        kernel, bias = (w.astype(np.float64) for w in layer.get_weights())
        pre = inputs @ kernel + bias
        margins[layer.name] = float(np.abs(pre).min() / np.abs(pre).max())
    return margins


def randomized(name):
    """`build(name)` with the random weights of seed `WEIGHT_SEEDS` (Keras' initializers and `randomize`)."""
    seed = WEIGHT_SEEDS.get(name, 0)
    keras.utils.set_random_seed(seed)
    model = build(name)
    randomize(model, seed)
    return model


def images(name, n=2):
    size = SIZES[name]
    return np.random.default_rng(7).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


# Faster-ScoreCAM's channel count on ResNet50 and VGG16 in the full matrix:
# their target layers have 2048 and 512 channels, a forward pass each per
# image; the U-Nets' ScoreCAM runs on all channels.
SCORECAM_CHANNELS = 8


def calls(name, model, full=False):
    """(label, method, keyword arguments of `kerascam.cams.explain`) of every CAM compared on `name`.

    Args:
        name: a key of `SIZES`.
        model: the model built by `build(name)`.
        full: every method and fused LayerCAM on each of the four models
            (`benchmarks/backend_parity.py`), instead of `METHODS_COMPARED`.
    """
    if name == "gap_dense":
        return [("gradcam", "gradcam", dict(target_layer="feat")), ("hirescam", "hirescam", dict(target_layer="feat"))]
    if name == "nested":
        return [
            ("gradcam deep", "gradcam", dict(target_layer="backbone/stem/relu1")),
            ("gradcam++", "gradcam++", {}),
            ("layercam fused", "layercam", dict(target_layer=["backbone/stem/relu1", "backbone/relu2"])),
            ("scorecam deep", "scorecam", dict(target_layer="backbone/stem/relu1", class_index=[2, 0])),
        ]
    fewer_channels = dict(max_N=SCORECAM_CHANNELS) if name in ("resnet50", "vgg16") else {}
    methods = METHODS if full else METHODS_COMPARED[name]
    found = [(method, method, fewer_channels if method == "scorecam" else {}) for method in methods]
    if full or name in FUSED_COMPARED:
        found.append(("layercam fused", "layercam", dict(target_layer=fusion_layer_names(model))))
    if name == "unet":
        # 4 channels in chunks of 3 masked images: JAX pads the last chunk to 3.
        found.append(("scorecam in chunks", "scorecam", dict(batch_size=3)))
    return found


def draw_zero_initial_weights():
    """Makes Keras' random initializers draw zeros, in a process that loads every weight afterwards.

    Under JAX every initializer is compiled once per weight shape (20 s of
    CPU for the U-Net alone) for weights that the parent's replace.
    """
    from keras.src.backend import random as initializer_random

    for draw in ("normal", "truncated_normal", "uniform"):
        setattr(initializer_random, draw, lambda shape, *args, dtype=None, **kwargs: np.zeros(shape, dtype or "float32"))


def explain_all(names, weights_folder, full=False):
    """Loads each model's weights from `weights_folder` and computes every CAM of `calls`.

    Returns:
        (arrays, models, seconds, engines): arrays keyed "name|label|field"
        (the fields of `kerascam.cams.CAMResult`), the models by name, the
        CPU seconds of each "name|label" (its first call: compilation
        included), and the set of modules of the engines that computed them.
    """
    from kerascam import cams
    from kerascam.cams.engine import get_engine

    arrays, models, seconds, engines = {}, {}, {}, set()
    for name in names:
        model = build(name)
        model.load_weights(os.path.join(weights_folder, name + ".weights.h5"))
        models[name] = model
        for label, method, options in calls(name, model, full):
            options = dict(options)
            start = time.process_time()
            cam = cams.get_method(method)(model, options.pop("target_layer", None))
            result = cam.compute(images(name), **options)
            seconds[f"{name}|{label}"] = time.process_time() - start
            engines.add(type(get_engine(cam.model, cam.target_layer, cam.name)).__module__)
            for field in result._fields:
                arrays[f"{name}|{label}|{field}"] = getattr(result, field)
    return arrays, models, seconds, engines


def differences(name, model, arrays, full=False):
    """This process' maps of `name` against `arrays` (another backend's, from `explain_all`).

    Returns:
        A list of dicts, one per CAM of `calls`: "label"; "expected" and
        "received", the `kerascam.cams.CAMResult` of this process and the
        other; "map_diff", the largest absolute difference of the normalised
        maps; "native_diff", that of the raw maps divided by this process'
        peak |raw map|; "peak"; "where", the (image, row, column) of the
        largest raw difference; and "seconds", the CPU seconds of this
        process' first call.
    """
    from kerascam import cams

    found = []
    for label, method, options in calls(name, model, full):
        options = dict(options)
        start = time.process_time()
        cam = cams.get_method(method)(model, options.pop("target_layer", None))
        expected = cam.compute(images(name), **options)
        seconds = time.process_time() - start
        received = cams.CAMResult(*(arrays[f"{name}|{label}|{field}"] for field in expected._fields))
        peak = float(np.abs(expected.native).max())
        native_gap = np.abs(received.native.astype(np.float64) - expected.native)
        found.append(dict(
            label=label, expected=expected, received=received, peak=peak, seconds=seconds,
            map_diff=float(np.abs(received.maps.astype(np.float64) - expected.maps).max()),
            native_diff=float(native_gap.max() / peak) if peak > 0 else float("inf"),
            where=tuple(int(i) for i in np.unravel_index(np.argmax(native_gap), native_gap.shape)),
        ))
    return found
