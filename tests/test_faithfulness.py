"""Deletion and insertion (kerascam/evaluation/scores/faithfulness.py) on models whose answer is known.

The model of most tests has two logits: logit 0 is ``weight`` times the sum of
the pixels (all channels) inside a region, logit 1 is 0, so the probability of
class 0 is ``sigmoid(weight * region sum)`` and every curve can be written
down from the pixels alone.
"""

import json
import types

import keras
import numpy as np
import pytest
import scipy.ndimage

from kerascam.evaluation.scorer import SCORERS, Batch, Explained
from kerascam.evaluation.scores import faithfulness as faith

SIZE = 8
REGION = np.zeros((SIZE, SIZE), bool)
REGION[2:6, 3:7] = True  # 16 pixels, not aligned with raster order
VALUE = 100.0  # of the constant image
WEIGHT = 4.0 / (3 * VALUE * REGION.sum())  # logit 0 of the constant image: 4


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def region_model(activation=None):
    inputs = keras.Input((SIZE, SIZE, 3))
    features = keras.layers.Flatten(name="flatten")(inputs)
    outputs = keras.layers.Dense(2, activation=activation, name="predictions")(features)
    model = keras.Model(inputs, outputs, name="region")
    kernel = np.zeros((SIZE * SIZE * 3, 2), np.float32)
    kernel[:, 0] = WEIGHT * np.repeat(REGION.ravel(), 3)  # Flatten keeps (row, column, channel) order
    model.get_layer("predictions").set_weights([kernel, np.zeros(2, np.float32)])
    return model


@pytest.fixture(scope="module")
def model():
    return region_model()


def constant_image():
    return np.full((1, SIZE, SIZE, 3), VALUE, np.float32)


def test_pixel_order_is_highest_first_with_ties_in_raster_order():
    maps = np.array([[[1.0, 3.0, 0.0], [3.0, 0.0, 2.0]]])
    np.testing.assert_array_equal(faith.pixel_order(maps), [[1, 3, 5, 0, 2, 4]])
    np.testing.assert_array_equal(faith.pixel_ranks(maps), [[[3, 0, 4], [1, 5, 2]]])


def test_pixels_changed_rounds_halves_up():
    np.testing.assert_array_equal(faith.pixels_changed(3, 10), [0, 3, 7, 10])
    np.testing.assert_array_equal(faith.pixels_changed(4, 10), [0, 3, 5, 8, 10])
    np.testing.assert_array_equal(faith.pixels_changed(16, 64), np.arange(0, 65, 4))


def test_area_under_curve_of_known_curves():
    np.testing.assert_allclose(faith.area_under_curve([1.0, 0.5, 0.0]), 0.5)
    np.testing.assert_allclose(faith.area_under_curve([[0.0, 1.0], [1.0, 1.0]]), [0.5, 1.0])
    np.testing.assert_allclose(faith.area_under_curve([0.0, 1.0, 0.0, 1.0]), 0.5)
    np.testing.assert_allclose(faith.area_under_curve(1 - np.linspace(0, 1, 17)), 0.5)
    assert np.isnan(faith.area_under_curve([1.0, np.nan, 0.0]))
    with pytest.raises(ValueError, match="two points"):
        faith.area_under_curve([1.0])


def test_deletion_in_closed_form_map_equal_to_the_region_and_inverted(model):
    steps = 16  # 4 pixels per step
    removed = 4 * np.arange(steps + 1)
    region = REGION.sum()
    image = constant_image()
    maps = np.stack([REGION, ~REGION]).astype(np.float32)
    deletion, insertion = faith.deletion_insertion_curves(
        model, np.repeat(image, 2, axis=0), maps, [0, 0], steps=steps
    )
    logit_per_pixel = 3 * WEIGHT * VALUE
    # The region's pixels go first: its sum falls to 0 after 4 steps.
    expected_region = sigmoid(logit_per_pixel * np.maximum(region - removed, 0))
    # The 48 other pixels go first: the region is untouched for 12 steps.
    expected_inverted = sigmoid(logit_per_pixel * np.minimum(region, SIZE * SIZE - removed))
    np.testing.assert_allclose(deletion[0], expected_region, rtol=1e-5)
    np.testing.assert_allclose(deletion[1], expected_inverted, rtol=1e-5)
    assert deletion[0, 0] == pytest.approx(sigmoid(4.0), rel=1e-6)
    assert deletion[0, -1] == pytest.approx(0.5, rel=1e-6)
    auc = faith.area_under_curve(deletion)
    np.testing.assert_allclose(auc, faith.area_under_curve(np.stack([expected_region, expected_inverted])), rtol=1e-5)
    assert auc[0] < auc[1] - 0.3
    # A constant image blurs to itself: insertion changes nothing.
    np.testing.assert_allclose(insertion, sigmoid(4.0), rtol=1e-5)


