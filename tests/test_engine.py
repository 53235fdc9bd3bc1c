"""Tests of kerascam's compiled engine against tf-keras-vis, the reference.

The four model types are built tiny (3 classes, U-Nets with 4 filters at
32x32, ResNet50 and VGG16 at 64x64 so that their target layers are 2x2 and
4x4), plus a small CNN whose 8x8 target layer takes inputs of any size.
"""

import gc
import weakref

import keras
import numpy as np
import pytest
from helpers_cams import small_cnn_model

from kerascam import cams
from kerascam.cams import engine as engine_module
from kerascam.cams.engine import get_engine
from kerascam.models import build_model, fusion_layer_names, target_layer_name

METHODS = list(cams.METHODS)
# The methods tf-keras-vis has (all but hirescam), and every (method, backend) pair.
REFERENCE_METHODS = [name for name, cls in cams.METHODS.items() if cls.reference is not None]
METHOD_BACKENDS = [(m, b) for m in METHODS for b in cams.BACKENDS if b == "kerascam" or m in REFERENCE_METHODS]
# Native maps of the two backends agree to float32 rounding (about 1e-6
# relative in practice); the bound is 1e-4.
RELATIVE_TOLERANCE = 1e-4
MODEL_SIZES = {"unet": 32, "unet_ablated": 32, "resnet50": 64, "vgg16": 64}
# ScoreCAM on all 2048 / 512 channels would take minutes here: Faster-ScoreCAM
# with 16 channels exercises the same code plus the channel selection.
SCORECAM_MAX_N = {"unet": None, "unet_ablated": None, "resnet50": 16, "vgg16": 16}


@pytest.fixture(scope="module")
def models():
    built = {}

    def get(name):
        if name not in built:
            keras.utils.set_random_seed(0)
            model = build_model(name, MODEL_SIZES[name], 3, unet_filters=4)
            head = model.get_layer("predictions")
            if not np.any(head.get_weights()[0]):
                # A classifier that starts at zero (VGG16 from scratch) gives zero
                # gradients and uniform ScoreCAM weights: nothing to compare.
                kernel, bias = head.get_weights()
                head.set_weights([np.random.default_rng(0).normal(0, 0.05, kernel.shape), bias])
            built[name] = model
        return built[name]

    return get


@pytest.fixture(scope="module")
def small_cnn():
    keras.utils.set_random_seed(1)
    return small_cnn_model()


def _images(size, n=2, seed=0):
    height, width = (size, size) if np.isscalar(size) else size
    return np.random.default_rng(seed).uniform(0, 255, (n, height, width, 3)).astype(np.float32)


def _relative_error(actual, expected):
    """Largest per-map max |actual - expected| / max |expected|."""
    errors = [
        np.max(np.abs(a - e)) / max(np.max(np.abs(e)), np.finfo(np.float32).tiny)
        for a, e in zip(actual.astype(np.float64), expected.astype(np.float64))
    ]
    return max(errors)


def _both_backends(model, images, method, **options):
    results = {
        backend: cams.explain(model, images, method, return_native=True, backend=backend, **options)
        for backend in cams.BACKENDS
    }
    if method == "gradcam++":
        # tf-keras-vis differentiates Y^c = exp(y^c), so its native maps carry
        # the positive factor exp(y^c); kerascam's leave it out (it overflows
        # float32 above y^c ~ 88). The normalised maps are the same.
        logits = np.asarray(model(images), np.float64)
        class_index = options.get("class_index")
        classes = np.argmax(logits, axis=-1) if class_index is None else np.broadcast_to(class_index, len(images))
        maps, native = results["tf-keras-vis"]
        scale = np.exp(logits[np.arange(len(images)), classes])[:, None, None]
        results["tf-keras-vis"] = (maps, native / scale)
    return results["kerascam"], results["tf-keras-vis"]


def _assert_same_maps(ours, reference):
    (maps, native), (reference_maps, reference_native) = ours, reference
    assert native.shape == reference_native.shape and maps.shape == reference_maps.shape
    # The comparison must not be vacuous (a random net's map can be all zero
    # after the ReLU, then both backends must say so).
    assert np.any(cams.map_status(reference_native) == "ok")
    np.testing.assert_array_equal(cams.map_status(native), cams.map_status(reference_native))
    assert _relative_error(native, reference_native) < RELATIVE_TOLERANCE
    np.testing.assert_allclose(maps, reference_maps, atol=RELATIVE_TOLERANCE)


