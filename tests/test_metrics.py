"""Tests of kerascam.metrics on hand-computed cases."""

import math

import numpy as np
import pytest

from kerascam import metrics

HAND_MAP = np.array([[1.0, 2.0], [3.0, 4.0]])


def test_mask_everywhere_nowhere_and_half():
    uniform = np.ones((4, 4))
    half = np.zeros((4, 4), bool)
    half[:, :2] = True
    assert metrics.localization_score(uniform, np.ones((4, 4), bool)) == 1.0
    assert metrics.localization_score(uniform, np.zeros((4, 4), bool)) == 0.0
    assert metrics.localization_score(uniform, half) == 0.5


def test_hand_example_and_scale_invariance():
    mask = np.array([[1, 1], [0, 0]])
    assert metrics.localization_score(HAND_MAP, mask) == pytest.approx(3.0 / 10.0)
    assert metrics.localization_score(HAND_MAP, [[0, 0], [0, 1]]) == pytest.approx(0.4)
    assert metrics.localization_score(7.5 * HAND_MAP, mask) == pytest.approx(0.3)


def test_single_map_gives_a_float64_scalar_and_batch_a_vector():
    single = metrics.localization_score(HAND_MAP, [[1, 0], [0, 1]])
    assert np.ndim(single) == 0 and np.asarray(single).dtype == np.float64
    batch = metrics.localization_score(np.stack([HAND_MAP, 2 * HAND_MAP]), [[1, 0], [0, 1]])
    assert batch.shape == (2,) and batch.dtype == np.float64
    np.testing.assert_allclose(batch, [0.5, 0.5])
    per_map = metrics.localization_score(
        np.stack([HAND_MAP, HAND_MAP]), np.array([[[1, 0], [0, 0]], [[0, 0], [0, 1]]])
    )
    np.testing.assert_allclose(per_map, [0.1, 0.4])


def test_undefined_scores_are_nan_and_counted():
    maps = np.stack([HAND_MAP, np.zeros((2, 2)), np.array([[1.0, np.nan], [0.0, 1.0]])])
    scores, status = metrics.localization_score(maps, np.ones((2, 2), bool), return_status=True)
    assert scores[0] == 1.0
    assert np.isnan(scores[1]) and np.isnan(scores[2])
    assert status.tolist() == ["ok", "zero", "nonfinite"]
    assert np.count_nonzero(status != "ok") == 2
    score, single_status = metrics.localization_score(
        np.zeros((3, 3)), np.ones((3, 3)), return_status=True
    )
    assert math.isnan(score) and single_status == "zero"
    np.testing.assert_array_equal(metrics.score_status(maps), status)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(3, 3\)"):
        metrics.localization_score(HAND_MAP, np.ones((3, 3)))
    with pytest.raises(ValueError, match="one mask per map"):
        metrics.localization_score(np.stack([HAND_MAP] * 2), np.ones((3, 2, 2)))


def test_negative_map_and_non_binary_mask_raise():
    with pytest.raises(ValueError, match="non-negative"):
        metrics.localization_score(-HAND_MAP, np.ones((2, 2)))
    with pytest.raises(ValueError, match="binary"):
        metrics.localization_score(HAND_MAP, np.full((2, 2), 0.5))


def test_reference_mask_threshold():
    reference = np.array([[0.0, 1.0], [2.0, 4.0]])  # normalised: 0, .25, .5, 1
    np.testing.assert_array_equal(metrics.reference_mask(reference), [[False, False], [True, True]])
    np.testing.assert_array_equal(
        metrics.reference_mask(reference, threshold=0.6), [[False, False], [False, True]]
    )
    np.testing.assert_array_equal(metrics.reference_mask(reference, threshold=0.0), np.ones((2, 2)))
    # Only the normalised map matters: scale and offset change nothing.
    shifted = 3 * reference + 7
    np.testing.assert_array_equal(metrics.reference_mask(shifted), metrics.reference_mask(reference))


def test_reference_mask_of_undefined_maps_is_empty_and_reported():
    maps = np.stack([np.array([[0.0, 1.0], [2.0, 4.0]]), np.full((2, 2), 0.3), np.zeros((2, 2))])
    mask, status = metrics.reference_mask(maps, return_status=True)
    assert status.tolist() == ["ok", "constant", "zero"]
    assert mask[0].any() and not mask[1:].any()
    with pytest.raises(ValueError, match="threshold"):
        metrics.reference_mask(maps, threshold=1.5)


