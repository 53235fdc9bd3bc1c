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

from conftest import read_figure
from kerascam import metrics
from kerascam.evaluation import baselines, perturbation
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


def raster_ordered(mask):
    """``mask`` plus a raster-order slope below 1: no ties, the mask's pixels first, each part in raster order."""
    slope = 0.5 * (1.0 - np.arange(mask.size) / mask.size).reshape(mask.shape)
    return (mask + slope).astype(np.float32)


def test_pixel_order_is_highest_first_and_breaks_ties_at_random_reproducibly():
    maps = np.array([[[1.0, 3.0, 0.0], [3.0, 0.0, 2.0]]])  # 3.0 at 1 and 3, 0.0 at 2 and 4
    orders = {tuple(perturbation.pixel_order(maps, seeds=[s])[0]) for s in range(20)}
    assert orders == {(1, 3, 5, 0, 2, 4), (3, 1, 5, 0, 2, 4), (1, 3, 5, 0, 4, 2), (3, 1, 5, 0, 4, 2)}
    order = perturbation.pixel_order(maps, seeds=[7], draw=2)
    np.testing.assert_array_equal(perturbation.pixel_order(maps, seeds=[7], draw=2), order)
    np.testing.assert_array_equal(perturbation.pixel_ranks(maps, seeds=[7], draw=2).ravel()[order[0]], np.arange(6))
    with pytest.raises(ValueError, match="seeds"):
        perturbation.pixel_order(maps, seeds=[-1])


def test_a_plateau_is_not_taken_in_raster_order_and_the_seed_reproduces_it():
    # A coarse map: one bright 2x2 block, the other 60 pixels on one plateau.
    plateau = np.zeros((1, SIZE, SIZE), np.float32)
    plateau[0, :2, :2] = 1.0
    order = perturbation.pixel_order(plateau, seeds=[3])[0]
    assert sorted(order[:4]) == [0, 1, SIZE, SIZE + 1]
    raster = np.array([p for p in range(SIZE * SIZE) if p not in (0, 1, SIZE, SIZE + 1)])
    assert sorted(order[4:]) == raster.tolist()
    assert not np.array_equal(order[4:], raster)
    np.testing.assert_array_equal(perturbation.pixel_order(plateau, seeds=[3])[0], order)
    assert not np.array_equal(perturbation.pixel_order(plateau, seeds=[3], draw=1)[0], order)
    assert not np.array_equal(perturbation.pixel_order(plateau, seeds=[4])[0], order)
    # Counts 4 and 64 cut nothing; 2 cuts the bright block, 10 the plateau, 0 changes nothing.
    np.testing.assert_array_equal(perturbation.cut_plateaus(plateau, order[None], [0, 2, 4, 10, 64]),
                                  [[False, True, False, True, False]])
    # At 2, 2 of the block's 4 pixels are up to the tie-break; at 10, 6 of the plateau's 60.
    np.testing.assert_array_equal(perturbation.cut_plateaus(plateau, order[None], [2, 10, 60], min_pixels=3),
                                  [[False, True, True]])
    np.testing.assert_array_equal(perturbation.cut_plateaus(plateau, order[None], [10, 58], min_pixels=7), [[False, False]])


def test_plateau_steps_are_the_mean_over_the_tie_draws(model):
    # On an image that is 0 off the region and VALUE on it, removing c pixels of a
    # flat map leaves sigmoid(3 * WEIGHT * VALUE * (region pixels kept)).
    image = (VALUE * REGION[None, :, :, None] * np.ones(3)).astype(np.float32)
    flat = np.zeros((1, SIZE, SIZE), np.float32)
    steps, draws = 4, 3
    deletion, insertion = faith.deletion_insertion_curves(model, image, flat, [0], steps=steps, seeds=[5],
                                                          tie_draws=draws)
    expected = np.zeros(steps + 1)
    for draw in range(draws):
        order = perturbation.pixel_order(flat, seeds=[5], draw=draw)[0]
        for k, count in enumerate(faith.pixels_changed(steps, SIZE * SIZE)):
            kept = REGION.sum() - REGION.ravel()[order[:count]].sum()
            expected[k] += sigmoid(3 * WEIGHT * VALUE * kept) / draws
    np.testing.assert_allclose(deletion[0], expected, rtol=1e-5)
    one_draw = faith.deletion_insertion_curves(model, image, flat, [0], steps=steps, seeds=[5], tie_draws=1)[0]
    assert not np.allclose(one_draw, deletion)  # the draws differ on this plateau
    assert deletion[0, 0] == insertion[0, -1]  # both the unperturbed image, computed once


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
    maps = np.stack([raster_ordered(REGION), raster_ordered(~REGION)])
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
        blurred = perturbation.gaussian_blur(images, perturbation.gaussian_kernel(sigma)).numpy()
        expected = scipy.ndimage.gaussian_filter(images.astype(np.float64), (0, sigma, sigma, 0), mode="reflect")
        np.testing.assert_allclose(blurred, expected, atol=1e-3)
    assert faith.blur_sigma_for((48, 64)) == 3.0