@pytest.mark.parametrize("method", REFERENCE_METHODS)
@pytest.mark.parametrize("name", list(MODEL_SIZES))
def test_engine_matches_tf_keras_vis(models, name, method):
    if method == "scorecam" and name in ("resnet50", "vgg16"):
        # The engine masks towards the model's normalised zero (the ImageNet
        # mean under caffe preprocessing), tf-keras-vis towards raw 0: see
        # tests/test_scorecam_baseline.py. Where that zero is raw 0 (the U-Nets,
        # the small CNN) the two backends are compared.
        pytest.skip("the backends mask to different pixels for caffe-preprocessed models")
    model = models(name)
    max_N = SCORECAM_MAX_N[name] if method == "scorecam" else None
    ours, reference = _both_backends(model, _images(MODEL_SIZES[name], n=3), method, max_N=max_N)
    _assert_same_maps(ours, reference)


@pytest.mark.parametrize("method", REFERENCE_METHODS)
def test_engine_matches_tf_keras_vis_non_square_with_given_classes(small_cnn, method):
    # 8x12 channels upsampled to 32x48: ScoreCAM's align-corners upsampling
    # must equal scipy's zoom along both axes.
    images = _images((32, 48))
    ours, reference = _both_backends(small_cnn, images, method, class_index=[2, 0], target_layer="target")
    assert ours[1].shape == (2, 8, 12)
    _assert_same_maps(ours, reference)


@pytest.mark.parametrize("max_N", [1, 3, 8])
def test_faster_scorecam_matches_tf_keras_vis(small_cnn, max_N):
    ours, reference = _both_backends(small_cnn, _images(32), "scorecam", max_N=max_N, target_layer="target")
    _assert_same_maps(ours, reference)


def test_backends_are_listed_and_checked(small_cnn):
    assert cams.BACKENDS == ("kerascam", "tf-keras-vis")
    with pytest.raises(ValueError, match="backend must be one of"):
        cams.explain(small_cnn, _images(32), "gradcam", target_layer="target", backend="torch")


def test_tf_keras_vis_is_only_built_when_asked_for(small_cnn):
    cam = cams.get_method("layercam")(small_cnn, "target")
    cam(_images(32, n=1))
    assert cam._visualizer is None
    cam(_images(32, n=1), backend="tf-keras-vis")
    assert type(cam._visualizer).__name__ == "Layercam"


@pytest.mark.parametrize("method", sorted(set(METHODS) - set(REFERENCE_METHODS)))
def test_methods_tf_keras_vis_lacks_are_refused_with_that_backend_in_one_line(small_cnn, method):
    with pytest.raises(ValueError, match=f"{method} exists only in kerascam") as error:
        cams.explain(small_cnn, _images(32), method, target_layer="target", backend="tf-keras-vis")
    assert "\n" not in str(error.value)


def test_engine_covers_every_registered_method(small_cnn):
    for method in cams.METHODS:
        assert get_engine(small_cnn, "target", method).method == method
    with pytest.raises(ValueError, match="no method"):
        get_engine(small_cnn, "target", "lime")


def test_engines_are_cached_per_model_layer_and_method(small_cnn):
    gradcam = get_engine(small_cnn, "target", "gradcam")
    cams.explain(small_cnn, _images(32), "gradcam", target_layer="target")
    assert get_engine(small_cnn, "target", "gradcam") is gradcam
    assert get_engine(small_cnn, "target", "gradcam++") is not gradcam
    assert get_engine(small_cnn, "target_conv", "gradcam") is not gradcam
    other = small_cnn_model("other_cnn")
    assert get_engine(other, "target", "gradcam") is not gradcam


def test_cache_lets_models_be_garbage_collected():
    model = small_cnn_model("short_lived")
    for method in METHODS:
        cams.explain(model, _images(32, n=1), method, target_layer="target")
    assert model in engine_module._ENGINES
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize("method", METHODS)
def test_one_trace_serves_every_batch_and_image_size(small_cnn, method):
    engine = get_engine(small_cnn, "target", method)
    cams.explain(small_cnn, _images(32, n=3), method, target_layer="target")
    traced = engine.tracing_count
    for n, size, batch_size in [(1, 32, None), (3, 32, 2), (5, 32, 4), (2, (16, 40), None)]:
        cams.explain(small_cnn, _images(size, n=n), method, target_layer="target", batch_size=batch_size)
    assert engine.tracing_count == traced


def test_model_with_fixed_input_keeps_one_trace(models):
    model = models("unet")
    engine = get_engine(model, target_layer_name(model), "gradcam")
    for n in (1, 2, 3):
        cams.explain(model, _images(32, n=n), "gradcam")
    assert engine.tracing_count == 1


def test_gradients_stop_at_the_target_layer(small_cnn):
    engine = get_engine(small_cnn, "target", "gradcam++")
    graph = engine._compiled.get_concrete_function().graph
    op_types = {op.type for op in graph.get_operations()}
    # The head after "target" is global pooling and a dense layer: differentiating
    # back to "target" needs no convolution gradient, while reaching the input
    # would need the gradients of "target_conv" and "conv1".
    assert "MatMul" in op_types
    assert not {"Conv2DBackpropInput", "Conv2DBackpropFilter", "MaxPoolGrad"} & op_types


