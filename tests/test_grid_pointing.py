"""The grid pointing game (kerascam/evaluation/scores/grid_pointing.py): hand cases and its chance level."""

import functools

import numpy as np
import pytest

from kerascam import metrics
from kerascam.evaluation.baselines import edge_maps
from kerascam.evaluation.maps import _explain_again
from kerascam.evaluation.scorer import Batch, Explained
from kerascam.evaluation.scores import grid_pointing
from kerascam.evaluation.scores.grid_pointing import (
    GridPointingGame,
    cell_slices,
    grid_scores,
    make_mosaic,
    plan_mosaics,
)

SIZE = 32


def test_a_map_equal_to_a_cell_scores_1_and_a_uniform_map_0_25():
    maps = np.zeros((4, SIZE, SIZE))
    for cell, (rows, cols) in enumerate(cell_slices(SIZE, SIZE)):
        maps[cell, rows, cols] = 1.0
    share, hit = grid_scores(maps, [0, 1, 2, 3])
    assert share.tolist() == [1.0] * 4 and hit.tolist() == [1.0] * 4
    share, hit = grid_scores(maps, [1, 2, 3, 0])
    assert share.tolist() == [0.0] * 4 and hit.tolist() == [0.0] * 4
    uniform = np.full((4, SIZE, SIZE), 0.7)
    share, hit = grid_scores(uniform, [0, 1, 2, 3])
    assert share.tolist() == [0.25] * 4
    assert hit.sum() == 1.0  # four cells tie: one drawn, the same for the same map, so 1 of the 4 cells hits


def test_hand_masses_and_odd_sides():
    # Masses 1, 2, 3, 4 in the cells of a 5x3 map (rows 0-1 | 2-4, cols 0 | 1-2).
    maps = np.zeros((1, 5, 3))
    maps[0, 0, 0] = 1.0
    maps[0, 1, 2] = 2.0
    maps[0, 4, 0] = 3.0
    maps[0, 2, 1] = 4.0
    assert grid_scores(maps, [3]) == (pytest.approx([0.4]), [1.0])
    assert grid_scores(maps, [0]) == (pytest.approx([0.1]), [0.0])
    assert np.isnan(grid_scores(np.zeros((1, 4, 4)), [0])[0]).all()  # no mass: undefined


def test_plans_hold_four_classes_with_the_target_in_its_cell_and_are_reproducible():
    labels = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    ids = np.arange(100, 108)
    plans = plan_mosaics(ids, labels)
    for row, (cell, rows) in enumerate(plans):
        assert rows[cell] == row and len(set(labels[rows])) == 4
    assert plans == plan_mosaics(ids, labels)
    assert {cell for cell, _ in plan_mosaics(np.arange(200), np.arange(200) % 5)} == {0, 1, 2, 3}
    assert plan_mosaics([0, 1, 2, 3], [0, 1, 2, 2]) == [None] * 4  # three classes: no mosaic