def test_pointing_game_hit_miss_and_ties():
    mask = np.array([[True, False], [False, False]])
    maps = np.stack(
        [
            np.array([[5.0, 1.0], [1.0, 1.0]]),  # hit
            np.array([[1.0, 5.0], [1.0, 1.0]]),  # miss
            np.array([[5.0, 5.0], [1.0, 1.0]]),  # tie straddling the border: miss
            np.full((2, 2), 2.0),  # constant: undefined
            np.array([[np.inf, 0.0], [0.0, 0.0]]),  # non-finite: undefined
        ]
    )
    hits, status = metrics.pointing_game(maps, mask)
    assert hits.tolist() == [True, False, False, False, False]
    assert status.tolist() == ["ok", "ok", "ok", "constant", "nonfinite"]
    wide_mask = np.array([[True, True], [False, False]])
    hit, single_status = metrics.pointing_game(maps[2], wide_mask)  # tie fully inside
    assert hit and single_status == "ok"


def test_map_status():
    maps = np.stack([HAND_MAP, np.zeros((2, 2)), np.full((2, 2), 3.0), np.full((2, 2), np.nan)])
    assert metrics.map_status(maps).tolist() == ["ok", "zero", "constant", "nonfinite"]
    assert metrics.map_status(HAND_MAP) == "ok"


def test_mean_confidence_interval_against_hand_t_interval():
    # mean 3, sd sqrt(2.5), se sqrt(0.5), t(0.975, df=4) = 2.7764451
    half_width = 2.7764451 * math.sqrt(0.5)
    result = metrics.mean_confidence_interval([1, 2, np.nan, 3, 4, 5, np.inf])
    assert result.n == 5
    assert result.mean == pytest.approx(3.0)
    assert result.low == pytest.approx(3.0 - half_width, abs=1e-6)
    assert result.high == pytest.approx(3.0 + half_width, abs=1e-6)
    mean, low, high, n = metrics.mean_confidence_interval([4.0, np.nan])
    assert (mean, n) == (4.0, 1) and math.isnan(low) and math.isnan(high)
    assert metrics.mean_confidence_interval([np.nan]).n == 0


def test_paired_difference_sign_and_p_value():
    a = np.array([2.0, 4.0, 6.0, 8.0, np.nan, 1.0])
    b = np.array([1.0, 2.0, 3.0, 4.0, 1.0, np.inf])
    # Differences 1, 2, 3, 4: mean 2.5, sd sqrt(5/3), t = 2.5 / (sd / 2) = 3.8729833 on 3 df;
    # two-sided p from the t(3) tail: 2 * (1/2 - (1/pi) (atan(u) + u / (1 + u^2))),
    # u = t / sqrt(3), the closed-form t(3) distribution function.
    u = 3.8729833 / math.sqrt(3)
    p_hand = 1.0 - (2.0 / math.pi) * (math.atan(u) + u / (1.0 + u * u))
    result = metrics.paired_difference(a, b)
    assert result.n == 4
    assert result.mean_difference == pytest.approx(2.5)
    assert result.low < 2.5 < result.high
    assert result.p_value == pytest.approx(p_hand, rel=1e-6)
    reverse = metrics.paired_difference(b, a)
    assert reverse.mean_difference == pytest.approx(-2.5)
    assert reverse.p_value == pytest.approx(result.p_value)
    assert (reverse.low, reverse.high) == pytest.approx((-result.high, -result.low))


def test_paired_difference_degenerate_cases():
    assert metrics.paired_difference([1.0, 2.0], [0.0, 1.0]).p_value == 0.0
    assert math.isnan(metrics.paired_difference([1.0, 2.0], [1.0, 2.0]).p_value)
    assert math.isnan(metrics.paired_difference([1.0], [0.0]).p_value)
    with pytest.raises(ValueError, match="same length"):
        metrics.paired_difference([1.0, 2.0], [1.0])


# Evidence scores: a 4x4 image whose evidence E is 2 of its 16 pixels.
EVIDENCE = np.zeros((4, 4), np.uint8)
EVIDENCE[1, 1:3] = 1


