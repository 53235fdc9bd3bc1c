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
  from a generator seeded per image (by its index in the split), so a score
  does not depend on how the images were batched.
* **MoRF and LeRF.** At each fraction p of ``fractions`` (default 10 %,
  20 %, ..., 90 %) the ``round(p * H * W)`` pixels ranked highest by the map
  (most relevant first, MoRF) or lowest (least relevant first, LeRF) are
  removed, in the order of `faithfulness.pixel_order` (ties in raster order;
  LeRF takes that order from its end). The model's ``softmax(logits)[class]``
  of each imputed image is the curve's value. A faithful map makes the MoRF
  curve fall fast (low mean) and the LeRF curve stay high (high mean).

The imputed images of a few maps are run through one compiled forward
function per model (`faithfulness.perturbed_forward`'s ``probabilities``) in
batches; only one batch of images is held at a time.
"""

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from kerascam import metrics
from kerascam.evaluation.scorer import Field, Scorer, ScoreResult, register
from kerascam.evaluation.scores import faithfulness

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# 10 images x 8 methods x 4 demo models cost about 47 s of CPU on 2 cores
# (benchmarks/faithfulness.py: 0.09-0.27 s of CPU per map at 48x48).
DEFAULT_IMAGES = 10
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
    # ordering with diagonal pivots factors it 1.3-2.5x faster than spsolve's
    # default (COLAMD) on 48x48 masks.
    factors = scipy.sparse.linalg.splu(system, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
    solution = factors.solve(right)
    if noise:
        solution = solution + rng.normal(0.0, noise, solution.shape)
    filled[unknown] = solution
    return filled.reshape(image.shape).astype(np.float32)


def road_curves(model, images, maps, classes, *, fractions=DEFAULT_FRACTIONS, noise=NOISE, seeds=None,
                batch_size=faithfulness.DEFAULT_BATCH_SIZE):
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
        seeds: (n,) integers seeding each image's noise (e.g. its index in
            the split); default 0..n-1.
        batch_size: imputed images per forward pass. Default 64.

    Returns:
        (morf, lerf): float64 arrays (n, len(fractions)) of
        ``softmax(logits)[class]``, most and least relevant pixels removed.
    """
    images, maps, classes = faithfulness.check_perturbation_inputs(images, maps, classes)
    fractions = np.asarray(fractions, dtype=np.float64).reshape(-1)
    if len(fractions) == 0 or not ((fractions > 0) & (fractions < 1)).all():
        raise ValueError(f"fractions must lie in (0, 1). Received: fractions={fractions.tolist()}")
    seeds = np.arange(len(images)) if seeds is None else np.asarray(seeds).reshape(-1)
    n, height, width, _ = images.shape
    pixels = height * width
    counts = np.floor(fractions * pixels + 0.5).astype(np.int64)
    forward = faithfulness.perturbed_forward(model)
    curves = np.full((n, 2 * len(fractions)), np.nan)
    pending_images, pending_slots = [], []

    def flush():
        batch = np.stack(pending_images)
        slots = np.asarray(pending_slots)
        curves[slots[:, 0], slots[:, 1]] = forward.probabilities(batch, classes[slots[:, 0]]).numpy()
        pending_images.clear()
        pending_slots.clear()

    for i in range(n):
        order = faithfulness.pixel_order(maps[i : i + 1])[0]
        rng = np.random.default_rng(int(seeds[i]))
        for j, count in enumerate(np.concatenate([counts, counts])):
            removed = np.zeros(pixels, bool)
            removed[order[:count] if j < len(counts) else order[pixels - count :]] = True
            pending_images.append(
                linear_imputation(images[i], removed.reshape(height, width), noise=noise, rng=rng)
            )
            pending_slots.append((i, j))
            if len(pending_images) == batch_size:
                flush()
    if pending_images:
        flush()
    return curves[:, : len(fractions)], curves[:, len(fractions) :]


@register
class RoadScorer(Scorer):
    """MoRF and LeRF means of ROAD (see the module docstring).

    Config attributes read (defaults when the config lacks them):
    ``road_images`` (50; None for every image).
    """

    name = "road"
    description = "ROAD, noisy linear imputation (Rong et al. 2022)"
    needs = ("model",)
    max_images = DEFAULT_IMAGES
    fields = (
        Field(
            "road_morf",
            "ROAD MoRF: mean class probability with the map's top 10-90 % of pixels imputed (lower is better)",
            percent=False,
            digits=6,
            paired=True,
        ),
        Field(
            "road_lerf",
            "ROAD LeRF: mean class probability with the map's bottom 10-90 % of pixels imputed (higher is better)",
            percent=False,
            digits=6,
            paired=True,
        ),
    )

    def __init__(self, config):
        super().__init__(config)
        self.max_images = getattr(config, "road_images", DEFAULT_IMAGES)
        if self.max_images is not None and (int(self.max_images) != self.max_images or self.max_images < 1):
            raise ValueError(f"road_images must be a positive integer or None. Received: {self.max_images}")
        self.fractions = DEFAULT_FRACTIONS

    def settings(self):
        return {**super().settings(), "road_fractions": list(self.fractions), "road_noise": NOISE}

    def score(self, batch, one):
        n = len(one.maps)
        morf = np.full((n, len(self.fractions)), np.nan)
        lerf = np.full((n, len(self.fractions)), np.nan)
        ok = np.asarray(one.status) == metrics.OK
        if ok.any():
            morf[ok], lerf[ok] = road_curves(
                one.model, batch.images[ok], one.maps[ok], one.classes[ok], fractions=self.fractions,
                seeds=np.asarray(batch.ids)[ok],
            )
        extra = {
            "morf": [faithfulness.rounded(c) if good else None for c, good in zip(morf, ok)],
            "lerf": [faithfulness.rounded(c) if good else None for c, good in zip(lerf, ok)],
        }
        return ScoreResult({"road_morf": morf.mean(axis=1), "road_lerf": lerf.mean(axis=1)}, extra)

    def summarize(self, extras):
        curves = faithfulness.mean_curves(extras, ("morf", "lerf"))
        if not curves:
            return {}
        return {"road_curves": {"x": list(self.fractions), "curves": curves}}

    def markdown(self, summary, models, methods):
        curves = summary.get("road_curves")
        if not curves:
            return []
        return faithfulness.curve_table(
            curves, models, methods, ("morf", "lerf"),
            "### ROAD: mean class probability with the top (MoRF) or bottom (LeRF) fraction x of pixels imputed",
            f"Noisy linear imputation (noise sigma {NOISE:g} on 0-255 pixels), fractions "
            + ", ".join(f"{x:g}" for x in self.fractions) + ".",
            at=self.fractions[::2],
        )

    def figures(self, summary, folder, models, methods):
        curves = summary.get("road_curves")
        if curves:
            faithfulness.plot_curves(
                curves, f"{folder}/road.png", models, methods,
                panels=(("morf", "MoRF (lower is better)"), ("lerf", "LeRF (higher is better)")),
                xlabel="fraction of pixels imputed",
            )