def test_scorecam_chunks_are_bounded_by_batch_size(small_cnn, monkeypatch):
    images = _images(32, n=2)
    whole = cams.explain(small_cnn, images, "scorecam", target_layer="target", batch_size=32)
    engine = get_engine(small_cnn, "target", "scorecam")
    chunk_sizes = []
    compiled_chunk = engine._compiled_chunk

    def recording_chunk(image, channel_maps, class_index):
        chunk_sizes.append(int(channel_maps.shape[-1]))
        return compiled_chunk(image, channel_maps, class_index)

    monkeypatch.setattr(engine, "_compiled_chunk", recording_chunk)
    chunked = cams.explain(small_cnn, images, "scorecam", target_layer="target", batch_size=3)
    # 8 channels per image in chunks of at most 3 masked images.
    assert chunk_sizes == [3, 3, 2, 3, 3, 2]
    np.testing.assert_allclose(chunked, whole, atol=1e-5)


def test_predicted_class_comes_from_the_engine_forward_pass(small_cnn, monkeypatch):
    images = _images(32, n=3)
    predicted = cams.predicted_classes(small_cnn, images)
    expected = cams.explain(small_cnn, images, "gradcam", predicted, target_layer="target")

    def no_separate_pass(*args, **kwargs):
        raise AssertionError("the kerascam backend must not run a separate forward pass for the classes")

    monkeypatch.setattr(cams.base, "predicted_classes", no_separate_pass)
    by_default = cams.explain(small_cnn, images, "gradcam", target_layer="target")
    np.testing.assert_array_equal(by_default, expected)


def test_engine_rejects_models_with_several_outputs():
    inputs = keras.Input((16, 16, 3))
    features = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(features)
    outputs = [keras.layers.Dense(2, name="a")(pooled), keras.layers.Dense(2, name="b")(pooled)]
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="one input and one output"):
        get_engine(model, "conv", "gradcam")


def test_engine_returns_raw_and_resized_maps(small_cnn):
    native, resized, classes = get_engine(small_cnn, "target", "gradcam").explain(_images(32, n=1))
    assert isinstance(native, np.ndarray) and native.shape == (1, 8, 8) and native.dtype == np.float32
    assert isinstance(resized, np.ndarray) and resized.shape == (1, 32, 32)
    np.testing.assert_allclose(resized, cams.resize_maps(native, (32, 32)), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(classes, cams.predicted_classes(small_cnn, _images(32, n=1)))


@pytest.mark.parametrize("method, backend", METHOD_BACKENDS)
def test_compute_returns_the_classes_it_explained(method, backend):
    keras.utils.set_random_seed(1)
    model = small_cnn_model("varied_predictions")
    kernel, bias = model.get_layer("predictions").get_weights()
    model.get_layer("predictions").set_weights([np.random.default_rng(0).normal(0, 3, kernel.shape), bias])
    rng = np.random.default_rng(0)
    images = (rng.uniform(0, 255, (6, 32, 32, 3)) * rng.uniform(0, 1, (6, 1, 1, 3))).astype(np.float32)
    predicted = cams.predicted_classes(model, images)
    # Not vacuous: the net predicts more than one class on these images.
    assert len(set(predicted.tolist())) > 1
    cam = cams.get_method(method)(model, "target")
    result = cam.compute(images, batch_size=4, backend=backend)
    np.testing.assert_array_equal(result.classes, predicted)
    assert result.classes.dtype == np.int64
    maps, native = cam(images, predicted, batch_size=4, backend=backend, return_native=True)
    np.testing.assert_array_equal(result.maps, maps)
    np.testing.assert_array_equal(result.native, native)
    given = (predicted + 1) % 3
    np.testing.assert_array_equal(cam.compute(images, given, backend=backend).classes, given)


@pytest.mark.parametrize("class_index", ["predicted", "true"])
def test_evaluation_reads_predictions_from_the_cam_forward_pass(models, monkeypatch, class_index):
    from kerascam import evaluation

    model = models("unet")
    images, labels = _images(32, n=3, seed=5), np.array([0, 1, 2])
    expected = cams.predicted_classes(model, images)
    calls = []
    original = cams.predicted_classes

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(cams, "predicted_classes", counting)
    monkeypatch.setattr(cams.base, "predicted_classes", counting)
    out, predictions = evaluation.explain_batch(
        {"unet": model}, ("gradcam", "gradcam++"), images, labels, class_index
    )
    np.testing.assert_array_equal(predictions["unet"], expected)
    # A separate forward pass only when the explained class is not the prediction.
    assert len(calls) == (1 if class_index == "true" else 0)
    explained = labels if class_index == "true" else expected
    for method in ("gradcam", "gradcam++"):
        np.testing.assert_array_equal(out[("unet", method)][0], cams.explain(model, images, method, explained))


FUSION_LAYERS = {
    "unet": ["dec4_relu2", "dec3_relu2", "dec2_relu2", "dec1_relu2"],
    "unet_ablated": ["dec4_relu2", "dec3_relu2", "dec2_relu2", "dec1_relu2"],
    "resnet50": ["conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"],
    "vgg16": ["block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"],
}


def test_fusion_layer_names_go_from_shallow_to_the_target_layer(models):
    from kerascam.models.applications import build_vgg16_bn

    built = {name: models(name) for name in MODEL_SIZES}
    built["vgg16_bn"] = build_vgg16_bn(32, 3)
    expected = dict(FUSION_LAYERS, vgg16_bn=[f"block{b}_relu{c}" for b, c in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))])
    for name, model in built.items():
        layers = fusion_layer_names(model)
        assert layers == expected[name], name
        assert layers[-1] == target_layer_name(model)
        order = [[layer.name for layer in model.layers].index(layer) for layer in layers]
        assert order == sorted(order), name  # shallow to deep
        assert all(len(model.get_layer(layer).output.shape) == 4 for layer in layers)