def test_evidence_ratio_hand_cases():
    # On E only: share 1 over E's share 2/16.
    assert metrics.evidence_ratio(EVIDENCE.astype(float), EVIDENCE) == 8.0
    # Inverted: no mass on E.
    assert metrics.evidence_ratio(1.0 - EVIDENCE, EVIDENCE) == 0.0
    # Uniform: no preference, exactly 1, whatever the (integer) level.
    assert metrics.evidence_ratio(np.ones((4, 4)), EVIDENCE) == 1.0
    assert metrics.evidence_ratio(np.full((4, 4), 3.0), EVIDENCE) == 1.0
    # Graded: share 4/10 on the bottom-right pixel, E's share 1/4.
    assert metrics.evidence_ratio(HAND_MAP, [[0, 0], [0, 1]]) == pytest.approx(1.6)
    assert metrics.evidence_ratio(HAND_MAP, [[1, 0], [0, 0]]) == pytest.approx(0.4)
    # Unchanged by a positive scale, like the localization score.
    assert metrics.evidence_ratio(7.5 * HAND_MAP, [[0, 0], [0, 1]]) == pytest.approx(1.6)


def test_evidence_ratio_undefined_cases_are_nan_with_their_status():
    maps = np.stack([
        EVIDENCE.astype(float),  # ok
        EVIDENCE.astype(float),  # empty evidence
        np.zeros((4, 4)),  # zero mass
        np.where(EVIDENCE == 1, np.nan, 1.0),  # non-finite
        np.zeros((4, 4)),  # zero mass and empty evidence: the image cannot be scored
    ])
    evidence = np.stack([EVIDENCE, np.zeros_like(EVIDENCE), EVIDENCE, EVIDENCE, np.zeros_like(EVIDENCE)])
    ratios, status = metrics.evidence_ratio(maps, evidence, return_status=True)
    assert ratios.shape == (5,) and ratios.dtype == np.float64
    assert ratios[0] == 8.0 and np.isnan(ratios[1:]).all()
    assert status.tolist() == ["ok", "empty", "zero", "nonfinite", "empty"]
    ratio, single_status = metrics.evidence_ratio(np.ones((4, 4)), np.zeros((4, 4)), return_status=True)
    assert np.ndim(ratio) == 0 and math.isnan(ratio) and single_status == "empty"


def test_evidence_ratio_shares_one_mask_across_a_batch():
    maps = np.stack([EVIDENCE.astype(float), np.ones((4, 4)), 1.0 - EVIDENCE])
    np.testing.assert_array_equal(metrics.evidence_ratio(maps, EVIDENCE), [8.0, 1.0, 0.0])


def test_evidence_hit_hand_cases_and_pointing_game_tie_rule():
    tie = EVIDENCE.astype(float)
    tie[3, 3] = 1.0
    maps = np.stack([
        EVIDENCE.astype(float),  # both peaks on E: hit
        1.0 - EVIDENCE,  # peaks everywhere but E: miss
        tie,  # peaks on E and one off E: miss
        np.ones((4, 4)),  # uniform: points nowhere
        EVIDENCE.astype(float),  # empty evidence
    ])
    evidence = np.stack([EVIDENCE] * 4 + [np.zeros_like(EVIDENCE)])
    hits, status = metrics.evidence_hit(maps, evidence)
    assert hits.dtype == bool and hits.tolist() == [True, False, False, False, False]
    assert status.tolist() == ["ok", "ok", "ok", "constant", "empty"]
    # Where the evidence is not empty it is the pointing game on E.
    game_hits, game_status = metrics.pointing_game(maps[:4], evidence[:4])
    np.testing.assert_array_equal(hits[:4], game_hits)
    np.testing.assert_array_equal(status[:4], game_status)
    hit, single_status = metrics.evidence_hit(HAND_MAP, [[0, 0], [0, 1]])
    assert np.ndim(hit) == 0 and hit and single_status == "ok"
    hit, single_status = metrics.evidence_hit(np.zeros((4, 4)), np.zeros((4, 4)))
    assert not hit and single_status == "empty"


def test_evidence_scores_reject_bad_evidence_naming_it():
    for score in (metrics.evidence_ratio, metrics.evidence_hit):
        with pytest.raises(ValueError, match=r"evidence and cam .*cam.shape=\(2, 2\), evidence.shape=\(4, 4\)"):
            score(HAND_MAP, EVIDENCE)
        with pytest.raises(ValueError, match="evidence must be binary"):
            score(HAND_MAP, np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="non-negative"):
        metrics.evidence_ratio(-HAND_MAP, [[0, 0], [0, 1]])
