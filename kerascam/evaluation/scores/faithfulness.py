"""Faithfulness: the deletion and insertion games of Petsiuk et al. (2018).

Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation of
Black-box Models" (BMVC 2018), Sec. 4.1, score a map by what happens to the
model when the pixels it ranks highest are taken away or given back:

* **deletion**: starting from the image, the pixels are set to a baseline
  in order of map value, highest first. A faithful map names the pixels the
  class depends on, so the class probability falls early: a low area under
  the curve is better.
* **insertion**: starting from a blurred copy of the image, the original
  pixels are put back in the same order. The probability should rise early:
  a high area is better.

The choices made here, each a keyword of `deletion_insertion_curves`:

* **Order.** Pixels are ranked by the map (the map resized to the input, one
  value per pixel, all three channels moved together), highest first. Ties
  are broken at random with a seed per image
  (`kerascam.evaluation.perturbation.pixel_order`); a step whose count cuts
  a plateau of equal values, leaving at least 1 % of the pixels to the
  tie-break, is averaged over ``tie_draws`` draws of it (default 3); every
  other step is computed once.
* **Steps.** ``steps`` = K (default 16) gives K + 1 points: step k has the
  first ``round(k * H * W / K)`` pixels of the order changed (halves round
  up), from none at k = 0 to all at k = K, and its x value is k / K. RISE
  changes 224 pixels per step (224 steps at 224x224); 16 steps cost 34
  forward passes per map (both curves), and at 48x48 each step moves 144
  pixels, about a sticker of the shapes dataset.
* **Deletion baseline.** 0 in every channel, i.e. black in the raw 0-255
  pixels the models take. RISE sets deleted pixels to zero too, but in its
  models' normalised input, where zero is the ImageNet mean colour; here
  each model normalises inside its graph (the U-Nets scale to [0, 1],
  ResNet50 and VGG16 subtract the mean), so a zero there would be black
  for some models and grey for others. A baseline in raw pixels is the same
  for every model; ``deletion_baseline=(123.68, 116.78, 103.94)`` gives
  RISE's grey.
* **Insertion start.** A Gaussian blur of the image (RISE's choice: a
  kernel of sigma 5 px cut off at 11x11 px on 224x224 images). Here sigma is
  relative to the image, ``BLUR_SIGMA_PER_SIDE`` = 1/16 of its shorter side
  (3 px at 48x48, 14 px at 224x224), truncated at 4 sigma with mirrored
  edges (``scipy.ndimage.gaussian_filter``'s defaults). RISE's 5 px would be
  about 1 px at 48x48, which leaves a 3-4 px sticker, the evidence of the
  shapes dataset's ``disk_sticker`` class, readable in the starting image;
  at 1/16 a feature of that size is washed out while the layout of the
  image stays.
* **Probability.** The models output logits: the curve is
  ``softmax(logits)[class]`` for the class the map explains. A model that
  ends in a softmax is read at its logits (`kerascam.cams.logits`), so it
  gets the same probabilities.

A caveat that the numbers show: black pixels scattered over an image take
it out of the distribution the model was trained on, so a map that
scatters its top pixels (noise) deletes "well"; on the demo's trained
models most maps delete worse than the noise map (docs/results.md,
"Faithfulness against each model's own noise map"). ROAD (`road.py`) fills
the removed pixels from their neighbours instead, and there most CAMs score
above the noise map (same section).

Cost and memory: the perturbed images are made inside one compiled
TensorFlow function per model (traced once, cached in a
`weakref.WeakKeyDictionary`), which also runs the forward pass; a batch of
``batch_size`` perturbed images holds the steps of one or a few maps, so the
work is at most 2 (K + 1) forward passes per map (plus the plateau steps of
the further tie draws) and memory does not grow with the number of images
(``benchmarks/faithfulness.py`` measures both). Three of the passes do not
depend on the map (the image, the all-deleted image, the blurred image):
`endpoint_probabilities` computes them once per model and image, and the
scorer hands them to every method of that model.

Across models: a model that is fragile under black pixels gives low
deletion scores to every map. The scorer therefore also reports each score
minus the same model's ``noise`` map's score on the same image
(``deletion_auc_vs_noise``, ``insertion_auc_vs_noise``), and those are the
fields of the paired U-Net - ablated comparison.
"""

import numpy as np

