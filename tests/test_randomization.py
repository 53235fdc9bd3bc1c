"""The model-parameter randomization check (kerascam/evaluation/scores/randomization.py and
kerascam/evaluation/randomize_weights.py)."""

import json

import keras
import numpy as np
import pytest
import scipy.ndimage
import scipy.stats

from conftest import read_figure
from kerascam import cams, metrics
from kerascam.cams import engine
from kerascam.evaluation.scorer import SCORERS, Batch, Explained
from kerascam.evaluation.randomize_weights import SEED, RandomizedCopy, cascade_blocks, encoder_decoder_blocks
from kerascam.evaluation.scores.randomization import FULL, TRAINED, RandomizationScore, spearman, ssim
from kerascam.models import build_model, target_layer_name

SIZE = 32
UNET_STEPS = ["predictions", "dec1", "dec2", "dec3", "dec4", "bottleneck", "enc4", "enc3", "enc2", "enc1"]
RESNET_STEPS = ["predictions", "conv5", "conv4", "conv3", "conv2", "conv1"]
VGG_STEPS = ["predictions", "fc2", "fc1", "block5", "block4", "block3", "block2", "block1"]
ALL_UNET_STEPS = [*UNET_STEPS, "full", *(f"only {step}" for step in UNET_STEPS), "encoder", "decoder"]


class Config:
    """The two settings the scorer reads."""

    methods = ("gradcam", "gradcam++")
    randomization_images = 20


def blob_images(n, size=SIZE, seed=0):
    """Smooth images: one bright Gaussian blob of random colour on grey."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        cy, cx = rng.integers(4, size - 4, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (size / 2.0))
        images[i] = 60.0 + 180.0 * blob[..., None] * rng.uniform(0.3, 1.0, 3)
    return images


def edge_maps(images):
    """Sobel magnitude of the luminance in [0, 1]: a map that ignores the model."""
    gray = np.asarray(images, np.float64).mean(axis=-1)
    magnitude = np.hypot(scipy.ndimage.sobel(gray, axis=1), scipy.ndimage.sobel(gray, axis=2))
    low = magnitude.min(axis=(1, 2), keepdims=True)
    high = magnitude.max(axis=(1, 2), keepdims=True)
    return ((magnitude - low) / (high - low)).astype(np.float32)


def cam_explain(method, target_layer=None):
    """``Explained.explain`` of a CAM method, as the experiment builds it."""

    def explain(model, images, classes):
        maps, native = cams.explain(model, images, method, class_index=classes, target_layer=target_layer,
                                    return_native=True)
        return maps, native, metrics.map_status(native)

    return explain


def edges_explain(model, images, classes):
    del model, classes
    maps = edge_maps(images)
    return maps, maps, metrics.map_status(maps)


def explained(model, images, method, explain, classes=None):
    if classes is None:
        classes = cams.predicted_classes(model, images)
    classes = np.asarray(classes, np.int64)
    maps, native, status = explain(model, images, classes)
    return Explained(maps=maps, native=native, status=status, classes=classes, model_name=model.name,
                     model=model, method=method, explain=explain)


def batch_of(images, first_id=0):
    n = len(images)
    return Batch(ids=np.arange(first_id, first_id + n), images=images, labels=np.zeros(n, np.int64))


def own_model(name="mine"):
    """A user's own small classifier: no kerascam block names."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="features")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="target")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@pytest.fixture(scope="module")
def unet():
    keras.utils.set_random_seed(1)
    return build_model("unet", SIZE, 3, unet_filters=4)


@pytest.fixture(scope="module")
def images():
    return blob_images(4)


