"""ROAD: RemOve And Debias, with noisy linear imputation (Rong et al. 2022).

Rong, Leemann, Borisov, Kasneci and Kasneci, "A Consistent and Efficient
Evaluation Strategy for Attribution Methods" (ICML 2022), show that
perturbation scores such as deletion leak the map through the shape of what
was removed: a model can read the class from the outline of a black hole, so
the score measures the mask as much as the pixels under it. ROAD fills the
removed pixels from their surroundings instead, which leaves no sharp edge:

* **Noisy linear imputation.** Each removed pixel is the weighted mean of its
  eight neighbours inside the image (weight 1/6 for the four sharing an
  edge, 1/12 for the four diagonal ones), kept pixels entering with their
  values and removed ones as unknowns: one sparse linear system per image and
  fraction, the same for every channel, solved exactly (sparse LU,
  ``scipy.sparse.linalg.splu``). Gaussian noise is then added to the
  imputed pixels; ROAD's reference code defaults to sigma 0.01 in the
  units of the image it imputes, here ``NOISE`` = 1 % of the 0-255 pixel
  range (2.55), as for an image in [0, 1]. The noise is drawn
  from a generator seeded by the image (its index in the split) and the
  fraction, so a score does not depend on how the images were batched, and
  every map of an image meets the same noise at the same fraction.
* **MoRF and LeRF.** At each fraction p of ``fractions`` (default 10 %,
  20 %, ..., 90 %) the ``round(p * H * W)`` pixels ranked highest by the map
  (most relevant first, MoRF) or lowest (least relevant first, LeRF) are
  removed, in the order of `kerascam.evaluation.perturbation.pixel_order`
  (ties at random, seeded by the image; LeRF takes that order from its
  end). A fraction whose count cuts a plateau of equal map values, leaving
  at least 1 % of the pixels to the tie-break, is the mean over
  ``tie_draws`` draws of it (default 3). The model's
  ``softmax(logits)[class]`` of each imputed image is the curve's value. A
  faithful map makes the MoRF curve fall fast (low mean) and the LeRF curve
  stay high (high mean).
* **Both ways at once.** Rong et al. read MoRF and LeRF together: the
  combined score is (mean LeRF - mean MoRF) / 2, higher is better. A map
  that knows nothing (noise) removes the same random share of pixels both
  ways, so its combined score is 0 in expectation on any model, however
  fragile the model is under imputation.
* **A per-model baseline.** MoRF alone is not comparable across models: a
  model that imputation confuses falls on every map, its own noise map's
  included (the ``noise`` column of the ROAD MoRF table of
  docs/runs/seed0/table.md differs from model to model). Each
  score is also reported minus the same model's ``noise`` map's score on the
  same image (`kerascam.evaluation.baselines.noise_maps`, computed by the
  scorer whether or not ``noise`` is a column), and the baselined combined
  score, ``road_combined_vs_noise``, is the field of the paired U-Net -
  ablated comparison and the one to compare models by.

The imputed images of a few maps are run through one compiled forward
function per model (`kerascam.evaluation.perturbation.perturbed_forward`'s
``probabilities``) in batches; only one batch of images is held at a time.
The imputation depends only on the image, the removed pixels and the noise
(seeded by the image and the fraction), not on the model: the maps that are
the same for every model (``noise``, ``edges``) are imputed once per image
and reused for the other models (``imputation_cache``).
"""

import hashlib

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from kerascam import metrics
from kerascam.evaluation import perturbation
from kerascam.evaluation.baselines import (
    BASELINES, NOISE_COLUMN, chance_of_perturbation, minus_baseline, model_batch_key, noise_maps,
)
from kerascam.evaluation.curves import curve_table, mean_curves, rounded
from kerascam.evaluation.score_figures import plot_mean_curves
from kerascam.evaluation.scorer import Field, Scorer, ScoreResult, register

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Sized by the CPU cost per image (benchmarks/README.md, score_cost.py).
DEFAULT_IMAGES = 100
NOISE = 2.55  # 1 % of the 0-255 pixel range
# (row offset, column offset, weight) of the eight neighbours.
NEIGHBOURS = (
    (-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12),
    (0, -1, 1 / 6), (0, 1, 1 / 6),
    (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12),
)