def test_make_mosaic_downscales_each_image_into_its_quadrant():
    colours = [np.full((SIZE, SIZE, 3), 40.0 * (k + 1), np.float32) for k in range(4)]
    colours[0][::2, :, 0] = 0.0  # stripes average to half under INTER_AREA's 2x2 box
    mosaic = make_mosaic(colours, SIZE, SIZE)
    assert mosaic.shape == (SIZE, SIZE, 3)
    for k, (rows, cols) in enumerate(cell_slices(SIZE, SIZE)):
        expected = np.full((SIZE // 2, SIZE // 2, 3), 40.0 * (k + 1))
        if k == 0:
            expected[..., 0] = 20.0
        np.testing.assert_allclose(mosaic[rows, cols], expected)
    with pytest.raises(ValueError, match="takes 4 images"):
        make_mosaic(colours[:3], SIZE, SIZE)


def _rectangles(n, seed):
    """Random images: a grey background and a few rectangles of random colour and size."""
    rng = np.random.default_rng(seed)
    images = np.full((n, SIZE, SIZE, 3), 128.0, np.float32)
    for image in images:
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, SIZE - 6, 2)
            h, w = rng.integers(3, 12, 2)
            image[y:y + h, x:x + w] = rng.integers(0, 256, 3)
    return images


def test_edge_map_of_a_mosaic_sits_at_chance():
    # Four cells of equal edge content (one image, mirrored so that the mosaic is symmetric): exactly 0.25.
    image = _rectangles(1, seed=1)[0]
    mosaic = make_mosaic([image, image[:, ::-1], image[::-1], image[::-1, ::-1]], SIZE, SIZE)
    np.testing.assert_array_equal(mosaic, mosaic[::-1, ::-1])
    edges = edge_maps(mosaic[None])
    assert edges.sum() > 0
    share, _ = grid_scores(np.repeat(edges, 4, axis=0), [0, 1, 2, 3])
    np.testing.assert_allclose(share, 0.25, atol=1e-6)
    # Cells of random images of exchangeable edge content, the target's cell drawn by the plan:
    # the edge map's share and hit rate lie at 0.25 within their 95 % intervals.
    images = _rectangles(120, seed=2)
    labels = np.arange(120) % 5
    plans = plan_mosaics(np.arange(120), labels)
    mosaics = np.stack([make_mosaic([images[r] for r in rows], SIZE, SIZE) for _, rows in plans])
    share, hit = grid_scores(edge_maps(mosaics), [cell for cell, _ in plans])
    ci = metrics.mean_confidence_interval(share)
    assert ci.low < 0.25 < ci.high and ci.high - ci.low < 0.1
    rate = metrics.wilson_interval(hit)
    assert rate.low < 0.25 < rate.high


class _Config:
    grid_pointing_images = 6


@pytest.fixture(scope="module")
def model():
    from kerascam.models import build_model

    return build_model("unet", SIZE, 5, unet_filters=4)


def _explained(model, column, images):
    explain = functools.partial(_explain_again, column=column, max_N=None, batch_size=None, backend="kerascam")
    maps, native, status = explain(model, images, np.zeros(len(images), np.int64))
    return Explained(maps, native, status, np.zeros(len(images), np.int64), "unet", model, column, explain)


def test_scorer_scores_trained_and_randomized_model_and_model_free_maps(model):
    images = _rectangles(8, seed=3)
    batch = Batch(np.arange(8), images, np.array([0, 1, 2, 3, 4, 0, 1, 2]))
    scorer = GridPointingGame(_Config())
    scorer.begin_batch(batch, {})
    assert sorted(scorer._plans) == list(range(6))  # the first grid_pointing_images only
    chance = scorer.chance(batch)
    np.testing.assert_array_equal(chance["grid_share"], [0.25] * 6 + [np.nan] * 2)
    rows = batch.ids < 6
    result = scorer.score(batch.take(rows), _explained(model, "gradcam", images).take(rows))
    for name in ("grid_share", "grid_share_randomized"):
        values = np.asarray(result[name], float)
        assert values.shape == (6,) and np.all((values >= 0) & (values <= 1) | np.isnan(values)), name
    assert set(np.asarray(result["grid_hit"], float)[np.isfinite(result["grid_hit"])]) <= {0.0, 1.0}
    # The randomized copy is another network: its maps differ from the trained model's.
    assert not np.allclose(result["grid_share"], result["grid_share_randomized"], equal_nan=True)
    edges = scorer.score(batch.take(rows), _explained(model, "edges", images).take(rows))
    mosaics = np.stack([scorer._plans[i][1] for i in range(6)])
    expected, _ = grid_scores(edge_maps(mosaics), [scorer._plans[i][0] for i in range(6)])
    np.testing.assert_allclose(edges["grid_share"], expected)
    np.testing.assert_array_equal(edges["grid_share_randomized"], edges["grid_share"])  # a model-free map


class _ThreeClasses:
    """What the scorer reads of a model before explaining: its output shape."""

    name = "unet"
    output_shape = (None, 3)


def test_a_model_with_fewer_than_four_classes_is_skipped_with_one_line(capsys):
    images = _rectangles(4, seed=4)
    batch = Batch(np.arange(4), images, np.array([0, 1, 2, 0]))
    scorer = GridPointingGame(_Config())
    scorer.begin_batch(batch, {})
    grid_pointing._TOLD.discard(("grid_pointing", "unet"))
    maps = np.zeros((4, SIZE, SIZE), np.float32)
    one = Explained(maps, maps, metrics.map_status(maps), np.zeros(4, np.int64), "unet", _ThreeClasses(), "gradcam",
                    None)  # never called: the model is skipped before any explanation
    for _ in range(2):
        result = scorer.score(batch, one)
    assert result["grid_share"] == [None] * 4
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["score 'grid_pointing' skipped for 'unet': it has 3 classes and a 2x2 mosaic needs 4 different ones"]