# ---------------------------------------------------------------------------
# The cascade
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kwargs, steps",
    [
        ("unet", {"unet_filters": 4}, UNET_STEPS),
        ("unet_ablated", {"unet_filters": 4}, UNET_STEPS),
        ("resnet50", {}, RESNET_STEPS),
        ("vgg16", {}, VGG_STEPS),
        ("vgg16", {"vgg_batch_norm": True}, VGG_STEPS),
    ],
    ids=["unet", "unet_ablated", "resnet50", "vgg16", "vgg16_bn"],
)
def test_cascade_follows_the_documented_order(name, kwargs, steps):
    model = build_model(name, SIZE, 3, **kwargs)
    cascade = cascade_blocks(model)
    assert [step for step, _ in cascade] == steps
    # Every layer with weights is in exactly one block, and a block holds its own layers only.
    listed = [layer for _, layers in cascade for layer in layers]
    weighted = [layer.name for layer in model.layers if layer.weights]
    assert sorted(listed) == sorted(weighted) and len(set(listed)) == len(listed)
    for step, layers in cascade:
        assert all(layer == step or layer.startswith(step + "_") for layer in layers), (step, layers)
    assert cascade[0] == ("predictions", ["predictions"])


def test_unet_blocks_hold_their_convolutions_and_batch_norms(unet):
    blocks = dict(cascade_blocks(unet))
    assert blocks["dec1"] == ["dec1_up", "dec1_conv1", "dec1_bn1", "dec1_conv2", "dec1_bn2"]
    assert blocks["bottleneck"] == ["bottleneck_conv1", "bottleneck_bn1", "bottleneck_conv2", "bottleneck_bn2"]
    assert blocks["enc1"] == ["enc1_conv1", "enc1_bn1", "enc1_conv2", "enc1_bn2"]


def test_model_without_named_blocks_is_said_once_and_randomized_fully(capsys, images):
    model = own_model()
    assert cascade_blocks(model) == []
    assert cascade_blocks(model) == []
    scorer = RandomizationScore(Config())
    for method in ("gradcam", "gradcam++"):
        one = explained(model, images, method, cam_explain(method, "target"))
        result = scorer.score(batch_of(images), one)
        assert result.extra["steps"] == [FULL]
        assert np.isfinite(result.values["randomization_spearman"]).all()
        assert result.values["randomization_encoder_spearman"] == [None] * len(images)  # no decoder: not scored
    lines = [line for line in capsys.readouterr().out.splitlines() if "randomization" in line]
    assert lines == [
        "score 'randomization': cascade and independent randomization skipped for model 'mine': it has no named "
        "blocks (the layer names of kerascam's U-Nets, ResNet50 or VGG16); only its full randomization is scored"
    ]


# ---------------------------------------------------------------------------
# The randomized copy
# ---------------------------------------------------------------------------


def _values(model):
    return {v.path: np.array(v.numpy()) for v in model.weights}


def test_randomization_leaves_every_weight_of_the_trained_model_unchanged(unet, images):
    before = [w.copy() for w in unet.get_weights()]
    RandomizationScore(Config()).score(batch_of(images), explained(unet, images, "gradcam", cam_explain("gradcam")))
    after = unet.get_weights()
    assert len(after) == len(before)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_cascade_is_cumulative_deterministic_and_reset_restores_the_trained_weights(unet):
    copy = RandomizedCopy(unet)
    trained = _values(copy.model)
    assert all(np.array_equal(trained[k], v) for k, v in _values(unet).items())
    changed_layers = set()
    for step, layers in copy.cascade[:3]:
        copy.randomize(layers)
        changed_layers |= set(layers)
        now = _values(copy.model)
        for path, value in now.items():
            layer = path.split("/")[0]
            if layer not in changed_layers:
                assert np.array_equal(value, trained[path]), path
        # Every re-initialized kernel differs from the trained one.
        for layer in changed_layers:
            kernel = copy.model.get_layer(layer).weights[0]
            if "kernel" in kernel.path:
                assert not np.array_equal(kernel.numpy(), trained[kernel.path]), layer
    cascade_values = _values(copy.model)
    # The same draw again gives the same values; the full randomization is another draw.
    again = RandomizedCopy(unet)
    for _, layers in again.cascade[:3]:
        again.randomize(layers)
    assert all(np.array_equal(v, cascade_values[k]) for k, v in _values(again.model).items())
    again.randomize_all()
    kernel = "predictions/kernel"
    assert not np.array_equal(_values(again.model)[kernel], cascade_values[kernel])
    copy.reset()
    assert copy.randomized == []
    assert all(np.array_equal(v, trained[k]) for k, v in _values(copy.model).items())


