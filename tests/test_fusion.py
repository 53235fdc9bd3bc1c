"""Maps of several layers fused as in LayerCAM (Jiang et al., IEEE TIP 2021).

The fusion of the four real models' default layer sets, and its agreement
between the backends, is tested in tests/test_engine.py (it reuses that
file's models).
"""

import collections

import cv2
import keras
import numpy as np
import pytest
from helpers_cams import CLASSES, FORMULAS, hand_activations_and_gradients, hand_images, hand_net, small_cnn_model

from kerascam import cams
from kerascam.cams.engine import get_engine
from kerascam.models import fusion_layer_names

GRADIENT_METHODS = [name for name, cls in cams.METHODS.items() if cls.supports_fusion]


def small_cnn():
    """Any input size; "conv1" at full resolution, "target" at 1/4, then global pooling."""
    return small_cnn_model("fusion_cnn", seed=1)


@pytest.fixture(scope="module")
def cnn():
    return small_cnn()


def images(n=2, size=(32, 32), seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *size, 3)).astype(np.float32)


def test_gradient_methods_can_fuse_and_scorecam_cannot():
    assert GRADIENT_METHODS == ["gradcam", "gradcam++", "layercam", "hirescam"]
    assert [name for name, cls in cams.METHODS.items() if cls.fused_in_experiment] == ["layercam"]


def test_fused_layercam_is_the_papers_scheme_computed_by_hand():
    model, parameters = hand_net()
    pixels = hand_images()
    by_hand = hand_activations_and_gradients(parameters, pixels, CLASSES)
    feat = FORMULAS["layercam"](*by_hand["feat"])  # 8x8: the input's resolution
    pooled = FORMULAS["layercam"](*by_hand["pooled"])  # 4x4
    pooled = np.stack([cv2.resize(m.astype(np.float32), (8, 8), interpolation=cv2.INTER_LINEAR) for m in pooled])
    # Each map divided by its maximum; the shallow one ("feat") then scaled by
    # tanh(2 x); the element-wise maximum of the two.
    shallow = np.tanh(2.0 * feat / feat.max(axis=(1, 2), keepdims=True))
    deep = pooled / pooled.max(axis=(1, 2), keepdims=True)
    expected = np.maximum(shallow, deep)
    assert np.any(shallow > deep) and np.any(deep > shallow)  # both layers show in the fusion

    maps, native = cams.explain(
        model, pixels, "layercam", CLASSES, target_layer=["feat", "pooled"], return_native=True
    )
    assert native.shape == (2, 8, 8)  # the fused map at input resolution
    np.testing.assert_allclose(native, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(maps, cams.normalize_maps(native))
    # The deepest layer is the one nearest the output, whatever the order given.
    _, swapped = cams.explain(model, pixels, "layercam", CLASSES, target_layer=("pooled", "feat"), return_native=True)
    np.testing.assert_array_equal(swapped, native)


def test_fuse_maps_handles_zero_and_non_finite_maps():
    deep = np.array([[[0.0, 2.0], [4.0, 1.0]], [[1.0, 1.0], [3.0, 0.0]]], np.float32)
    shallow = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]], np.float32)
    fused = np.asarray(cams.fuse_maps([shallow, deep], unscaled=1))
    np.testing.assert_allclose(fused[0], [[np.tanh(2.0), 0.5], [1.0, 0.25]], rtol=1e-6)
    np.testing.assert_allclose(fused[1], deep[1] / 3.0, rtol=1e-6)  # an all-zero map adds nothing
    shallow[1, 0, 0] = np.inf
    fused = np.asarray(cams.fuse_maps([shallow, deep], unscaled=1))
    assert cams.map_status(fused).tolist() == ["ok", "nonfinite"]


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_fusing_one_layer_gives_the_method_at_that_layer(cnn, method):
    pixels = images()
    maps, native = cams.explain(cnn, pixels, method, target_layer="target", return_native=True)
    fused_maps, fused_native = cams.explain(cnn, pixels, method, target_layer=["target"], return_native=True)
    np.testing.assert_allclose(fused_maps, maps, atol=2e-6)
    resized = cams.resize_maps(native, (32, 32))
    np.testing.assert_allclose(fused_native, resized / resized.max(axis=(1, 2), keepdims=True), rtol=1e-5, atol=1e-7)


def _op_counts(engine):
    graph = engine._compiled.get_concrete_function().graph
    operations = graph.get_operations()
    scopes = {op.name.split("/")[0] for op in operations if op.name.startswith("gradients")}
    return collections.Counter(op.type for op in operations), scopes