def test_one_trace_for_every_batch_size_step_count_and_blur():
    model = region_model()
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
    maps = rng.random((3, SIZE, SIZE)).astype(np.float32)
    forward = perturbation.perturbed_forward(model)
    assert perturbation.perturbed_forward(model) is forward
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
        "faithfulness_blur_sigma_per_side": 0.0625, "tie_draws": 3,
    }
    assert faith.FaithfulnessScorer(types.SimpleNamespace()).steps == faith.DEFAULT_STEPS
    with pytest.raises(ValueError, match="tie_draws"):
        faith.FaithfulnessScorer(types.SimpleNamespace(tie_draws=0))
    fields = {f.name: f for f in scorer.fields}
    assert list(fields) == ["deletion_auc", "insertion_auc", "deletion_auc_vs_noise", "insertion_auc_vs_noise"]
    assert "lower is better" in fields["deletion_auc"].description
    assert "higher is better" in fields["insertion_auc"].description
    # Models are compared on the baselined figures only.
    assert [f.name for f in fields.values() if f.paired] == ["deletion_auc_vs_noise", "insertion_auc_vs_noise"]
    assert not any(f.percent for f in fields.values())

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
    # Minus the same model's noise map's score on the same image (seeded by the image id).
    noise = faith.deletion_insertion_curves(model, images, baselines.noise_maps(images), [0, 0], seeds=[0, 1])
    np.testing.assert_allclose(result.values["deletion_auc_vs_noise"][0],
                               result.values["deletion_auc"][0] - faith.area_under_curve(noise[0][0]), atol=1e-6)
    np.testing.assert_allclose(result.values["insertion_auc_vs_noise"][0], sigmoid(4.0) - sigmoid(4.0), atol=1e-5)
    noise_result = scorer.score(batch, explained(model, baselines.noise_maps(images), ["ok", "ok"], [0, 0])._replace(
        method="noise"))
    np.testing.assert_allclose(noise_result.values["deletion_auc"], faith.area_under_curve(noise[0]), rtol=1e-6)
    assert noise_result.values["deletion_auc_vs_noise"] == [None, None]  # 0 by definition: not scored


def test_minus_baseline_on_known_values():
    np.testing.assert_allclose(baselines.minus_baseline([0.3, 0.5, np.nan], [0.1, 0.7, 0.2], False), [0.2, -0.2, np.nan])
    assert baselines.minus_baseline([0.3], [0.1], True) == [None]


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
    interval = metrics.mean_confidence_interval([1.0, 0.8])
    assert unet["deletion"]["low"][0] == pytest.approx(interval.low, abs=1e-6)
    vgg = curves["curves"]["vgg16"]["gradcam"]
    assert vgg["deletion"]["n"] == 1 and vgg["deletion"]["low"] == [None, None, None]
    json.dumps(summary, allow_nan=False)

    lines = scorer.markdown(summary, ["unet", "vgg16"], ["gradcam"])
    assert "| unet | gradcam | 2 | 0.900 / 0.400 / 0.100 | 0.100 / 0.600 / 0.900 |" in "\n".join(lines)
    scorer.figures(summary, str(tmp_path), ["unet", "vgg16"], ["gradcam"])
    read_figure(tmp_path / "faithfulness.png")
    assert scorer.summarize([]) == {} and scorer.markdown({}, ["unet"], ["gradcam"]) == []


# ROAD (kerascam/evaluation/scores/road.py)

from kerascam.evaluation.scores import road  # noqa: E402


def dense_imputation(image, removed):
    """ROAD's equations written out pixel by pixel and solved densely: the reference."""
    height, width, _ = image.shape
    unknown = [(r, c) for r in range(height) for c in range(width) if removed[r, c]]
    index = {p: i for i, p in enumerate(unknown)}
    system = np.zeros((len(unknown), len(unknown)))
    right = np.zeros((len(unknown), image.shape[2]))
    for i, (r, c) in enumerate(unknown):
        for dr, dc, weight in road.NEIGHBOURS:
            q = (r + dr, c + dc)
            if not (0 <= q[0] < height and 0 <= q[1] < width):
                continue
            system[i, i] += weight
            if q in index:
                system[i, index[q]] -= weight
            else:
                right[i] += weight * image[q]
    filled = image.astype(np.float64).copy()
    filled[removed] = np.linalg.solve(system, right)
    return filled