def test_layers_are_drawn_from_their_own_initializers(unet):
    copy = RandomizedCopy(unet)
    blocks = dict(copy.cascade)
    copy.randomize(blocks["enc1"] + blocks["predictions"])
    bn = copy.model.get_layer("enc1_bn1")
    np.testing.assert_array_equal(bn.gamma.numpy(), 1.0)
    np.testing.assert_array_equal(bn.beta.numpy(), 0.0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), 0.0)
    np.testing.assert_array_equal(bn.moving_variance.numpy(), 1.0)
    # He normal: standard deviation sqrt(2 / fan_in) (Keras corrects it for the truncation).
    kernel = copy.model.get_layer("enc1_conv2").kernel.numpy()
    fan_in = 3 * 3 * 4
    assert abs(kernel.std() / np.sqrt(2.0 / fan_in) - 1.0) < 0.25
    dense = copy.model.get_layer("predictions")
    limit = np.sqrt(6.0 / sum(dense.kernel.shape))  # Glorot uniform
    assert np.abs(dense.kernel.numpy()).max() <= limit
    np.testing.assert_array_equal(dense.bias.numpy(), 0.0)


def test_the_cam_engine_of_the_copy_is_traced_once(unet, images):
    classes = cams.predicted_classes(unet, images)
    copy = RandomizedCopy(unet)
    first = cams.explain(copy.model, images, "gradcam++", class_index=classes)
    cam_engine = engine.get_engine(copy.model, target_layer_name(copy.model), "gradcam++")
    traced = cam_engine.tracing_count
    previous = first
    for _, layers in copy.cascade[:3]:
        copy.randomize(layers)
        maps = cams.explain(copy.model, images, "gradcam++", class_index=classes)
        assert not np.allclose(maps, previous)
        previous = maps
    copy.reset()
    np.testing.assert_allclose(cams.explain(copy.model, images, "gradcam++", class_index=classes), first, atol=1e-6)
    assert cam_engine.tracing_count == traced


# ---------------------------------------------------------------------------
# Spearman and SSIM
# ---------------------------------------------------------------------------


def test_spearman_by_hand_and_against_scipy():
    assert spearman([[1, 2], [3, 4]], [[1, 2], [4, 3]]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert spearman([[1, 2], [3, 4]], [[4, 3], [2, 1]]) == pytest.approx(-1.0)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, (16, 16)).astype(float)  # many ties
    b = a + rng.integers(0, 3, (16, 16))
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)
    assert np.isnan(spearman(a, np.ones_like(a)))
    assert np.isnan(spearman(a, np.full_like(a, np.nan)))


def test_ssim_by_hand():
    rng = np.random.default_rng(0)
    a = scipy.ndimage.gaussian_filter(rng.random((48, 48)), 2)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, 3 * a + 2) == pytest.approx(1.0, abs=1e-12)  # maps are min-max normalised first
    # The inverted map: structure -1, contrast 1, luminance in (0, 1].
    assert -1.0 <= ssim(a, 1 - a) < -0.5
    assert ssim(a, rng.random((48, 48))) < 0.2
    # A constant map (normalised to zeros): only the constants C1 C2 remain in the numerator.
    assert 0.0 < ssim(a, np.ones_like(a)) < 0.01
    # One window position (11x11): Wang et al.'s formula written out.
    x, y = rng.random((11, 11)), rng.random((11, 11))
    x, y = (x - x.min()) / np.ptp(x), (y - y.min()) / np.ptp(y)
    offsets = np.arange(11) - 5.0
    g = np.exp(-np.add.outer(offsets**2, offsets**2) / (2 * 1.5**2))
    g /= g.sum()
    mx, my = (g * x).sum(), (g * y).sum()
    vx, vy, cxy = (g * (x - mx) ** 2).sum(), (g * (y - my) ** 2).sum(), (g * (x - mx) * (y - my)).sum()
    c1, c2 = 0.01**2, 0.03**2
    expected = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim(x, y) == pytest.approx(expected, abs=1e-12)
    # Maps smaller than the window still get one (the largest odd that fits).
    assert ssim(a[:2, :2], a[:2, :2]) == pytest.approx(1.0)
    assert np.isnan(ssim(a, np.full_like(a, np.inf)))