def test_fused_layers_take_one_forward_and_one_backward_pass(cnn, monkeypatch):
    fused = get_engine(cnn, ["conv1", "target"], "layercam")
    counts, scopes = _op_counts(fused)
    assert counts["Conv2D"] == 2  # one forward pass: conv1 and target_conv once each
    assert scopes == {"gradients"}  # one tf.gradients call for both layers
    # The backward pass to the shallow layer alone already passes the deep one:
    # fusing adds no backward op to it.
    shallow_counts, _ = _op_counts(get_engine(cnn, "conv1", "layercam"))
    backward = ("Conv2DBackpropInput", "MaxPoolGrad", "ReluGrad", "MatMul")
    assert counts["Conv2DBackpropInput"] == 1
    assert {op: counts[op] for op in backward} == {op: shallow_counts[op] for op in backward}

    calls = []
    compiled = fused._compiled
    traced = compiled.experimental_get_tracing_count()

    def counting(*args):
        calls.append(len(args[0]))
        return compiled(*args)

    monkeypatch.setattr(fused, "_compiled", counting)
    cams.explain(cnn, images(n=5), "layercam", target_layer=["conv1", "target"], batch_size=4)
    cams.explain(cnn, images(n=1, size=(16, 40)), "layercam", target_layer=["conv1", "target"])
    assert calls == [4, 1, 1]  # one compiled call per batch of images
    assert compiled.experimental_get_tracing_count() == traced  # and one graph for them all


def test_a_fused_call_without_a_declared_layer_set_says_to_pass_the_layers(cnn):
    with pytest.raises(ValueError, match=r"pass target_layer=\[\.\.\.\]") as error:
        cams.explain(cnn, images(), "layercam", target_layer=fusion_layer_names(cnn))
    assert "\n" not in str(error.value) and "'fusion_cnn'" in str(error.value)


def _u_shaped_net():
    """16x16 input: "fine" at full resolution, "coarse" at 4x4, "fine_late" back at 16x16, nearest the output."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    fine = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="fine")(x)
    x = keras.layers.MaxPooling2D(4, name="pool")(fine)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="coarse")(x)
    x = keras.layers.UpSampling2D(4, interpolation="bilinear", name="up")(x)
    x = keras.layers.Concatenate(name="skip")([x, fine])
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="fine_late")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, name="predictions")(x)
    keras.utils.set_random_seed(4)
    return keras.Model(inputs, outputs, name="u_shaped")


def test_the_tanh_lifts_the_fine_layers_and_spares_the_coarsest_whatever_its_position():
    from kerascam.cams.fusion import unscaled_index

    model = _u_shaped_net()
    # The coarsest layer is left unscaled, though "fine_late" is nearer the output.
    assert unscaled_index(model, ["fine", "coarse", "fine_late"]) == 1
    assert unscaled_index(model, ["fine_late", "coarse"]) == 1
    assert unscaled_index(model, ["fine", "fine_late"]) == 1  # equally fine: the one nearest the output
    pixels = images(2, (16, 16), seed=5)
    single = {
        layer: cams.explain(model, pixels, "layercam", 0, target_layer=layer, return_native=True)[1]
        for layer in ("coarse", "fine_late")
    }
    coarse = cams.resize_maps(single["coarse"], (16, 16))
    coarse = coarse / coarse.max(axis=(1, 2), keepdims=True)
    fine_late = np.tanh(2.0 * single["fine_late"] / single["fine_late"].max(axis=(1, 2), keepdims=True))
    expected = np.maximum(coarse, fine_late)
    assert np.any(fine_late > coarse) and np.any(coarse > fine_late)  # both layers show
    _, fused = cams.explain(model, pixels, "layercam", 0, target_layer=["coarse", "fine_late"], return_native=True)
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-5)
    # The old rule (tanh on all but the layer nearest the output) gives another map.
    old = np.maximum(np.tanh(2.0 * coarse), single["fine_late"] / single["fine_late"].max(axis=(1, 2), keepdims=True))
    assert np.max(np.abs(fused - old)) > 0.05


def test_the_unets_coarsest_decoder_level_is_the_unscaled_one():
    from kerascam.cams.fusion import unscaled_index
    from kerascam.models import build_model

    for name in ("unet", "unet_ablated"):
        model = build_model(name, 32, 3, unet_filters=4)
        layers = fusion_layer_names(model)
        assert layers == ["dec4_relu2", "dec3_relu2", "dec2_relu2", "dec1_relu2"]
        assert unscaled_index(model, layers) == 0  # dec4, 1/8 of the input; dec3-dec1 get the tanh
