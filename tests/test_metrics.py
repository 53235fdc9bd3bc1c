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


# Statistics of the tables (issue 23, item 9).


def test_paired_difference_effect_size_d_z():
    # Differences 1, 2, 3, 4: mean 2.5, sd sqrt(5/3), d_z = 2.5 / 1.2909944 = 1.9364917 (= t / sqrt(4)).
    result = metrics.paired_difference([2.0, 4.0, 6.0, 8.0], [1.0, 2.0, 3.0, 4.0])
    assert result.d_z == pytest.approx(2.5 / math.sqrt(5.0 / 3.0))
    assert metrics.paired_difference([1.0, 4.0], [2.0, 3.0]).d_z == pytest.approx(0.0)
    assert metrics.paired_difference([1.0, 2.0], [0.0, 1.0]).d_z == math.inf  # equal differences, p 0
    assert math.isnan(metrics.paired_difference([1.0], [0.0]).d_z)


def test_wilson_interval_against_hand_values():
    # 3 hits of 10, z = 1.959964: centre (0.3 + z^2/20) / (1 + z^2/10) = 0.3555 ...
    z = 1.959963984540054
    centre = (0.3 + z * z / 20) / (1 + z * z / 10)
    half = z / (1 + z * z / 10) * math.sqrt(0.3 * 0.7 / 10 + z * z / 400)
    rate, low, high, n = metrics.wilson_interval([1, 1, 1, 0, 0, 0, 0, 0, 0, 0, np.nan])
    assert (rate, n) == (0.3, 10)
    assert (low, high) == pytest.approx((centre - half, centre + half))
    assert (low, high) == pytest.approx((0.10779, 0.60322), abs=1e-5)  # the published table value
    # 0 of 20: not the t interval's degenerate [0, 0] but [0, z^2 / (20 + z^2)].
    rate, low, high, n = metrics.wilson_interval(np.zeros(20))
    assert (rate, low) == (0.0, 0.0) and high == pytest.approx(z * z / (20 + z * z))
    assert metrics.wilson_interval(np.ones(20)).low == pytest.approx(20 / (20 + z * z))
    assert metrics.wilson_interval([np.nan]).n == 0
    with pytest.raises(ValueError, match="hits must be 0 or 1"):
        metrics.wilson_interval([0.0, 0.5])


def test_holm_adjustment_against_hand_computation():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (monotone);
    # NaN is no test: the family has 4 members.
    p = [0.01, 0.04, 0.03, 0.005, np.nan, ]
    adjusted = metrics.holm_adjust(p)
    np.testing.assert_allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    np.testing.assert_allclose(metrics.holm_adjust([0.3, 0.5, 0.9]), [0.9, 1.0, 1.0])  # capped at 1
    assert metrics.holm_adjust([]).shape == (0,)
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        metrics.holm_adjust([1.5])


def test_p_values_are_printed_no_smaller_than_1e_minus_6():
    assert metrics.format_p_value(1e-50) == "< 1e-6"
    assert metrics.format_p_value(0.0) == "< 1e-6"
    assert metrics.format_p_value(1e-6) == "1e-06"
    assert metrics.format_p_value(0.03412) == "0.034"
    assert metrics.format_p_value(float("nan")) == "n/a"


# Zhang et al.'s pointing game (issue 23, item 5).


def test_zhang_tolerance_scales_15_px_at_224():
    assert metrics.zhang_tolerance(224, 224) == 15.0
    assert metrics.zhang_tolerance(48, 64) == pytest.approx(15 * 48 / 224)


def test_tolerant_pointing_game_hand_cases():
    mask = np.zeros((10, 10), bool)
    mask[0:2, 0:2] = True
    cam = np.zeros((3, 10, 10))
    cam[0, 1, 1] = 1.0  # on the mask
    cam[1, 1, 4] = 1.0  # 3 px right of the mask's pixel (1, 1)
    cam[2, 4, 4] = 1.0  # sqrt(9 + 9) = 4.24 px from (1, 1)
    hits, status = metrics.tolerant_pointing_game(cam, mask, tolerance=3.0)
    assert hits.tolist() == [True, True, False] and status.tolist() == ["ok"] * 3
    assert metrics.tolerant_pointing_game(cam, mask, tolerance=0)[0].tolist() == [True, False, False]
    assert metrics.tolerant_pointing_game(cam, mask, tolerance=4.25)[0].tolist() == [True, True, True]
    # The strict rule and Zhang's disagree on a plateau that straddles the mask border.
    plateau = np.zeros((10, 10))
    plateau[0:4, 0:4] = 1.0
    assert not metrics.pointing_game(plateau, mask)[0]
    hit = metrics.tolerant_pointing_game(plateau, mask, tolerance=0)[0]
    assert hit == metrics.tolerant_pointing_game(plateau, mask, tolerance=0)[0]  # the same map draws the same
    # Undefined: empty mask, constant map.
    hits, status = metrics.tolerant_pointing_game(np.stack([cam[0], np.ones((10, 10))]), np.zeros((10, 10)))
    assert hits.tolist() == [False, False] and status.tolist() == ["empty", "empty"]
    hits, status = metrics.tolerant_pointing_game(np.ones((10, 10)), mask)
    assert not hits and status == "constant"
    with pytest.raises(ValueError, match="tolerance"):
        metrics.tolerant_pointing_game(cam, mask, tolerance=-1)