def test_linear_imputation_keeps_linear_images_and_solves_roads_equations():
    rows, columns = np.mgrid[0:10, 0:12]
    ramp = np.stack([2 * rows + 3 * columns, rows - columns, np.full_like(rows, 5)], axis=-1).astype(np.float32)
    hole = np.zeros((10, 12), bool)
    hole[3:7, 2:9] = True  # inside: every neighbour is in the image, so a plane is its own mean
    np.testing.assert_allclose(road.linear_imputation(ramp, hole), ramp, atol=1e-4)
    rng = np.random.default_rng(4)
    image = rng.uniform(0, 255, (7, 9, 3))
    removed = rng.random((7, 9)) < 0.6
    removed[0, :] = True  # along the border too
    imputed = road.linear_imputation(image, removed)
    np.testing.assert_allclose(imputed, dense_imputation(image, removed), atol=1e-3)
    np.testing.assert_array_equal(imputed[~removed], image[~removed].astype(np.float32))
    noisy = road.linear_imputation(image, removed, noise=2.0, rng=np.random.default_rng(0))
    assert 1.5 < np.std(noisy[removed] - imputed[removed]) < 2.5
    np.testing.assert_array_equal(noisy[~removed], imputed[~removed])
    with pytest.raises(ValueError, match="at least one kept pixel"):
        road.linear_imputation(image, np.ones((7, 9), bool))


def test_road_curves_against_the_dense_reference(model):
    rng = np.random.default_rng(5)
    images = (rng.uniform(0, 40, (1, SIZE, SIZE, 3)) + 60 * REGION[:, :, None]).astype(np.float32)
    images = np.repeat(images, 2, axis=0)
    maps = np.stack([raster_ordered(REGION), raster_ordered(~REGION)])
    fractions = (0.25, 0.5, 0.75)  # 16, 32, 48 pixels
    morf, lerf = road.road_curves(model, images, maps, [0, 0], fractions=fractions, noise=0.0, batch_size=4)
    raster = np.arange(SIZE * SIZE)
    flat_region = REGION.ravel()
    orders = [np.concatenate([raster[flat_region], raster[~flat_region]]),
              np.concatenate([raster[~flat_region], raster[flat_region]])]
    for i, order in enumerate(orders):
        for j, count in enumerate((16, 32, 48)):
            for curve, taken in ((morf, order[:count]), (lerf, order[SIZE * SIZE - count:])):
                removed = np.zeros(SIZE * SIZE, bool)
                removed[taken] = True
                filled = dense_imputation(images[i], removed.reshape(SIZE, SIZE))
                expected = sigmoid(WEIGHT * filled[REGION].sum())
                assert curve[i, j] == pytest.approx(expected, rel=1e-4)
    # The region map removes the bright region first: MoRF falls, LeRF keeps it.
    assert morf[0].mean() < morf[1].mean() - 0.1
    assert lerf[0].mean() > lerf[1].mean() + 0.1


def test_road_noise_is_seeded_per_image():
    model = region_model()
    rng = np.random.default_rng(6)
    images = rng.uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
    maps = rng.random((3, SIZE, SIZE)).astype(np.float32)
    whole = road.road_curves(model, images, maps, [0, 1, 0], seeds=[7, 8, 9], fractions=(0.5,))
    alone = road.road_curves(model, images[1:], maps[1:], [1, 0], seeds=[8, 9], fractions=(0.5,), batch_size=1)
    np.testing.assert_allclose(np.asarray(whole)[:, 1:], alone, rtol=1e-6)
    quiet = road.road_curves(model, images, maps, [0, 1, 0], noise=0.0, fractions=(0.5,))
    assert not np.allclose(whole, quiet)
    assert perturbation.perturbed_forward(model).tracing_count == 1  # batches of 6 and 1 images, one trace
    with pytest.raises(ValueError, match="fractions"):
        road.road_curves(model, images, maps, [0, 1, 0], fractions=(0.0, 0.5))


def hot_pixel_model(weight):
    """Logit 0 is ``weight`` times the channel sum of one pixel, `HOT`; logit 1 is 0."""
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Dense(2, name="predictions")(keras.layers.Flatten(name="flatten")(inputs))
    model = keras.Model(inputs, outputs, name="hot")
    kernel = np.zeros((SIZE * SIZE * 3, 2), np.float32)
    kernel[3 * (HOT[0] * SIZE + HOT[1]) + np.arange(3), 0] = weight
    model.get_layer("predictions").set_weights([kernel, np.zeros(2, np.float32)])
    return model


HOT = (3, 4)
BACKGROUND, BRIGHTER = 50.0, 100.0  # the image: BACKGROUND everywhere, BACKGROUND + BRIGHTER at HOT