from kerascam import metrics
from kerascam.evaluation.baselines import (
    NOISE_COLUMN, chance_of_perturbation, minus_baseline, model_batch_key, noise_maps,
)
from kerascam.evaluation.curves import DECIMALS, curve_table, mean_curves, rounded
from kerascam.evaluation.perturbation import (
    DEFAULT_BATCH_SIZE, TIE_DRAWS, check_perturbation_inputs, cut_plateaus, gaussian_kernel, min_tie_pixels,
    perturbed_forward, pixel_order, pixel_ranks,
)
from kerascam.evaluation.score_figures import plot_mean_curves
from kerascam.evaluation.scorer import Field, Scorer, ScoreResult, register

DEFAULT_STEPS = 16
# Sized by the CPU cost per image (benchmarks/README.md, score_cost.py).
DEFAULT_IMAGES = 50
DELETION_BASELINE = 0.0  # black, in the raw 0-255 pixels
BLUR_SIGMA_PER_SIDE = 1.0 / 16.0


def pixels_changed(steps, num_pixels):
    """How many pixels step k = 0..K has changed: ``round(k * num_pixels / K)``, halves up.

    Args:
        steps: K, a positive integer.
        num_pixels: H * W.

    Returns:
        int64 array (K + 1,), from 0 to ``num_pixels``.
    """
    k = np.arange(steps + 1, dtype=np.int64)
    return (2 * k * num_pixels + steps) // (2 * steps)


def blur_sigma_for(image_shape):
    """The default insertion blur: `BLUR_SIGMA_PER_SIDE` of the shorter side, in pixels."""
    return BLUR_SIGMA_PER_SIDE * min(image_shape[:2])


def _check_geometry(forward, images, blur_sigma, batch_size):
    """The blur kernel for ``images``; ValueError for a batch size, image shape or blur that cannot run."""
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer. Received: batch_size={batch_size}")
    _, height, width, channels = images.shape
    if forward.image_shape != (height, width, channels):
        raise ValueError(f"images of shape {images.shape[1:]} do not fit the model's input {forward.image_shape}")
    sigma = blur_sigma_for((height, width)) if blur_sigma is None else float(blur_sigma)
    kernel = gaussian_kernel(sigma)
    if len(kernel) // 2 > min(height, width):
        raise ValueError(
            f"blur_sigma={sigma} needs a kernel radius of {len(kernel) // 2} px, wider than the "
            f"{height}x{width} image"
        )
    return kernel


def _run_jobs(forward, images, ranks, classes, job_entry, job_changed, job_insert, baseline, kernel, batch_size):
    """Class probabilities of the jobs, ``batch_size`` perturbed images per forward pass.

    Jobs of one entry (image x tie draw) are consecutive, so a batch holds
    the images and ranks of a few entries only.
    """
    out = np.empty(len(job_entry))
    for start in range(0, len(job_entry), batch_size):
        rows = slice(start, start + batch_size)
        entries, local = np.unique(job_entry[rows], return_inverse=True)
        out[rows] = forward(
            images[entries], ranks[entries], classes[entries], local.astype(np.int32),
            job_changed[rows].astype(np.int32), job_insert[rows], baseline, kernel,
        )
    return out


def endpoint_probabilities(model, images, classes, *, batch_size=DEFAULT_BATCH_SIZE,
                           deletion_baseline=DELETION_BASELINE, blur_sigma=None):
    """The three points of the curves that no map changes: the image, the all-deleted image, the blur.

    They are deletion's first and last points and insertion's first (its last
    is the image again), the same for every map of one model and image, so
    the scorer computes them once and passes them to every method.

    Args:
        model, images, classes, batch_size, deletion_baseline, blur_sigma: as
            `deletion_insertion_curves`.

    Returns:
        float64 (n, 3): ``softmax(logits)[class]`` of the image, of the image
        with every pixel at ``deletion_baseline``, and of its Gaussian blur.
    """
    images = np.asarray(images, np.float32)
    classes = np.asarray(classes, np.int64).reshape(-1)
    n, height, width, channels = images.shape
    forward = perturbed_forward(model)
    kernel = _check_geometry(forward, images, blur_sigma, batch_size)
    baseline = np.broadcast_to(np.asarray(deletion_baseline, np.float32), (channels,)).copy()
    ranks = np.zeros((n, height, width), np.int32)  # 0 or every pixel changed: the order does not matter
    entry = np.repeat(np.arange(n), 3)
    changed = np.tile([0, height * width, 0], n)
    insert = np.tile([False, False, True], n)
    return _run_jobs(forward, images, ranks, classes, entry, changed, insert, baseline, kernel,
                     batch_size).reshape(n, 3)