def test_random_argmax_draws_ties_evenly_and_reproducibly():
    # A 2x2 plateau: over many different maps each tied pixel is picked about a quarter of the time.
    rng = np.random.default_rng(0)
    picks = []
    for _ in range(400):
        values = rng.random((6, 6)) * 0.5
        values[2:4, 2:4] = 1.0
        picks.append(metrics.random_argmax(values))
    counts = np.array([picks.count(i) for i in (14, 15, 20, 21)])
    assert counts.sum() == 400 and counts.min() > 70  # 100 each expected; P(< 71) ~ 1e-3
    assert metrics.random_argmax(values) == picks[-1]  # the same map, the same pick
    assert metrics.random_argmax(np.array([0.0, 3.0, 1.0])) == 1


def test_tolerant_pointing_chance_is_the_share_within_tolerance():
    mask = np.zeros((10, 10), bool)
    mask[0, 0] = True
    # Pixels within 1.5 px of (0, 0): (0,0), (0,1), (1,0), (1,1): 4 of 100.
    assert metrics.tolerant_pointing_chance(mask, tolerance=1.5) == pytest.approx(0.04)
    assert math.isnan(metrics.tolerant_pointing_chance(np.zeros((10, 10)), tolerance=1.5))


# The sticker within its disk (issue 23, item 7).


def test_evidence_ratio_in_region_hand_cases():
    region = np.zeros((4, 4), bool)
    region[0:2, :] = True  # 8 pixels; the evidence (1, 1) and (1, 2) are 2 of them: share 1/4
    uniform_on_region = region.astype(float) + 0.0
    # Uniform within the region: no preference, 1, whatever lies outside it.
    outside = uniform_on_region.copy()
    outside[3, :] = 7.0
    assert metrics.evidence_ratio_in_region(outside, EVIDENCE, region) == pytest.approx(1.0)
    assert metrics.evidence_ratio(outside, EVIDENCE) < 1  # the image-relative ratio is moved by the outside
    # Twice as bright on the sticker: (2 * 2) / (2 * 2 + 6) = 0.4 of the region's mass, over 1/4: 1.6.
    brighter = uniform_on_region.copy()
    brighter[EVIDENCE > 0] = 2.0
    assert metrics.evidence_ratio_in_region(brighter, EVIDENCE, region) == pytest.approx(1.6)
    # All the region's mass on the sticker: 1 / (1/4) = 4.
    assert metrics.evidence_ratio_in_region(EVIDENCE.astype(float), EVIDENCE, region) == pytest.approx(4.0)
    ratios, status = metrics.evidence_ratio_in_region(
        np.stack([brighter, np.zeros((4, 4)), brighter]), np.stack([EVIDENCE, EVIDENCE, np.zeros((4, 4))]), region,
        return_status=True)
    assert ratios[0] == pytest.approx(1.6) and np.isnan(ratios[1:]).all()
    assert status.tolist() == ["ok", "zero", "empty"]
    with pytest.raises(ValueError, match="region must be binary"):
        metrics.evidence_ratio_in_region(brighter, EVIDENCE, region * 2.0)


def test_localization_score_is_moved_by_a_floor_and_so_by_min_max():
    # The docstring's claim: scale does not matter, a floor does.
    mask = np.array([[1, 0], [0, 0]])
    assert metrics.localization_score(HAND_MAP, mask) == pytest.approx(0.1)
    assert metrics.localization_score(3 * HAND_MAP, mask) == pytest.approx(0.1)
    assert metrics.localization_score(HAND_MAP + 1, mask) == pytest.approx(2 / 14)  # (1 + 1) / (10 + 4)
    assert metrics.localization_score((HAND_MAP - 1) / 3, mask) == 0.0  # min-max: the masked pixel was the minimum