# ---------------------------------------------------------------------------
# The sanity check itself
# ---------------------------------------------------------------------------


def _train_left_right(model, steps=60):
    """Class 1 when the left half is the bright one: a task any working model learns."""
    rng = np.random.default_rng(0)
    n = 64
    x = rng.uniform(0, 60, (n, SIZE, SIZE, 3)).astype(np.float32)
    y = rng.integers(0, 2, n)
    half = SIZE // 2
    x[y == 1, :, :half] += 180
    x[y == 0, :, half:] += 180
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=steps // 4, verbose=0)
    return x[:6], y[:6]


def test_a_map_that_ignores_the_weights_fails_and_a_trained_model_passes(unet, images):
    scorer = RandomizationScore(Config())
    # The map of an edge filter does not change when the model does: Spearman and SSIM stay 1.
    result = scorer.score(batch_of(images), explained(unet, images, "edges", edges_explain))
    assert result.extra["steps"] == ALL_UNET_STEPS
    for step in result.extra["steps"]:
        assert result.extra["spearman"][step] == [1.0] * len(images)
        assert result.extra["ssim"][step] == [1.0] * len(images)
    np.testing.assert_array_equal(result.values["randomization_spearman"], 1.0)

    # A trained model's maps change: well below 1 (Adebayo et al. read the check by eye; the
    # randomized network's maps keep some of the image's layout, hence no lower bar).
    keras.utils.set_random_seed(0)
    model = own_model("trained")
    x, y = _train_left_right(model)
    assert (np.argmax(model.predict(x, verbose=0), axis=1) == y).all()
    for method in ("gradcam", "gradcam++"):
        one = explained(model, x, method, cam_explain(method, "target"), classes=y)
        result = scorer.score(batch_of(x), one)
        spearmans = result.values["randomization_spearman"]
        assert np.isfinite(spearmans).sum() >= 4, method
        assert np.nanmean(spearmans) < 0.7, method
        assert np.nanmean(result.values["randomization_ssim"]) < 0.7, method


