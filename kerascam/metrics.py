"""Localization metrics for explanation maps, and the statistics to compare them.

The central metric is the localization score of Mascolini et al., "High
Resolution Explanation Maps for CNNs using Segmentation Networks" (VL/HCC
2022)::

    s = sum(A * M) / sum(A)

the share of a map's mass A that falls inside a binary mask M. The paper takes
M from the ResNet50 + GradCAM++ map of the same image (`reference_mask`).

Fine detail is scored against an evidence mask E, the few pixels of an object
that decide its class (the sticker of the shapes dataset's ``disk_sticker``;
the paper's Fig. 2 claim): `evidence_ratio` divides the map's share of mass on
E by E's share of the image, and `evidence_hit` plays the pointing game on E.

Undefined cases are never folded into a number: a map whose mass is zero or
that holds a non-finite value has no score (NaN), and the `*_status` helpers
name the reason so that callers can count them. Only numpy and scipy are
imported here, so the metrics can be used without TensorFlow.
"""

from typing import NamedTuple

import numpy as np
import scipy.stats

# Status strings shared by `map_status`, `score_status`, `pointing_game` and
# the evidence scores.
OK = "ok"
ZERO = "zero"  # every value is 0
CONSTANT = "constant"  # every value is the same non-zero number
NONFINITE = "nonfinite"  # at least one NaN or inf
EMPTY = "empty"  # the evidence mask holds no pixel: nothing to score against


def _as_maps(array, name):
    """Returns `array` as float64 (N, H, W) and whether it was a single map."""
    maps = np.asarray(array, dtype=np.float64)
    if maps.ndim == 2:
        return maps[np.newaxis], True
    if maps.ndim == 3:
        return maps, False
    raise ValueError(
        f"{name} must be one map (H, W) or a batch (N, H, W). Received: {name}.shape={maps.shape}"
    )


def _finish(values, single):
    return values[0] if single else values


def map_status(maps):
    """Tells which maps can be min-max normalised.

    A map is undefined for min-max normalisation when it holds a non-finite
    value or when all its values are equal (max == min).

    Args:
        maps: one map (H, W) or a batch (N, H, W).

    Returns:
        A string array of shape (N,) (a single string for one map), each
        entry one of "ok", "zero" (all values 0), "constant" (all values the
        same non-zero number) or "nonfinite" (some NaN or inf).
    """
    maps, single = _as_maps(maps, "maps")
    flat = maps.reshape(len(maps), -1)
    status = np.full(len(maps), OK, dtype="<U9")
    finite = np.isfinite(flat).all(axis=1)
    with np.errstate(invalid="ignore"):
        flat_range = flat.max(axis=1, initial=-np.inf) - flat.min(axis=1, initial=np.inf)
    constant = finite & (flat_range == 0)
    status[constant] = CONSTANT
    status[constant & (flat[:, 0] == 0)] = ZERO
    status[~finite] = NONFINITE
    return _finish(status, single)


def score_status(cam):
    """Tells for which maps `localization_score` is defined.

    Args:
        cam: one map (H, W) or a batch (N, H, W), values >= 0.

    Returns:
        A string array of shape (N,) (a single string for one map): "ok", "zero"
        (sum(A) == 0, so the score divides by zero) or "nonfinite".
    """
    maps, single = _as_maps(cam, "cam")
    flat = maps.reshape(len(maps), -1)
    status = np.full(len(maps), OK, dtype="<U9")
    finite = np.isfinite(flat).all(axis=1)
    status[finite & (flat.sum(axis=1) == 0)] = ZERO
    status[~finite] = NONFINITE
    return _finish(status, single)


def _check_mask(mask, maps, cam_name, cam_shape, mask_name="mask"):
    """Returns `mask` as bool (N, H, W) matching `maps`, or raises ValueError.

    `cam_shape` is the map's shape as the caller gave it and `mask_name` the
    caller's name of the mask, for the messages.
    """
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(
            f"{mask_name} must be one mask (H, W) or a batch (N, H, W). "
            f"Received: {mask_name}.shape={mask.shape}"
        )
    if mask.shape[-2:] != maps.shape[-2:]:
        raise ValueError(
            f"{mask_name} and {cam_name} must have the same height and width. "
            f"Received: {cam_name}.shape={cam_shape}, {mask_name}.shape={mask.shape}"
        )
    if mask.ndim == 3 and len(mask) != len(maps):
        raise ValueError(
            f"A batch of masks must have one mask per map. "
            f"Received: {cam_name}.shape={cam_shape}, {mask_name}.shape={mask.shape}"
        )
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(f"{mask_name} must be binary: bool, or numbers that are all 0 or 1.")
        mask = mask.astype(bool)
    return np.broadcast_to(mask, maps.shape)