def linear_imputation(image, removed, *, noise=0.0, rng=None):
    """Fills the removed pixels with the weighted mean of their neighbours (ROAD's imputation).

    Every removed pixel p satisfies ``sum_q w_q * (x_p - x_q) = 0`` over its
    neighbours q inside the image (`NEIGHBOURS`' weights), with kept pixels
    as constants: a sparse linear system with one unknown per removed pixel
    and one right-hand side per channel. It has a unique solution whenever at
    least one pixel is kept.

    Args:
        image: (H, W, C) pixels.
        removed: (H, W) bool, the pixels to impute.
        noise: standard deviation of the Gaussian noise added to the imputed
            pixels. Default 0.
        rng: a `numpy.random.Generator` for the noise (needed when noise > 0).

    Returns:
        float32 (H, W, C): the image with its removed pixels imputed.
    """
    image = np.asarray(image)
    removed = np.asarray(removed, bool)
    height, width, channels = image.shape
    if removed.shape != (height, width):
        raise ValueError(f"removed must be (H, W) = {(height, width)}. Received: shape={removed.shape}")
    filled = image.astype(np.float64).reshape(-1, channels)
    unknown = np.flatnonzero(removed)
    count = len(unknown)
    if count == 0:
        return filled.reshape(image.shape).astype(np.float32)
    if count == height * width:
        raise ValueError("linear imputation needs at least one kept pixel; every pixel was removed")
    variable = np.full(height * width, -1)
    variable[unknown] = np.arange(count)
    rows, columns = np.divmod(unknown, width)
    diagonal = np.zeros(count)
    right = np.zeros((count, channels))
    entries_row, entries_column, entries_value = [], [], []
    for row_offset, column_offset, weight in NEIGHBOURS:
        r, c = rows + row_offset, columns + column_offset
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        equation = np.flatnonzero(inside)
        neighbour = r[inside] * width + c[inside]
        diagonal[equation] += weight
        known = variable[neighbour] < 0
        right[equation[known]] += weight * filled[neighbour[known]]
        entries_row.append(equation[~known])
        entries_column.append(variable[neighbour[~known]])
        entries_value.append(np.full((~known).sum(), -weight))
    entries_row.append(np.arange(count))
    entries_column.append(np.arange(count))
    entries_value.append(diagonal)
    system = scipy.sparse.csc_matrix(
        (np.concatenate(entries_value), (np.concatenate(entries_row), np.concatenate(entries_column))),
        shape=(count, count),
    )
    # The system is symmetric and diagonally dominant: a symmetric fill-reducing
    # ordering with diagonal pivots factors it faster than spsolve's default
    # (COLAMD; benchmarks/README.md, faithfulness.py).
    factors = scipy.sparse.linalg.splu(system, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
    solution = factors.solve(right)
    if noise:
        solution = solution + rng.normal(0.0, noise, solution.shape)
    filled[unknown] = solution
    return filled.reshape(image.shape).astype(np.float32)


def road_curves(model, images, maps, classes, *, fractions=DEFAULT_FRACTIONS, noise=NOISE, seeds=None,
                batch_size=perturbation.DEFAULT_BATCH_SIZE, tie_draws=perturbation.TIE_DRAWS,
                imputation_cache=None):
    """MoRF and LeRF curves of ROAD (Rong et al. 2022): class probability after imputed removal.

    Args:
        model: a Keras classifier taking raw pixels (logits out, or a softmax
            read at its logits).
        images: (n, H, W, C) pixels as the model takes them.
        maps: (n, H, W) finite maps at the input resolution.
        classes: (n,) the class each map explains.
        fractions: the fractions of pixels removed, each in (0, 1). Default
            0.1, 0.2, ..., 0.9.
        noise: standard deviation of the imputation noise, in pixel units.
            Default `NOISE` (2.55, 1 % of 0-255).
        seeds: (n,) non-negative integers seeding each image's tie-break and
            noise (e.g. its index in the split); default 0..n-1. The noise of
            fraction j of MoRF or LeRF is drawn from ``default_rng([seed,
            slot])``: every map of an image gets the same noise at the same
            slot.
        batch_size: imputed images per forward pass. Default 64.
        tie_draws: draws of the tie-break averaged at the fractions whose
            count cuts a plateau of the map; 1 for a single random
            tie-break. Default `kerascam.evaluation.perturbation.TIE_DRAWS`.
        imputation_cache: a dict to reuse imputed images across calls (pass
            the same dict for a map that every model shares); None: no reuse.

    Returns:
        (morf, lerf): float64 arrays (n, len(fractions)) of
        ``softmax(logits)[class]``, most and least relevant pixels removed.
    """
    images, maps, classes = perturbation.check_perturbation_inputs(images, maps, classes)
    fractions = np.asarray(fractions, dtype=np.float64).reshape(-1)
    if len(fractions) == 0 or not ((fractions > 0) & (fractions < 1)).all():
        raise ValueError(f"fractions must lie in (0, 1). Received: fractions={fractions.tolist()}")
    if int(tie_draws) != tie_draws or tie_draws < 1:
        raise ValueError(f"tie_draws must be a positive integer. Received: tie_draws={tie_draws}")
    seeds = np.arange(len(images)) if seeds is None else np.asarray(seeds).reshape(-1)
    n, height, width, _ = images.shape
    pixels = height * width
    counts = np.floor(fractions * pixels + 0.5).astype(np.int64)
    slots = len(counts)
    forward = perturbation.perturbed_forward(model)
    first = perturbation.pixel_order(maps, seeds)
    # MoRF removes the first `count` pixels of the order, LeRF the last:
    # the boundary that may cut a plateau is at `count`, resp. at pixels - count.
    cut = perturbation.cut_plateaus(maps, first, np.concatenate([counts, pixels - counts]),
                                    perturbation.min_tie_pixels(pixels))
    total = np.zeros((n, 2 * slots))
    drawn = np.zeros((n, 2 * slots))
    pending_images, pending_slots = [], []

    def flush():
        batch = np.stack(pending_images)
        where = np.asarray(pending_slots)
        probabilities = forward.probabilities(batch, classes[where[:, 0]])
        np.add.at(total, (where[:, 0], where[:, 1]), probabilities)
        np.add.at(drawn, (where[:, 0], where[:, 1]), 1)
        pending_images.clear()
        pending_slots.clear()

    for i in range(n):
        for draw in range(tie_draws if cut[i].any() else 1):
            order = first[i] if draw == 0 else perturbation.pixel_order(maps[i : i + 1], seeds[i : i + 1], draw)[0]
            for j in range(2 * slots):
                if draw > 0 and not cut[i, j]:
                    continue
                count = counts[j % slots]
                removed = np.zeros(pixels, bool)
                removed[order[:count] if j < slots else order[pixels - count :]] = True
                pending_images.append(_imputed(images[i], removed.reshape(height, width), noise,
                                               (int(seeds[i]), j), imputation_cache))
                pending_slots.append((i, j))
                if len(pending_images) == batch_size:
                    flush()
    if pending_images:
        flush()
    curves = total / drawn
    return curves[:, :slots], curves[:, slots:]


def _imputed(image, removed, noise, seed, cache):
    """`linear_imputation` with noise from ``default_rng(seed)``, looked up in ``cache`` first (when given)."""
    key = None
    if cache is not None:
        key = (seed, noise, hashlib.blake2b(image.tobytes(), digest_size=8).digest(),
               hashlib.blake2b(np.packbits(removed).tobytes(), digest_size=16).digest())
        if key in cache:
            return cache[key]
    imputed = linear_imputation(image, removed, noise=noise, rng=np.random.default_rng(seed))
    if cache is not None:
        cache[key] = imputed
    return imputed


def combined_score(morf, lerf):
    """ROAD's two orders read together (Rong et al. 2022): (mean LeRF - mean MoRF) / 2 per map; higher is better.

    Args:
        morf, lerf: arrays (..., fractions) of class probabilities.

    Returns:
        float64 array (...), in [-0.5, 0.5].
    """
    return (np.mean(lerf, axis=-1) - np.mean(morf, axis=-1)) / 2.0


def _field(name, description, paired=False):
    return Field(name, description, percent=False, digits=6, paired=paired)


@register
class RoadScorer(Scorer):
    """MoRF, LeRF and combined ROAD scores, each also minus the model's noise map's (module docstring).

    Config attributes read (defaults when the config lacks them):
    ``road_images`` (`DEFAULT_IMAGES`; None for every image) and
    ``tie_draws`` (`kerascam.evaluation.perturbation.TIE_DRAWS`).
    """

    name = "road"
    description = "ROAD, noisy linear imputation (Rong et al. 2022)"
    needs = ("model",)
    max_images = DEFAULT_IMAGES
    fields = (
        _field("road_morf", "ROAD MoRF: mean class probability with the map's top 10-90 % of pixels imputed "
               "(lower is better)"),
        _field("road_lerf", "ROAD LeRF: mean class probability with the map's bottom 10-90 % of pixels imputed "
               "(higher is better)"),
        _field("road_combined", "ROAD combined: (LeRF - MoRF) / 2 (higher is better; a map that knows nothing: 0)"),
        _field("road_morf_vs_noise", "ROAD MoRF minus the same model's noise map's on the same image "
               "(lower is better)"),
        _field("road_lerf_vs_noise", "ROAD LeRF minus the same model's noise map's on the same image "
               "(higher is better)"),
        _field("road_combined_vs_noise", "ROAD combined minus the same model's noise map's on the same image "
               "(higher is better), the figure to compare models by", paired=True),
    )

    def __init__(self, config):
        super().__init__(config)
        self.max_images = getattr(config, "road_images", DEFAULT_IMAGES)
        if self.max_images is not None and (int(self.max_images) != self.max_images or self.max_images < 1):
            raise ValueError(f"road_images must be a positive integer or None. Received: {self.max_images}")
        self.tie_draws = getattr(config, "tie_draws", perturbation.TIE_DRAWS)
        if int(self.tie_draws) != self.tie_draws or self.tie_draws < 1:
            raise ValueError(f"tie_draws must be a positive integer. Received: {self.tie_draws}")
        self.tie_draws = int(self.tie_draws)
        self.fractions = DEFAULT_FRACTIONS
        self.noise = NOISE
        self._per_model = {}  # model_batch_key -> the noise map's (morf, lerf)
        self._shared_imputations = {}  # imputations of the maps every model shares, for one batch

    def settings(self):
        return {**super().settings(), "road_fractions": list(self.fractions), "road_noise": self.noise,
                "tie_draws": self.tie_draws}

    def begin_batch(self, batch, explained):
        self._per_model = {}
        self._shared_imputations = {}

    def _curves(self, batch, one, maps):
        return road_curves(
            one.model, batch.images, maps, one.classes, fractions=self.fractions, noise=self.noise,
            seeds=np.asarray(batch.ids), tie_draws=self.tie_draws, imputation_cache=self._shared_imputations if one.method in BASELINES else None,
        )

    def model_baseline(self, batch, one):
        """The model's noise map's (MoRF, LeRF) curves on these images, computed once per batch."""
        key = model_batch_key(batch, one)
        if key not in self._per_model:
            self._per_model[key] = self._curves(batch, one._replace(method="noise"), noise_maps(batch.images))
        return self._per_model[key]

    def chance(self, batch):
        names = ("road_combined", "road_morf_vs_noise", "road_lerf_vs_noise", "road_combined_vs_noise")
        return chance_of_perturbation(batch, self.max_images, names)

    def score(self, batch, one):
        n = len(one.maps)
        noise_morf, noise_lerf = self.model_baseline(batch, one)
        morf = np.full((n, len(self.fractions)), np.nan)
        lerf = np.full((n, len(self.fractions)), np.nan)
        ok = np.asarray(one.status) == metrics.OK
        is_noise = one.method == NOISE_COLUMN
        if is_noise:  # the same maps (seeded by the image) as the baseline's
            morf[ok], lerf[ok] = noise_morf[ok], noise_lerf[ok]
        elif ok.any():
            morf[ok], lerf[ok] = self._curves(batch.take(ok), one.take(ok), one.maps[ok])
        extra = {
            "morf": [rounded(c) if good else None for c, good in zip(morf, ok)],
            "lerf": [rounded(c) if good else None for c, good in zip(lerf, ok)],
        }
        scores = {"road_morf": morf.mean(axis=1), "road_lerf": lerf.mean(axis=1),
                  "road_combined": combined_score(morf, lerf)}
        baseline = {"road_morf": noise_morf.mean(axis=1), "road_lerf": noise_lerf.mean(axis=1),
                    "road_combined": combined_score(noise_morf, noise_lerf)}
        values = dict(scores)
        for name, value in scores.items():
            values[f"{name}_vs_noise"] = minus_baseline(value, baseline[name], is_noise)
        return ScoreResult(values, extra)

    def summarize(self, extras):
        curves = mean_curves(extras, ("morf", "lerf"))
        if not curves:
            return {}
        return {"road_curves": {"x": list(self.fractions), "curves": curves}}

    def markdown(self, summary, models, methods):
        curves = summary.get("road_curves")
        if not curves:
            return []
        return curve_table(
            curves, models, methods, ("morf", "lerf"),
            "### ROAD: mean class probability with the top (MoRF) or bottom (LeRF) fraction x of pixels imputed",
            f"Noisy linear imputation (noise sigma {NOISE:g} on 0-255 pixels), fractions "
            + ", ".join(f"{x:g}" for x in self.fractions) + ".",
            at=self.fractions[::2],
        )

    def figures(self, summary, folder, models, methods):
        curves = summary.get("road_curves")
        if curves:
            plot_mean_curves(
                curves, f"{folder}/road.png", models, methods,
                panels=(("morf", "MoRF (lower is better)"), ("lerf", "LeRF (higher is better)")),
                xlabel="fraction of pixels imputed",
            )