def deletion_insertion_curves(
    model,
    images,
    maps,
    classes,
    *,
    steps=DEFAULT_STEPS,
    batch_size=DEFAULT_BATCH_SIZE,
    deletion_baseline=DELETION_BASELINE,
    blur_sigma=None,
    seeds=None,
    tie_draws=TIE_DRAWS,
    endpoints=None,
):
    """Deletion and insertion curves of Petsiuk et al. (2018), RISE, Sec. 4.1.

    For each image, the pixels are taken in `pixel_order` of its map (highest
    first, ties at random, seeded by ``seeds``). At step k = 0..K the first
    ``round(k * H * W / K)`` of them are set to ``deletion_baseline``
    (deletion, from the image) or to the image's own values (insertion, from
    a Gaussian blur of the image), and the curve's value is the model's
    ``softmax(logits)[class]`` of that perturbed image. A step whose count
    cuts a plateau of tied map values, leaving at least 1 % of the pixels to
    the tie-break (`cut_plateaus`, `min_tie_pixels`), is the mean over
    ``tie_draws`` draws of the tie-break. The perturbed images go through one
    compiled function per model (`perturbed_forward`) in batches of
    ``batch_size``, built there from the image, its pixel ranks and the step,
    so memory holds one batch whatever the number of images.

    Args:
        model: a Keras classifier taking raw pixels (one input, one output:
            logits, or a softmax read at its logits).
        images: (n, H, W, C) pixels as the model takes them (0-255 RGB here).
        maps: (n, H, W) finite explanation maps at the input resolution; only
            their order matters.
        classes: (n,) the class each map explains.
        steps: K, the number of steps; the curves have K + 1 points at
            x = k / K. Default 16.
        batch_size: perturbed images per forward pass. Default 64.
        deletion_baseline: the value deleted pixels get: a number or one per
            channel. Default 0 (black), RISE's.
        blur_sigma: sigma in pixels of the insertion's Gaussian blur; None
            (default) for `BLUR_SIGMA_PER_SIDE` of the shorter image side.
        seeds: (n,) non-negative integers seeding each image's tie-break (its
            index in the split); default 0..n-1.
        tie_draws: draws of the tie-break averaged at the steps that cut a
            plateau; 1 for a single random tie-break. Default `TIE_DRAWS` (3).
        endpoints: `endpoint_probabilities` of these images and classes,
            when already computed (by another method's call); None computes
            them.

    Returns:
        (deletion, insertion): float64 arrays (n, K + 1) of class
        probabilities; column 0 of deletion is the unperturbed image's, and
        so is column K of insertion.

    Raises:
        ValueError: for mismatched shapes, non-finite maps, steps < 1,
            tie_draws < 1 or a blur wider than the image.
    """
    images, maps, classes = check_perturbation_inputs(images, maps, classes)
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer. Received: steps={steps}")
    if int(tie_draws) != tie_draws or tie_draws < 1:
        raise ValueError(f"tie_draws must be a positive integer. Received: tie_draws={tie_draws}")
    steps, batch_size, tie_draws = int(steps), int(batch_size), int(tie_draws)
    n, height, width, channels = images.shape
    forward = perturbed_forward(model)
    kernel = _check_geometry(forward, images, blur_sigma, batch_size)
    images = images.astype(np.float32)
    if endpoints is None:
        endpoints = endpoint_probabilities(model, images, classes, batch_size=batch_size,
                                           deletion_baseline=deletion_baseline, blur_sigma=blur_sigma)
    endpoints = np.asarray(endpoints, np.float64)
    if endpoints.shape != (n, 3):
        raise ValueError(f"endpoints must be (n, 3) = {(n, 3)}. Received: shape={endpoints.shape}")
    baseline = np.broadcast_to(np.asarray(deletion_baseline, np.float32), (channels,)).copy()
    changed = pixels_changed(steps, height * width)
    seeds = np.arange(n) if seeds is None else np.asarray(seeds).reshape(-1)

    entry_image, entry_draw, entry_ranks, cut = _tie_entries(maps, seeds, changed, tie_draws)
    job_entry, job_step, job_insert = _jobs(entry_image, entry_draw, cut, steps)
    probabilities = _run_jobs(
        forward, images[entry_image], np.stack(entry_ranks), classes[entry_image], job_entry,
        changed[job_step], job_insert, baseline, kernel, batch_size,
    )
    # Sums over the draws at each step, divided by the draws computed there.
    points = steps + 1
    total = np.zeros((n, 2, points))
    count = np.zeros((n, 2, points))
    np.add.at(total, (entry_image[job_entry], job_insert.astype(np.int64), job_step), probabilities)
    np.add.at(count, (entry_image[job_entry], job_insert.astype(np.int64), job_step), 1)
    curves = total / np.maximum(count, 1)
    curves[:, 0, 0], curves[:, 0, steps] = endpoints[:, 0], endpoints[:, 1]
    curves[:, 1, 0], curves[:, 1, steps] = endpoints[:, 2], endpoints[:, 0]
    return curves[:, 0], curves[:, 1]