def test_insertion_in_closed_form_from_the_blurred_image(model):
    rng = np.random.default_rng(0)
    # A bright region on a dark background: the blur spreads the region out.
    images = rng.uniform(0, 40, (2, SIZE, SIZE, 3)) + 60 * REGION[:, :, None]
    images = images.astype(np.float32)
    sigma, steps = 1.5, 8  # 8 pixels per step
    maps = np.stack([REGION, ~REGION]).astype(np.float32)
    deletion, insertion = faith.deletion_insertion_curves(
        model, images, maps, [0, 0], steps=steps, blur_sigma=sigma, deletion_baseline=[10.0, 20.0, 30.0]
    )
    flat_region = REGION.ravel()
    raster = np.arange(SIZE * SIZE)
    orders = [np.concatenate([raster[flat_region], raster[~flat_region]]),
              np.concatenate([raster[~flat_region], raster[flat_region]])]
    for i, order in enumerate(orders):
        image = images[i].reshape(-1, 3).astype(np.float64)
        blurred = scipy.ndimage.gaussian_filter(images[i].astype(np.float64), (sigma, sigma, 0), mode="reflect")
        blurred = blurred.reshape(-1, 3)
        for k in range(steps + 1):
            changed = np.zeros(SIZE * SIZE, bool)
            changed[order[: 8 * k]] = True
            inserted = np.where(changed[:, None], image, blurred)
            deleted = np.where(changed[:, None], [10.0, 20.0, 30.0], image)
            assert insertion[i, k] == pytest.approx(sigmoid(WEIGHT * inserted[flat_region].sum()), rel=1e-4)
            assert deletion[i, k] == pytest.approx(sigmoid(WEIGHT * deleted[flat_region].sum()), rel=1e-4)
    auc = faith.area_under_curve(insertion)
    assert auc[0] > auc[1] + 0.03


def test_gaussian_blur_matches_scipy():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (2, 9, 7, 3)).astype(np.float32)
    for sigma in (0.0, 0.8, 1.5):
        blurred = faith.gaussian_blur(images, faith.gaussian_kernel(sigma)).numpy()
        expected = scipy.ndimage.gaussian_filter(images.astype(np.float64), (0, sigma, sigma, 0), mode="reflect")
        np.testing.assert_allclose(blurred, expected, atol=1e-3)
    assert faith.blur_sigma_for((48, 64)) == 3.0


def test_one_trace_for_every_batch_size_step_count_and_blur(model):
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
    maps = rng.random((3, SIZE, SIZE)).astype(np.float32)
    forward = faith.perturbed_forward(model)
    assert faith.perturbed_forward(model) is forward
    whole = faith.deletion_insertion_curves(model, images, maps, [0, 1, 0], steps=16, batch_size=64)
    # A batch of 5 cuts maps apart: the curves must not change.
    split = faith.deletion_insertion_curves(model, images, maps, [0, 1, 0], steps=16, batch_size=5)
    faith.deletion_insertion_curves(model, images[:2], maps[:2], [1, 1], steps=3, blur_sigma=0.5)
    np.testing.assert_allclose(split, whole, rtol=1e-6)
    assert forward.tracing_count == 1
    # Class 1's logit is 0, class 0's grows with the region: p1 = 1 - p0.
    np.testing.assert_allclose(whole[0][1], 1 - faith.deletion_insertion_curves(
        model, images[1:2], maps[1:2], [0], steps=16)[0][0], rtol=1e-5)


def test_softmax_head_gives_the_same_probabilities(model):
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    maps = rng.random((2, SIZE, SIZE)).astype(np.float32)
    softmax_model = region_model(activation="softmax")
    expected = faith.deletion_insertion_curves(model, images, maps, [0, 0], steps=4)
    got = faith.deletion_insertion_curves(softmax_model, images, maps, [0, 0], steps=4)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bad_arguments_are_refused(model):
    images = constant_image()
    maps = np.ones((1, SIZE, SIZE), np.float32)
    with pytest.raises(ValueError, match="must agree"):
        faith.deletion_insertion_curves(model, images, maps[:, :4], [0])
    with pytest.raises(ValueError, match="finite"):
        faith.deletion_insertion_curves(model, images, maps * np.nan, [0])
    with pytest.raises(ValueError, match="steps"):
        faith.deletion_insertion_curves(model, images, maps, [0], steps=0)
    with pytest.raises(ValueError, match="wider than"):
        faith.deletion_insertion_curves(model, images, maps, [0], blur_sigma=5.0)