def localization_score(cam, mask, *, return_status=False):
    """The share of an explanation map's mass inside a mask (Mascolini et al. 2022).

    s = sum(A * M) / sum(A), with A the map under test and M a binary mask of
    the same height and width. s lies in [0, 1]; it is unchanged when A is
    multiplied by a positive constant, so it does not matter whether A is
    normalised.

    Args:
        cam: the map A, one (H, W) or a batch (N, H, W), values >= 0 (CAMs
            after their ReLU, normalised or not).
        mask: the binary mask M, (H, W) shared by all maps or (N, H, W), bool
            or 0/1 numbers.
        return_status: also return `score_status(cam)`. Defaults to False.

    Returns:
        float64 scores: a scalar for one map, shape (N,) for a batch. A map
        with sum(A) == 0 or a non-finite value has no score: NaN, never 0 or
        1. With `return_status=True`, a tuple (scores, status).

    Raises:
        ValueError: when the mask and the map differ in height or width, the
            mask is not binary, or the map has negative values.
    """
    maps, single = _as_maps(cam, "cam")
    masks = _check_mask(mask, maps, "cam", np.shape(cam))
    if np.any(np.isfinite(maps) & (maps < 0)):
        raise ValueError(
            f"cam must be non-negative (a CAM after its ReLU). Received: min(cam)={np.nanmin(maps)}"
        )
    status = score_status(maps)
    flat = maps.reshape(len(maps), -1)
    inside = np.where(masks.reshape(len(maps), -1), flat, 0.0).sum(axis=1)
    total = flat.sum(axis=1)
    defined = status == OK
    scores = np.full(len(maps), np.nan)
    scores[defined] = inside[defined] / total[defined]
    scores = _finish(scores, single)
    if return_status:
        return scores, _finish(status, single)
    return scores