def test_extras_summary_markdown_and_figures(unet, images, tmp_path):
    scorer = RandomizationScore(Config())
    extras = []
    for first_id, method in ((0, "gradcam"), (0, "gradcam++"), (4, "gradcam")):
        batch = batch_of(images, first_id)
        result = scorer.score(batch, explained(unet, images, method, cam_explain(method)))
        json.dumps(result.extra, allow_nan=False)  # saved with the results as JSON
        extras.append(("unet", method, result.extra))
        assert set(result.values) == {"randomization_spearman", "randomization_ssim",
                                      "randomization_encoder_spearman", "randomization_decoder_spearman"}
        np.testing.assert_allclose(result.values["randomization_encoder_spearman"],
                                   np.array(result.extra["spearman"]["encoder"], float), atol=1e-6)
        full = result.extra["spearman"][FULL]
        np.testing.assert_allclose(result.values["randomization_spearman"], np.array(full, float), atol=1e-6)
        # The grid: image 0, the grid's method (gradcam++ is a column), its maps along the cascade.
        has_grid = first_id == 0 and method == "gradcam++"
        assert ("grid" in result.extra) == has_grid
        if has_grid:
            grid = result.extra["grid"]
            assert set(grid["maps"]) == {TRAINED, *UNET_STEPS, FULL}
            assert np.asarray(grid["maps"][TRAINED]).shape == (SIZE, SIZE)
    summary = scorer.summarize(extras)
    curve = summary["randomization_cascade"]["unet"]["gradcam"]
    assert curve["steps"] == [TRAINED, *UNET_STEPS, FULL]
    assert curve["independent"] == [f"only {step}" for step in UNET_STEPS]
    assert curve["parts"] == ["encoder", "decoder"]
    assert curve["spearman"][FULL]["n"] + curve["nonfinite"][FULL] == 2 * len(images)
    assert curve["layers"]["dec1"] == 5
    assert summary["_randomization_grid"]["unet"]["method"] == "gradcam++"
    json.dumps(summary, allow_nan=False)

    lines = scorer.markdown(summary, ["unet"], ["gradcam", "gradcam++"])
    assert lines[0] == "### Model-parameter randomization (cascade, independent, U-Net halves)"
    assert "| step (layers) | gradcam | gradcam++ |" in lines
    assert sum(line.startswith("| dec1 (5) |") for line in lines) == 1
    assert sum(line.startswith("| only dec1 (5) |") for line in lines) == 1
    assert any(line.startswith("| all-zero or constant randomized maps") for line in lines)
    scorer.figures(summary, str(tmp_path), ["unet"], ["gradcam", "gradcam++"])
    read_figure(tmp_path / "randomization_curves.png")
    read_figure(tmp_path / "randomization_grid.png")


def test_registered_with_its_settings():
    assert SCORERS["randomization"] is RandomizationScore
    scorer = RandomizationScore(type("C", (), {"randomization_images": 7})())
    assert scorer.needs == ("model",)
    assert scorer.max_images == 7
    assert scorer.settings() == {"randomization_images": 7, "randomization_seed": SEED}
    assert RandomizationScore(object()).max_images == 25


def test_empty_randomized_maps_count_as_spearman_0_and_are_counted(unet, images):
    maps = edge_maps(images)

    def explain(model, images_, classes):
        # The trained model's map, except an all-zero one for the randomized copy's second image.
        out = maps.copy()
        if model is not unet:
            out[1] = 0.0
        return out, out, metrics.map_status(out)

    one = explained(unet, images, "edges", explain)
    one = one._replace(status=np.array(["ok", "ok", "ok", "zero"]))  # the trained map of image 3 is undefined
    result = RandomizationScore(Config()).score(batch_of(images), one)
    # SSIM against the all-zero map: the formula with mu_b = var_b = cov = 0.
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2
    side = 11
    offsets = np.arange(side) - (side - 1) / 2.0
    taps = np.exp(-(offsets**2) / (2 * 1.5**2))
    window = np.outer(taps, taps) / np.outer(taps, taps).sum()
    patches = np.lib.stride_tricks.sliding_window_view(maps[1].astype(np.float64), (side, side))
    mu = np.einsum("ijkl,kl->ij", patches, window)
    var = np.einsum("ijkl,kl->ij", patches**2, window) - mu**2
    expected_ssim = np.mean(c1 * c2 / ((mu**2 + c1) * (var + c2)))
    for step in result.extra["steps"]:
        assert result.extra["spearman"][step] == [1.0, 0.0, 1.0, None]
        assert result.extra["ssim"][step][1] == pytest.approx(expected_ssim, abs=1e-6)
        assert result.extra["empty"][step] == 1 and result.extra["nonfinite"][step] == 0
    assert result.extra["trained_undefined"] == 1
    np.testing.assert_array_equal(np.isnan(result.values["randomization_ssim"]), [False, False, False, True])


def _recording_explain(unet, snapshots):
    """An edge map's explain that records the weights of the model it is asked to explain."""

    def explain(model, images_, classes):
        snapshots.append(_values(model))
        maps = edge_maps(images_)
        return maps, maps, metrics.map_status(maps)

    return explain