def hot_pixel_case():
    image = np.full((1, SIZE, SIZE, 3), BACKGROUND, np.float32)
    image[0, HOT[0], HOT[1]] += BRIGHTER
    perfect = np.zeros((1, SIZE, SIZE), np.float32)
    perfect[0, HOT[0], HOT[1]] = 1.0
    # logit 0: 1 on the background's value, 3 on the hot pixel's own.
    return hot_pixel_model(1.0 / (3 * BACKGROUND)), image, perfect


def test_road_combined_score_of_a_perfect_map_in_closed_form():
    # The perfect map ranks the hot pixel first. MoRF removes it at every
    # fraction, and every kept pixel around the hole is BACKGROUND, so the
    # imputation (noise 0) fills BACKGROUND: p = sigmoid(1). LeRF never removes
    # it (it is ranked first, fractions <= 0.9): p = sigmoid(3). Ties of the
    # zero plateau do not matter. Combined: (sigmoid(3) - sigmoid(1)) / 2.
    model, image, perfect = hot_pixel_case()
    morf, lerf = road.road_curves(model, image, perfect, [0], noise=0.0)
    np.testing.assert_allclose(morf, sigmoid(1.0), rtol=1e-5)
    np.testing.assert_allclose(lerf, sigmoid(3.0), rtol=1e-5)
    assert road.combined_score(morf, lerf)[0] == pytest.approx((0.9525741268 - 0.7310585786) / 2, rel=1e-5)
    inverted = road.road_curves(model, image, 1.0 - perfect, [0], noise=0.0)  # the worst map: -0.1108
    assert road.combined_score(*inverted)[0] == pytest.approx(-(0.9525741268 - 0.7310585786) / 2, rel=1e-5)


def test_road_scorer(tmp_path):
    assert SCORERS["road"] is road.RoadScorer
    scorer = road.RoadScorer(types.SimpleNamespace(road_images=4))
    assert scorer.max_images == 4
    assert scorer.settings()["road_noise"] == road.NOISE and scorer.settings()["tie_draws"] == 3
    fields = {f.name: f for f in scorer.fields}
    assert list(fields) == ["road_morf", "road_lerf", "road_combined", "road_morf_vs_noise", "road_lerf_vs_noise",
                            "road_combined_vs_noise"]
    assert [f.name for f in fields.values() if f.paired] == ["road_combined_vs_noise"]
    assert "lower is better" in fields["road_morf"].description
    assert "higher is better" in fields["road_lerf"].description
    model, image, perfect = hot_pixel_case()
    images = np.repeat(image, 2, axis=0)
    batch = Batch(ids=np.array([3, 4]), images=images, labels=np.zeros(2, np.int64))
    maps = np.concatenate([perfect, np.zeros_like(perfect)])
    scorer.noise = 0.0  # exact imputations, for the values by hand
    result = scorer.score(batch, explained(model, maps, ["ok", "constant"], [0, 0]))
    low, high = sigmoid(1.0), sigmoid(3.0)
    assert result.values["road_morf"][0] == pytest.approx(low, rel=1e-5)
    assert result.values["road_lerf"][0] == pytest.approx(high, rel=1e-5)
    assert result.values["road_combined"][0] == pytest.approx((high - low) / 2, rel=1e-5)
    # The noise map of image 3 removes the hot pixel in MoRF at the fractions whose
    # count exceeds its rank r, in LeRF at those whose count reaches 64 - r.
    noise_map = baselines.noise_maps(image)
    rank = int(perturbation.pixel_ranks(noise_map, seeds=[3])[0][HOT])
    counts = np.floor(np.asarray(road.DEFAULT_FRACTIONS) * SIZE * SIZE + 0.5)
    noise_morf = np.where(counts > rank, low, high).mean()
    noise_lerf = np.where(counts >= SIZE * SIZE - rank, low, high).mean()
    assert result.values["road_morf_vs_noise"][0] == pytest.approx(low - noise_morf, abs=1e-5)
    assert result.values["road_lerf_vs_noise"][0] == pytest.approx(high - noise_lerf, abs=1e-5)
    assert result.values["road_combined_vs_noise"][0] == pytest.approx(
        (high - low) / 2 - (noise_lerf - noise_morf) / 2, abs=1e-5)
    assert np.isnan(result.values["road_morf"][1]) and result.extra["morf"][1] is None
    assert np.isnan(result.values["road_combined_vs_noise"][1])
    assert json.loads(json.dumps(result.extra)) == result.extra
    summary = scorer.summarize([("region", "map", result.extra)])
    assert summary["road_curves"]["x"] == list(road.DEFAULT_FRACTIONS)
    np.testing.assert_allclose(summary["road_curves"]["curves"]["region"]["map"]["lerf"]["mean"], high, atol=1e-5)
    assert any(line.startswith("| region | map | 1 |") for line in scorer.markdown(summary, ["region"], ["map"]))
    scorer.figures(summary, str(tmp_path), ["region"], ["map"])
    read_figure(tmp_path / "road.png")
