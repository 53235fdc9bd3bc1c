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

import zlib
from typing import NamedTuple

import numpy as np
import scipy.ndimage
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
    the same height and width. s lies in [0, 1]. It is unchanged when A is
    multiplied by a positive constant, but not when a constant is added: a
    floor c > 0 under the whole map pulls s towards M's share of the image,
    s(A + c) = (sum(A * M) + c |M|) / (sum(A) + c H W). So min-max
    normalisation, which divides by the range (no effect) and subtracts the
    minimum (an effect, unless min(A) = 0), changes s for every map whose
    minimum is above 0. This function scores A exactly as given. The
    evaluation (`kerascam.evaluation`) gives it the maps that
    `kerascam.cams` returns: the native map bilinearly resized to the input
    and then min-max normalised, (R - min R) / (max R - min R); s is that of
    the raw map only where min R = 0 (a CAM whose ReLU zeroes some pixel).
    For a map with a floor (every value of R above 0: a coarse CAM whose
    cells are all positive, the ``noise`` baseline) the score in the tables
    lies further from the mask's share, on the same side, than the raw
    map's: s(R) lies between s(R - min R) and |M| / (H W).

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


def min_max_normalize(maps, *, dtype=np.float64):
    """Per-map min-max normalisation to [0, 1]: the one NumPy normaliser.

    Every defined map (see `map_status`) becomes (A - min A) / (max A - min A),
    with no epsilon in the denominator, so its maximum is exactly 1 (unlike
    tf-keras-vis' `normalize`). An undefined map (non-finite, constant or all
    zero) becomes all zeros, and its status says why. `kerascam.export`'s
    `normalize_maps_in_graph` is the same rule in TensorFlow ops.

    Args:
        maps: one map (H, W) or a batch (N, H, W).
        dtype: the dtype the maps are converted to and normalised in (float32
            for `kerascam.cams.normalize_maps`). Defaults to float64.

    Returns:
        A tuple (normalized, status): `normalized` of `dtype` and the shape of
        `maps`; `status` as `map_status(maps)`.
    """
    values = np.asarray(maps, dtype=dtype)
    status = map_status(values)
    batch, single = (values[np.newaxis], True) if values.ndim == 2 else (values, False)
    defined = np.atleast_1d(status) == OK
    normalized = np.zeros_like(batch)
    selected = batch[defined]
    low = selected.min(axis=(1, 2), keepdims=True)
    high = selected.max(axis=(1, 2), keepdims=True)
    normalized[defined] = (selected - low) / (high - low)
    return _finish(normalized, single), status


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
    normalized, status = min_max_normalize(maps)
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


# Zhang et al. 2018 ("Top-down Neural Attention by Excitation Backprop",
# IJCV): a hit when the maximum lies within 15 px of the object, for their
# 224 px inputs. Scaled to other sizes by the shorter side.
ZHANG_TOLERANCE_PX = 15.0
ZHANG_IMAGE_SIZE = 224
TIE_SEED = 0


def zhang_tolerance(height, width):
    """Zhang et al.'s 15 px at 224 px, scaled to an image of ``height`` x ``width``.

    Returns:
        ``15 * min(height, width) / 224`` in pixels (3.21 at 48 px, 4.29 at
        64 px, 15 at 224 px).
    """
    return ZHANG_TOLERANCE_PX * min(height, width) / ZHANG_IMAGE_SIZE