def _changed_layers(values, trained):
    """Layers (by name) whose kernel differs from the trained one."""
    return {path.split("/")[0] for path, value in values.items()
            if path.endswith("kernel") and not np.array_equal(value, trained[path])}


def test_independent_and_half_randomizations_keep_every_other_block_trained(unet, images):
    snapshots = []
    one = explained(unet, images[:1], "edges", _recording_explain(unet, snapshots))
    snapshots.clear()
    result = RandomizationScore(Config()).score(batch_of(images[:1]), one)
    trained = _values(unet)
    steps = result.extra["steps"]
    assert steps == ALL_UNET_STEPS
    # "only predictions" is the cascade's first step, not explained again.
    explained_steps = [step for step in steps if step != "only predictions"]
    assert len(snapshots) == len(explained_steps)
    by_step = dict(zip(explained_steps, snapshots))
    blocks = dict(cascade_blocks(unet))
    kernels = {path.split("/")[0] for path in trained if path.endswith("kernel")}
    for block, layers in blocks.items():
        if block == "predictions":
            continue
        values = by_step[f"only {block}"]
        assert _changed_layers(values, trained) == set(layers) & kernels, block
        # Every variable outside the block (BatchNorm statistics included) is the trained one.
        assert all(np.array_equal(v, trained[p]) for p, v in values.items() if p.split("/")[0] not in layers)
    encoder = {layer for name, layers in blocks.items() if name.startswith("enc") or name == "bottleneck"
               for layer in layers}
    decoder = {layer for name, layers in blocks.items() if name.startswith("dec") for layer in layers}
    assert encoder and decoder and not encoder & decoder
    assert _changed_layers(by_step["encoder"], trained) == encoder & kernels
    assert _changed_layers(by_step["decoder"], trained) == decoder & kernels
    for half, kept in (("encoder", decoder | {"predictions"}), ("decoder", encoder | {"predictions"})):
        assert all(np.array_equal(v, trained[p]) for p, v in by_step[half].items() if p.split("/")[0] in kept)
    assert _changed_layers(by_step["dec2"], trained) == set(blocks["predictions"] + blocks["dec1"]
                                                            + blocks["dec2"]) & kernels  # the cascade: cumulative
    # A model with ResNet's stage names has named blocks but no decoder.
    inputs = keras.Input((SIZE, SIZE, 3))
    x = inputs
    for stage in range(1, 6):
        x = keras.layers.Conv2D(2, 3, padding="same", name=f"conv{stage}_conv")(x)
    resnet_like = keras.Model(inputs, keras.layers.Dense(2, name="predictions")(x))
    assert [step for step, _ in cascade_blocks(resnet_like)] == RESNET_STEPS
    assert encoder_decoder_blocks(resnet_like) is None


class Scale(keras.layers.Layer):
    """A layer whose weights have no ``*_initializer`` attribute."""

    def build(self, input_shape):
        self.matrix = self.add_weight(shape=(input_shape[-1], 2), initializer="ones", name="matrix")
        self.offset = self.add_weight(shape=(2,), initializer="zeros", name="offset")

    def call(self, x):
        return x @ self.matrix + self.offset


def test_layers_without_initializers_and_integer_state_are_handled():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="dense")(inputs)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    model = keras.Model(inputs, Scale(name="scale")(x), name="custom")
    model.get_layer("scale").offset.assign([1.0, 3.0])
    before = [w.copy() for w in model.get_weights()]
    copy = RandomizedCopy(model)
    assert copy.layer_names == ["dense", "scale"]  # the dropout's seed state is not a weight
    copy.randomize_all()
    matrix = copy.model.get_layer("scale").matrix.numpy()
    assert matrix.std() > 0  # He normal, not the trained ones
    offset = copy.model.get_layer("scale").offset.numpy()
    assert not np.array_equal(offset, [1.0, 3.0])  # a normal of the trained values' mean and spread
    again = RandomizedCopy(model)
    again.randomize_all()
    np.testing.assert_array_equal(again.model.get_layer("scale").matrix.numpy(), matrix)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