def _tie_entries(maps, seeds, changed, tie_draws):
    """The (image, tie draw) pairs a curve is computed for, with their pixel ranks.

    Draw 0 for every image; the further draws only for the images whose
    steps cut a plateau (`cut_plateaus`).

    Returns:
        (entry_image int64 (e,), entry_draw list, entry_ranks list of (H, W),
        cut bool (n, K + 1)).
    """
    n, height, width = maps.shape
    first = pixel_order(maps, seeds)
    cut = cut_plateaus(maps, first, changed, min_tie_pixels(height * width))
    entry_image, entry_draw, entry_ranks = [], [], []
    for i in range(n):
        for draw in range(tie_draws if cut[i].any() else 1):
            order = first[i : i + 1] if draw == 0 else pixel_order(maps[i : i + 1], seeds[i : i + 1], draw)
            entry_image.append(i)
            entry_draw.append(draw)
            entry_ranks.append(pixel_ranks(maps[i : i + 1], order=order)[0])
    return np.asarray(entry_image, np.int64), entry_draw, entry_ranks, cut


def _jobs(entry_image, entry_draw, cut, steps):
    """The forward passes to run: (entry, step, insertion?) for the steps that depend on the map.

    Draw 0 of an image runs every inner step; a further draw only the steps
    that cut a plateau.
    """
    inner = np.arange(1, steps)
    job_entry, job_step, job_insert = [], [], []
    for e, (i, draw) in enumerate(zip(entry_image, entry_draw)):
        taken = inner if draw == 0 else inner[cut[i, inner]]
        for insert in (False, True):
            job_entry.append(np.full(len(taken), e))
            job_step.append(taken)
            job_insert.append(np.full(len(taken), insert))
    return (np.concatenate(job_entry).astype(np.int64), np.concatenate(job_step).astype(np.int64),
            np.concatenate(job_insert).astype(bool))


def area_under_curve(curves):
    """Area under curves sampled at x = k / K, k = 0..K: the trapezoid rule on [0, 1].

    Args:
        curves: array (..., K + 1) with K >= 1.

    Returns:
        float64 array (...); NaN where a curve holds NaN.
    """
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim == 0 or curves.shape[-1] < 2:
        raise ValueError(f"curves need at least two points on their last axis. Received: shape={curves.shape}")
    steps = curves.shape[-1] - 1
    return (curves.sum(axis=-1) - 0.5 * (curves[..., 0] + curves[..., -1])) / steps