def _content_seed(array, seed):
    """A seed from ``seed`` and an array's bytes: the same array always draws
    the same, and two arrays draw independently of the batch they come in."""
    digest = zlib.crc32(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return np.random.default_rng([int(seed), int(digest)])


def random_argmax(values, seed=TIE_SEED):
    """The flat index of the maximum of ``values``; ties broken at random.

    The draw is seeded by ``seed`` and the values themselves, so a map always
    picks the same maximum (in any batch, shard or resumed run), while maps
    that differ pick independently: no position of a plateau is favoured
    across images, as raster-order argmax would favour its top-left pixel.

    Args:
        values: an array of finite numbers.
        seed: int. Defaults to `TIE_SEED` (0).

    Returns:
        An int, the index into ``values.ravel()``.
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    peaks = np.flatnonzero(flat == flat.max())
    if len(peaks) == 1:
        return int(peaks[0])
    return int(peaks[_content_seed(flat, seed).integers(len(peaks))])


def tolerant_pointing_game(cam, mask, *, tolerance=None, seed=TIE_SEED):
    """The pointing game as Zhang et al. (2018, IJCV) define it.

    One maximum per map (tied maxima: one picked at random, `random_argmax`);
    a hit when it lies within ``tolerance`` pixels (Euclidean distance to the
    nearest mask pixel) of the mask. Beside `pointing_game`, whose strict
    rule asks every tied maximum to lie inside the mask and allows no
    tolerance, this is the published protocol: a coarse map's plateau is
    neither punished (strict rule) nor favoured (raster-order argmax).

    Args:
        cam: one map (H, W) or a batch (N, H, W).
        mask: binary mask, (H, W) shared by all maps or (N, H, W).
        tolerance: pixels; None for Zhang et al.'s 15 px at 224 scaled to
            the map (`zhang_tolerance`). 0 asks the maximum to lie on the mask.
        seed: seed of the tie draw. Defaults to `TIE_SEED` (0).

    Returns:
        A tuple (hits, status) as `pointing_game`: hits bool, status
        `map_status(cam)`, with "empty" where the mask holds no pixel
        ("empty" wins). Maps whose status is not "ok" get hit False and must
        be left out of hit rates.

    Raises:
        ValueError: when the mask and the map differ in height or width, the
            mask is not binary or the tolerance is negative.
    """
    maps, single = _as_maps(cam, "cam")
    masks = _check_mask(mask, maps, "cam", np.shape(cam))
    if tolerance is None:
        tolerance = zhang_tolerance(*maps.shape[1:])
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be a number of pixels >= 0. Received: tolerance={tolerance}")
    status = map_status(maps)
    empty = ~masks.reshape(len(maps), -1).any(axis=1)
    status[empty] = EMPTY
    hits = np.zeros(len(maps), bool)
    for i in np.flatnonzero(status == OK):
        row, col = np.unravel_index(random_argmax(maps[i], seed), maps.shape[1:])
        # Distance of every pixel to the nearest mask pixel (0 on the mask).
        distance = scipy.ndimage.distance_transform_edt(~masks[i])
        hits[i] = distance[row, col] <= tolerance
    return _finish(hits, single), _finish(status, single)


def tolerant_pointing_chance(mask, *, tolerance=None):
    """What a map that knows nothing scores in `tolerant_pointing_game`: the
    share of pixels within ``tolerance`` of the mask (NaN for an empty mask).

    Args:
        mask: binary mask (H, W) or (N, H, W).
        tolerance: as `tolerant_pointing_game`.
    """
    masks, single = _as_maps(mask, "mask")
    masks = masks.astype(bool)
    if tolerance is None:
        tolerance = zhang_tolerance(*masks.shape[1:])
    shares = np.full(len(masks), np.nan)
    for i, m in enumerate(masks):
        if m.any():
            shares[i] = np.mean(scipy.ndimage.distance_transform_edt(~m) <= tolerance)
    return _finish(shares, single)


def evidence_ratio_in_region(cam, evidence, region, *, return_status=False):
    """How strongly a map prefers the evidence over the rest of its region.

    ratio = (sum(A * E) / sum(A * R)) / (sum(E) / sum(R)): the share of the
    map's mass in the region R (e.g. the disk that carries a sticker) that
    lies on the evidence E, over E's share of R's pixels. 1 is no preference
    within R, whatever the map does outside R; a map that merely lights the
    disk evenly scores 1 here but 1 / (share of the disk in the image) in
    `evidence_ratio`. Evidence pixels outside R are ignored (E is taken as
    E & R).

    Args:
        cam: the map A, one (H, W) or a batch (N, H, W), values >= 0.
        evidence: binary E, (H, W) or (N, H, W).
        region: binary R, (H, W) or (N, H, W), which should hold E.
        return_status: also return the status. Defaults to False.

    Returns:
        float64 ratios (scalar for one map, else (N,)); NaN where undefined:
        "empty" (no evidence pixel inside the region), "zero" (no mass in
        the region) or "nonfinite" (the map). With ``return_status=True``, a
        tuple (ratios, status).

    Raises:
        ValueError: as `evidence_ratio`, for the evidence and the region.
    """
    maps, single = _as_maps(cam, "cam")
    masks = _check_mask(evidence, maps, "cam", np.shape(cam), mask_name="evidence")
    regions = _check_mask(region, maps, "cam", np.shape(cam), mask_name="region")
    if np.any(np.isfinite(maps) & (maps < 0)):
        raise ValueError(f"cam must be non-negative (a CAM after its ReLU). Received: min(cam)={np.nanmin(maps)}")
    n = len(maps)
    flat = maps.reshape(n, -1)
    in_region = regions.reshape(n, -1)
    on_evidence = masks.reshape(n, -1) & in_region
    region_mass = np.where(in_region, flat, 0.0).sum(axis=1)
    evidence_mass = np.where(on_evidence, flat, 0.0).sum(axis=1)
    evidence_share = on_evidence.sum(axis=1) / np.maximum(in_region.sum(axis=1), 1)
    status = np.full(n, OK, dtype="<U9")
    status[region_mass == 0] = ZERO
    status[~np.isfinite(flat).all(axis=1)] = NONFINITE
    status[~on_evidence.any(axis=1)] = EMPTY
    ratios = np.full(n, np.nan)
    defined = status == OK
    ratios[defined] = evidence_mass[defined] / region_mass[defined] / evidence_share[defined]
    ratios = _finish(ratios, single)
    if return_status:
        return ratios, _finish(status, single)
    return ratios


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
    d_z: float = float("nan")


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


def wilson_interval(hits, confidence=0.95):
    """Rate and Wilson score interval of 0/1 outcomes (Wilson 1927).

    For k hits in n trials, p = k / n and z the normal quantile of the
    coverage::

        centre = (p + z^2 / (2n)) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))

    Unlike the Student-t (Wald) interval it stays inside [0, 1] and is not
    degenerate at 0 or n hits (0 of 20: [0, 0.161], where the t interval is
    [0, 0]), and its coverage is close to nominal for small n (Brown, Cai
    and DasGupta 2001).

    Args:
        hits: 1-D array-like of 0/1 (or bool); NaN and inf are left out.
        confidence: the interval's coverage. Defaults to 0.95.

    Returns:
        ConfidenceInterval(rate, low, high, n); all NaN with n == 0.

    Raises:
        ValueError: when a finite value is not 0 or 1.
    """
    _check_confidence(confidence)
    values = np.asarray(hits, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"hits must be 0 or 1. Received: {np.setdiff1d(values, (0.0, 1.0))[:3].tolist()}")
    n = len(values)
    if n == 0:
        return ConfidenceInterval(np.nan, np.nan, np.nan, 0)
    rate = float(values.mean())
    z = scipy.stats.norm.ppf(0.5 + confidence / 2.0)
    denominator = 1.0 + z * z / n
    centre = (rate + z * z / (2 * n)) / denominator
    half = z / denominator * np.sqrt(rate * (1.0 - rate) / n + z * z / (4.0 * n * n))
    # At 0 (n) hits the bound is exactly 0 (1); the formula leaves a rounding error.
    low = 0.0 if rate == 0.0 else max(0.0, centre - half)
    high = 1.0 if rate == 1.0 else min(1.0, centre + half)
    return ConfidenceInterval(rate, float(low), float(high), n)


def holm_adjust(p_values):
    """Holm's step-down adjustment of a family of p-values (Holm 1979).

    With the m finite p-values sorted, p_(1) <= ... <= p_(m), the adjusted
    p_(i) is ``min(1, max_{j <= i} (m - j + 1) p_(j))``. Rejecting where the
    adjusted p is below alpha keeps the family-wise error rate (the chance of
    any false claim) at alpha under any dependence between the tests: the
    paired tests of one table share their images, models and maps, so they
    are far from independent.

    Args:
        p_values: 1-D array-like; NaN (a test that could not run) is left
            out of the family and stays NaN.

    Returns:
        float64 array of the same length.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if np.any(np.isfinite(p) & ((p < 0) | (p > 1))):
        raise ValueError(f"p-values must lie in [0, 1]. Received: {p.tolist()}")
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    if m == 0:
        return adjusted
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