def explained(model, maps, status, classes):
    return Explained(
        model_name="region", model=model, method="map", maps=maps, native=maps, status=np.asarray(status),
        classes=np.asarray(classes), explain=None,
    )


def test_scorer_fields_settings_and_extra(model):
    assert SCORERS["faithfulness"] is faith.FaithfulnessScorer
    scorer = faith.FaithfulnessScorer(types.SimpleNamespace(faithfulness_steps=16, faithfulness_images=3))
    assert scorer.max_images == 3
    assert scorer.settings() == {
        "faithfulness_images": 3, "faithfulness_steps": 16, "faithfulness_deletion_baseline": 0.0,
        "faithfulness_blur_sigma_per_side": 0.0625,
    }
    assert faith.FaithfulnessScorer(types.SimpleNamespace()).steps == faith.DEFAULT_STEPS
    fields = {f.name: f for f in scorer.fields}
    assert set(fields) == {"deletion_auc", "insertion_auc"}
    assert "lower is better" in fields["deletion_auc"].description
    assert "higher is better" in fields["insertion_auc"].description
    assert all(f.paired and not f.percent for f in fields.values())

    images = np.repeat(constant_image(), 2, axis=0)
    batch = Batch(ids=np.arange(2), images=images, labels=np.zeros(2, np.int64))
    maps = np.stack([REGION, np.zeros_like(REGION)]).astype(np.float32)
    result = scorer.score(batch, explained(model, maps, ["ok", "zero"], [0, 0]))
    expected = faith.deletion_insertion_curves(model, images[:1], maps[:1], [0])
    np.testing.assert_allclose(result.values["deletion_auc"][0], faith.area_under_curve(expected[0])[0], rtol=1e-6)
    np.testing.assert_allclose(result.values["insertion_auc"][0], sigmoid(4.0), rtol=1e-5)
    assert np.isnan(result.values["deletion_auc"][1]) and np.isnan(result.values["insertion_auc"][1])
    assert result.extra["deletion"][1] is None
    np.testing.assert_allclose(result.extra["deletion"][0], expected[0][0], atol=1e-6)
    assert json.loads(json.dumps(result.extra)) == result.extra


def test_summarize_markdown_and_figure(tmp_path):
    scorer = faith.FaithfulnessScorer(types.SimpleNamespace(faithfulness_steps=2))
    extras = [
        ("unet", "gradcam", {"deletion": [[1.0, 0.5, 0.0], None], "insertion": [[0.0, 0.5, 1.0], None]}),
        ("unet", "gradcam", {"deletion": [[0.8, 0.3, 0.2]], "insertion": [[0.2, 0.7, 0.8]]}),
        ("vgg16", "gradcam", {"deletion": [[0.6, 0.6, 0.6]], "insertion": [[0.4, 0.4, 0.4]]}),
    ]
    summary = scorer.summarize(extras)
    curves = summary["faithfulness_curves"]
    assert curves["x"] == [0.0, 0.5, 1.0]
    unet = curves["curves"]["unet"]["gradcam"]
    np.testing.assert_allclose(unet["deletion"]["mean"], [0.9, 0.4, 0.1])
    np.testing.assert_allclose(unet["insertion"]["mean"], [0.1, 0.6, 0.9])
    assert unet["deletion"]["n"] == 2
    interval = faith.metrics.mean_confidence_interval([1.0, 0.8])
    assert unet["deletion"]["low"][0] == pytest.approx(interval.low, abs=1e-6)
    vgg = curves["curves"]["vgg16"]["gradcam"]
    assert vgg["deletion"]["n"] == 1 and vgg["deletion"]["low"] == [None, None, None]
    json.dumps(summary, allow_nan=False)

    lines = scorer.markdown(summary, ["unet", "vgg16"], ["gradcam"])
    assert "| unet | gradcam | 2 | 0.900 / 0.400 / 0.100 | 0.100 / 0.600 / 0.900 |" in "\n".join(lines)
    scorer.figures(summary, str(tmp_path), ["unet", "vgg16"], ["gradcam"])
    assert (tmp_path / "faithfulness.png").stat().st_size > 0
    assert scorer.summarize([]) == {} and scorer.markdown({}, ["unet"], ["gradcam"]) == []