@pytest.mark.parametrize("name", ["unet", "resnet50"])
def test_fused_layercam_matches_tf_keras_vis_layer_by_layer(models, name):
    # tf-keras-vis explains one layer per call; kerascam all of them in one pass.
    # (The ablated U-Net and VGG16 take the same code with other layer names.)
    model = models(name)
    layers = fusion_layer_names(model)
    ours, reference = _both_backends(model, _images(MODEL_SIZES[name]), "layercam", target_layer=layers)
    assert ours[1].shape == (2, MODEL_SIZES[name], MODEL_SIZES[name])  # native: the fused map, input size
    _assert_same_maps(ours, reference)


def _detail_below(maps, block):
    """Share of each map's variation that no bilinear upsample of a coarse map
    (one value per block x block pixels) reproduces: the least-squares residual
    over the span of the upsampled coarse grid's basis maps."""
    n, height, width = maps.shape
    grid = (height // block, width // block)
    basis = np.eye(grid[0] * grid[1], dtype=np.float32).reshape(-1, *grid)
    upsampled = cams.resize_maps(basis, (height, width)).reshape(len(basis), -1).T.astype(np.float64)
    flat = maps.reshape(n, -1).T.astype(np.float64)
    coefficients = np.linalg.lstsq(upsampled, flat, rcond=None)[0]
    residual = flat - upsampled @ coefficients
    return np.linalg.norm(residual, axis=0) / np.linalg.norm(flat - flat.mean(axis=0), axis=0)


@pytest.mark.parametrize("method", METHODS)
def test_unet_maps_have_the_inputs_full_resolution(models, method):
    # ResNet50's map at 64x64 is a bilinear upsample of its 2x2 native map
    # (plus the normalisation's offset): nothing below the 32x32 blocks. The
    # U-Nets' maps vary inside every 16x16 block, pixel by pixel.
    residuals = {}
    for name in ("unet", "unet_ablated", "resnet50"):
        size = MODEL_SIZES[name]
        # ResNet50's 2048 channels cost ScoreCAM 2048 forward passes per image;
        # 64 of them (Faster-ScoreCAM) give a map of the same 2x2 resolution.
        fewer = {"max_N": 64} if name == "resnet50" and cams.METHODS[method].supports_max_N else {}
        maps, native = cams.explain(models(name), _images(size, n=3, seed=7), method, return_native=True, **fewer)
        assert np.all(cams.map_status(native) == "ok"), name
        if name != "resnet50":
            assert native.shape == (3, size, size)  # the input's own resolution
            np.testing.assert_array_equal(maps, cams.normalize_maps(native))  # nothing resized
        residuals[name] = _detail_below(maps, size // 2)
    assert residuals["resnet50"].max() < 1e-4, residuals
    assert residuals["unet"].min() > 0.5 and residuals["unet_ablated"].min() > 0.5, residuals


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_model_gives_the_float32_maps(small_cnn, policy):
    from kerascam.training import dtype_policy

    with dtype_policy(policy):
        mixed = small_cnn_model("mixed")
    mixed.set_weights(small_cnn.get_weights())
    assert mixed.get_layer("target").compute_dtype != "float32"
    images = _images(32, n=3, seed=2)
    tolerance = 0.02 if policy == "mixed_float16" else 0.1  # bfloat16 keeps 8 bits of mantissa
    for method in METHODS:
        maps, native = cams.explain(mixed, images, method, target_layer="target", return_native=True)
        expected = cams.explain(small_cnn, images, method, target_layer="target")
        assert native.dtype == np.float32 and np.all(cams.map_status(native) == "ok"), method
        np.testing.assert_allclose(maps, expected, atol=tolerance, err_msg=method)