P_VALUE_FLOOR = 1e-6


def format_p_value(p_value, floor=P_VALUE_FLOOR):
    """A p-value as text: two significant digits, ``"< 1e-6"`` below ``floor``.

    A paired t-test over a few hundred images can give p = 1e-50, a number
    that says more about the t distribution's tail than about the data; the
    tables print no p below ``floor`` (1e-6 by default).

    Args:
        p_value: float or NaN.
        floor: the smallest p-value printed. Defaults to 1e-6.

    Returns:
        ``"n/a"`` for NaN, ``"< 1e-6"`` below the floor, else e.g. ``"0.034"``.
    """
    if p_value is None or not np.isfinite(p_value):
        return "n/a"
    if p_value < floor:
        exponent = np.log10(floor)
        return f"< 1e{int(exponent)}" if exponent == int(exponent) else f"< {floor:g}"
    return f"{p_value:.2g}"


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
        PairedDifference(mean_difference, low, high, p_value, n, d_z): the
        mean of a - b with its Student-t interval, the two-sided p-value of
        `scipy.stats.ttest_rel(a, b)`, the number of pairs and the effect
        size d_z = mean(a - b) / sd(a - b) (Cohen's d for paired samples,
        sd with n - 1; t = d_z sqrt(n)). With n < 2 the interval, p-value
        and d_z are NaN. When all differences are equal the t statistic is
        undefined; p_value is then 0.0 and d_z +-inf if they are non-zero,
        both NaN if they are all zero (scipy's limits, without its warning).

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
        p_value = d_z = np.nan
    elif np.all(differences == differences[0]):
        p_value = 0.0 if differences[0] != 0 else np.nan
        d_z = float(np.sign(differences[0]) * np.inf) if differences[0] != 0 else np.nan
    else:
        p_value = float(scipy.stats.ttest_rel(a, b).pvalue)
        d_z = float(mean / np.std(differences, ddof=1))
    return PairedDifference(mean, low, high, p_value, n, d_z)