def _normalize(maps):
    """Per-map min-max normalisation to [0, 1]; undefined maps become all 0."""
    status = map_status(maps)
    flat = maps.reshape(len(maps), -1)
    low = flat.min(axis=1)[:, None, None]
    high = flat.max(axis=1)[:, None, None]
    defined = (status == OK)[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = np.where(defined, (maps - low) / (high - low), 0.0)
    return normalized, status


def reference_mask(reference_cam, threshold=0.5, *, return_status=False):
    """The binary mask M of the localization score, from a reference map.

    In the paper M comes from the ResNet50 + GradCAM++ map of the image; the
    paper gives no threshold. kerascam's choice: min-max normalise each map to
    [0, 1] and keep the pixels at or above `threshold` (0.5 by default), so M
    always holds the map's maximum and is independent of the map's scale.

    Args:
        reference_cam: one map (H, W) or a batch (N, H, W).
        threshold: the cut on the normalised map, in [0, 1]. Defaults to 0.5.
        return_status: also return `map_status(reference_cam)`. Defaults to
            False.

    Returns:
        A bool mask of the same shape. A reference map that cannot be
        normalised (constant, all zero or non-finite) gives an all-False mask;
        its status says so and such images must be left out of any score
        computed against it. With `return_status=True`, a tuple (mask, status).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1]. Received: threshold={threshold}")
    maps, single = _as_maps(reference_cam, "reference_cam")
    normalized, status = _normalize(maps)
    mask = (normalized >= threshold) & (status == OK)[:, None, None]
    mask = _finish(mask, single)
    if return_status:
        return mask, _finish(status, single)
    return mask


def pointing_game(cam, mask):
    """Whether each map's maximum lies inside the mask (pointing game).

    Ties: when several pixels share the maximum value, the map scores a hit
    only if all of them lie inside the mask (kerascam's choice), so a result
    never depends on the order in which an argmax breaks ties, and a peak that
    straddles the mask border is not a hit.

    Args:
        cam: one map (H, W) or a batch (N, H, W).
        mask: binary mask, (H, W) shared by all maps or (N, H, W).

    Returns:
        A tuple (hits, status): hits is bool, scalar for one map or shape
        (N,); status is `map_status(cam)`. Maps whose status is not "ok"
        (constant, all zero or non-finite maps point nowhere) get hit False
        and must be left out of hit rates; count them from the status.

    Raises:
        ValueError: when the mask and the map differ in height or width.
    """
    maps, single = _as_maps(cam, "cam")
    masks = _check_mask(mask, maps, "cam", np.shape(cam))
    status = map_status(maps)
    flat = maps.reshape(len(maps), -1)
    flat_mask = masks.reshape(len(maps), -1)
    with np.errstate(invalid="ignore"):
        is_peak = flat == flat.max(axis=1, keepdims=True)
    hits = np.all(flat_mask | ~is_peak, axis=1) & (status == OK)
    return _finish(hits, single), _finish(status, single)


def _evidence(cam, evidence):
    """The maps as float64 (N, H, W), the evidence as bool (N, H, W), which
    evidence masks are empty, and whether a single map was given."""
    maps, single = _as_maps(cam, "cam")
    masks = _check_mask(evidence, maps, "cam", np.shape(cam), mask_name="evidence")
    empty = ~masks.reshape(len(maps), -1).any(axis=1)
    return maps, masks, empty, single


def evidence_ratio(cam, evidence, *, return_status=False):
    """How strongly a map prefers the evidence pixels over the image as a whole.

    ratio = (sum(A * E) / sum(A)) / (sum(E) / E.size): the map's share of
    mass on the evidence mask E (`localization_score` against E) divided by
    E's share of the image. A uniform map scores 1 (no preference),
    a map that prefers the evidence scores above 1, up to 1 / (E's share)
    for a map whose whole mass lies on E, and a map that avoids E scores 0.
    This measures the fine-detail claim of Mascolini et al. (VL/HCC 2022,
    Fig. 2): a map that resolves the few pixels that decide the class.

    Args:
        cam: the map A, one (H, W) or a batch (N, H, W), values >= 0.
        evidence: the binary evidence mask E, (H, W) shared by all maps or
            (N, H, W), bool or 0/1 numbers; for the shapes dataset the
            "evidence" feature (all 0 except on ``disk_sticker`` images).
        return_status: also return the status of each map. Defaults to False.

    Returns:
        float64 ratios: a scalar for one map, shape (N,) for a batch. NaN
        where the ratio is undefined, never 0 or 1: an empty evidence mask
        (status "empty", e.g. an image of another class) or a map whose mass
        is zero or non-finite (`score_status`: "zero", "nonfinite"). "empty"
        wins over the map's status: it is the image, not the map, that
        cannot be scored. With `return_status=True`, a tuple (ratios,
        status), status a string array of the same shape ("ok", "empty",
        "zero" or "nonfinite").

    Raises:
        ValueError: when the evidence and the map differ in height or width,
            the evidence is not binary, or the map has negative values.
    """
    maps, masks, empty, single = _evidence(cam, evidence)
    shares, status = localization_score(maps, masks, return_status=True)
    evidence_share = masks.reshape(len(maps), -1).mean(axis=1)
    status[empty] = EMPTY
    ratios = np.full(len(maps), np.nan)
    defined = status == OK
    # Both shares are the same float division for a uniform map of integers,
    # so such a map scores exactly 1.
    ratios[defined] = shares[defined] / evidence_share[defined]
    ratios = _finish(ratios, single)
    if return_status:
        return ratios, _finish(status, single)
    return ratios


def evidence_hit(cam, evidence):
    """Whether each map's maximum lies on the evidence (pointing game on E).

    `pointing_game` against the evidence mask, with its tie rule: when
    several pixels share the maximum, the map hits only if all of them lie on
    the evidence.

    Args:
        cam: one map (H, W) or a batch (N, H, W).
        evidence: the binary evidence mask, (H, W) shared by all maps or
            (N, H, W), bool or 0/1 numbers.

    Returns:
        A tuple (hits, status), as `pointing_game` returns it: hits is bool,
        scalar for one map or shape (N,); status is `map_status(cam)`, with
        "empty" where the evidence mask has no pixel ("empty" wins over the
        map's status). Every map whose status is not "ok" (empty evidence;
        constant, all zero or non-finite map) gets hit False and must be left
        out of hit rates; count them from the status.

    Raises:
        ValueError: when the evidence and the map differ in height or width,
            or the evidence is not binary.
    """
    maps, masks, empty, single = _evidence(cam, evidence)
    hits, status = pointing_game(maps, masks)
    status[empty] = EMPTY
    hits &= status == OK
    return _finish(hits, single), _finish(status, single)


def _ranks(values):
    """Ranks 1..n of a 1-D array, ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    # Start and end of every run of equal values, in sorted order.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    average = (starts + ends + 1) / 2.0  # mean of the 1-based positions starts+1 .. ends
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def rank_correlation(a, b):
    """Spearman's rank correlation of two maps (Adebayo et al. 2018's first similarity measure).

    The Pearson correlation of the ranks of the flattened maps, ties given
    their average rank (as ``scipy.stats.spearmanr``). The maps are not made
    absolute first: CAMs are non-negative already.

    Args:
        a, b: two maps (H, W) of the same shape.

    Returns:
        A float in [-1, 1]; NaN when either map is constant or not finite.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"two maps (H, W) of the same shape are compared. Received: {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ra = _ranks(a.ravel())
    rb = _ranks(b.ravel())
    ra -= ra.mean()
    rb -= rb.mean()
    return float(np.clip(ra @ rb / np.sqrt((ra @ ra) * (rb @ rb)), -1.0, 1.0))



class ConfidenceInterval(NamedTuple):
    mean: float
    low: float
    high: float
    n: int


class PairedDifference(NamedTuple):
    mean_difference: float
    low: float
    high: float
    p_value: float
    n: int


def _check_confidence(confidence):
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1). Received: confidence={confidence}")


def _t_interval(values, confidence):
    """Mean and two-sided Student-t interval of finite 1-D `values`."""
    n = len(values)
    if n == 0:
        return np.nan, np.nan, np.nan
    mean = float(np.mean(values))
    if n == 1:
        return mean, np.nan, np.nan
    standard_error = np.std(values, ddof=1) / np.sqrt(n)
    half_width = scipy.stats.t.ppf(0.5 + confidence / 2.0, df=n - 1) * standard_error
    return mean, float(mean - half_width), float(mean + half_width)


def mean_confidence_interval(values, confidence=0.95):
    """Mean and Student-t confidence interval of the finite values.

    NaN and inf (e.g. undefined localization scores) are left out; `n` says
    how many values were used.

    Args:
        values: 1-D array-like of numbers.
        confidence: the interval's coverage. Defaults to 0.95.

    Returns:
        ConfidenceInterval(mean, low, high, n). With n == 0 all three numbers
        are NaN; with n == 1 the bounds are NaN.
    """
    _check_confidence(confidence)
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    return ConfidenceInterval(*_t_interval(values, confidence), n=len(values))


def paired_difference(a, b, confidence=0.95):
    """Mean of a - b, its confidence interval and a paired t-test.

    Only pairs in which both values are finite are used (an image whose score
    is undefined for either method drops out of the comparison).

    Args:
        a: 1-D array-like, e.g. per-image scores of one method.
        b: 1-D array-like of the same length, the other method on the same
            images.
        confidence: coverage of the interval on the mean difference. Defaults
            to 0.95.

    Returns:
        PairedDifference(mean_difference, low, high, p_value, n): the mean of
        a - b with its Student-t interval, the two-sided p-value of
        `scipy.stats.ttest_rel(a, b)` and the number of pairs. With n < 2 the
        interval and p-value are NaN. When all differences are equal the
        t statistic is undefined; p_value is then 0.0 if they are non-zero
        and NaN if they are all zero (scipy's limits, without its warning).

    Raises:
        ValueError: when `a` and `b` differ in shape.
    """
    _check_confidence(confidence)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"a and b must be 1-D and of the same length. Received: a.shape={a.shape}, b.shape={b.shape}"
        )
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    differences = a - b
    mean, low, high = _t_interval(differences, confidence)
    n = len(differences)
    if n < 2:
        p_value = np.nan
    elif np.all(differences == differences[0]):
        p_value = 0.0 if differences[0] != 0 else np.nan
    else:
        p_value = float(scipy.stats.ttest_rel(a, b).pvalue)
    return PairedDifference(mean, low, high, p_value, n)