@register
class FaithfulnessScorer(Scorer):
    """Deletion and insertion AUC of each map, also minus the model's noise map's (module docstring).

    Config attributes read (with their defaults when the config lacks them):
    ``faithfulness_images`` (`DEFAULT_IMAGES`; None for every image),
    ``faithfulness_steps`` (`DEFAULT_STEPS`) and ``tie_draws``
    (`TIE_DRAWS`).
    """

    name = "faithfulness"
    description = "Deletion and insertion (Petsiuk et al. 2018, RISE)"
    needs = ("model",)
    max_images = DEFAULT_IMAGES
    fields = (
        Field(
            "deletion_auc",
            "Deletion AUC: class probability as the map's top pixels are blacked out (lower is better)",
            percent=False,
            digits=6,
        ),
        Field(
            "insertion_auc",
            "Insertion AUC: class probability as the map's top pixels are restored on a blurred copy "
            "(higher is better)",
            percent=False,
            digits=6,
        ),
        Field(
            "deletion_auc_vs_noise",
            "Deletion AUC minus the same model's noise map's on the same image (lower is better; "
            "0: no better than noise), the figure to compare models by",
            percent=False,
            digits=6,
            paired=True,
        ),
        Field(
            "insertion_auc_vs_noise",
            "Insertion AUC minus the same model's noise map's on the same image (higher is better; "
            "0: no better than noise), the figure to compare models by",
            percent=False,
            digits=6,
            paired=True,
        ),
    )

    def __init__(self, config):
        super().__init__(config)
        self.max_images = getattr(config, "faithfulness_images", DEFAULT_IMAGES)
        self.steps = getattr(config, "faithfulness_steps", DEFAULT_STEPS)
        self.tie_draws = getattr(config, "tie_draws", TIE_DRAWS)
        if int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"faithfulness_steps must be a positive integer. Received: {self.steps}")
        if self.max_images is not None and (int(self.max_images) != self.max_images or self.max_images < 1):
            raise ValueError(f"faithfulness_images must be a positive integer or None. Received: {self.max_images}")
        if int(self.tie_draws) != self.tie_draws or self.tie_draws < 1:
            raise ValueError(f"tie_draws must be a positive integer. Received: {self.tie_draws}")
        self.steps, self.tie_draws = int(self.steps), int(self.tie_draws)
        self._per_model = {}  # model_batch_key -> (endpoints, noise map's deletion and insertion curves)

    def settings(self):
        return {
            **super().settings(),
            "faithfulness_steps": self.steps,
            "faithfulness_deletion_baseline": DELETION_BASELINE,
            "faithfulness_blur_sigma_per_side": BLUR_SIGMA_PER_SIDE,
            "tie_draws": self.tie_draws,
        }

    def begin_batch(self, batch, explained):
        self._per_model = {}

    def _curves(self, batch, one, maps, endpoints=None):
        return deletion_insertion_curves(
            one.model, batch.images, maps, one.classes, steps=self.steps, seeds=batch.ids,
            tie_draws=self.tie_draws, endpoints=endpoints,
        )

    def model_baseline(self, batch, one):
        """``(endpoints, (deletion, insertion))`` of the model's noise map on these images, computed once per batch."""
        key = model_batch_key(batch, one)
        if key not in self._per_model:
            endpoints = endpoint_probabilities(one.model, batch.images, one.classes)
            self._per_model[key] = (endpoints, self._curves(batch, one, noise_maps(batch.images), endpoints))
        return self._per_model[key]

    def chance(self, batch):
        return chance_of_perturbation(batch, self.max_images, ("deletion_auc_vs_noise", "insertion_auc_vs_noise"))

    def score(self, batch, one):
        n = len(one.maps)
        endpoints, noise_curves = self.model_baseline(batch, one)
        deletion = np.full((n, self.steps + 1), np.nan)
        insertion = np.full((n, self.steps + 1), np.nan)
        ok = np.asarray(one.status) == metrics.OK
        if one.method == NOISE_COLUMN:  # the same maps (seeded by the image) as the baseline's
            deletion[ok], insertion[ok] = noise_curves[0][ok], noise_curves[1][ok]
        elif ok.any():
            deletion[ok], insertion[ok] = self._curves(batch.take(ok), one.take(ok), one.maps[ok], endpoints[ok])
        extra = {
            "deletion": [rounded(c) if good else None for c, good in zip(deletion, ok)],
            "insertion": [rounded(c) if good else None for c, good in zip(insertion, ok)],
        }
        deletion_auc, insertion_auc = area_under_curve(deletion), area_under_curve(insertion)
        values = {
            "deletion_auc": deletion_auc,
            "insertion_auc": insertion_auc,
            "deletion_auc_vs_noise": minus_baseline(
                deletion_auc, area_under_curve(noise_curves[0]), one.method == NOISE_COLUMN),
            "insertion_auc_vs_noise": minus_baseline(
                insertion_auc, area_under_curve(noise_curves[1]), one.method == NOISE_COLUMN),
        }
        return ScoreResult(values, extra)

    def summarize(self, extras):
        """Mean deletion and insertion curves with 95 % intervals per step, per model x method.

        Returns:
            ``{"faithfulness_curves": {"x": [0, 1/K, ..., 1], "curves": {model:
            {method: {"deletion": {"mean", "low", "high": lists, "n":
            images}, "insertion": {...}}}}}}`` (see `mean_curves`), or {}
            when no map was scored.
        """
        curves = mean_curves(extras, ("deletion", "insertion"))
        if not curves:
            return {}
        points = len(next(iter(next(iter(curves.values())).values()))["deletion"]["mean"])
        xs = [round(k / (points - 1), DECIMALS) for k in range(points)]
        return {"faithfulness_curves": {"x": xs, "curves": curves}}

    def markdown(self, summary, models, methods):
        curves = summary.get("faithfulness_curves")
        if not curves:
            return []
        return curve_table(
            curves, models, methods, ("deletion", "insertion"),
            "### Faithfulness: mean class probability along the deletion and insertion curves",
            f"x is the fraction of pixels changed, in map order; {len(curves['x']) - 1} steps, deletion to black "
            f"(0), insertion from a Gaussian blur of sigma {BLUR_SIGMA_PER_SIDE:g} x the shorter side.",
        )

    def figures(self, summary, folder, models, methods):
        curves = summary.get("faithfulness_curves")
        if curves:
            plot_mean_curves(curves, f"{folder}/faithfulness.png", models, methods)
