"""Does the map depend on what the model learned? Model-parameter randomization.

Adebayo et al. 2018 ("Sanity Checks for Saliency Maps", NeurIPS) re-initialize
a trained network's weights and explain the same image with the same method:
a map that barely changes cannot be explaining what the network learned (an
edge detector passes no sanity check it does not already pass without the
model). The randomized networks are copies of the trained model made by
`kerascam.evaluation.randomize_weights` (its named blocks per model family,
and how each weight is drawn again); the trained model is never modified.
The variants scored here:

* the cascade: the layers are re-initialized cumulatively, from the logits
  down, one named block at a time
  (`kerascam.evaluation.randomize_weights.cascade_blocks`: U-Nets
  ``predictions, dec1, ..., dec4, bottleneck, enc4, ..., enc1``; ResNet50
  ``predictions, conv5, ..., conv1``; VGG16 ``predictions, fc2, fc1,
  block5, ..., block1``);
* the full randomization: every layer re-initialized at once, with a draw
  independent of the cascade's (its fields enter the records and tables);
* the independent randomization, Adebayo et al.'s second variant: one block
  at a time re-initialized (the same draw as the cascade's), every other
  block keeping its trained weights (rows ``only BLOCK``);
* for the U-Nets, the encoder only (``enc1``-``enc4`` and the
  ``bottleneck``: the contracting path, everything below the first
  up-convolution, which also feeds the skip connections) and the decoder
  only (``dec1``-``dec4``), the head and the other half trained (fields
  ``randomization_encoder_spearman`` and ``..._decoder_spearman``). A map
  that stays put when the encoder is random but the decoder and head are
  trained is drawn by the decoder from whatever the skips carry.

A model whose layer names follow none of these layouts (a user's own) gets
the full randomization only, and one line names the score and the reason.

A randomized map that is all zero or constant (the randomized network's
class gradient vanished, or its ReLU killed every activation) is not
dropped: it shares no ranking with the trained map, so its Spearman
correlation is defined as 0 (the value of two independent maps), and its
SSIM is computed as for any map (against the constant map, which the formula
allows). Dropping those images would keep only the maps that survived
randomization, the most model-independent ones, and raise the mean
similarity of exactly the models whose maps break. They are counted per
step (row "all-zero or constant randomized maps"). A non-finite randomized
map has no similarity; it is left out and counted apart.

At each step the trained model's map and the randomized model's map of the
same image and the same class are compared with Spearman's rank correlation
(`kerascam.metrics.rank_correlation`) and the structural similarity
(`ssim`): values near 1 fail the check, lower values pass it. There is no
fixed threshold; the ``edges`` and ``noise`` columns, which know nothing of
the model, give 1 by construction.
"""

import os

import numpy as np

from kerascam import metrics
from kerascam.evaluation.randomize_weights import FULL, SEED, RandomizedCopy, encoder_decoder_blocks
from kerascam.evaluation.score_figures import plot_cascade_curves, plot_cascade_grid
from kerascam.evaluation.scorer import Field, Scorer, ScoreResult, register
from kerascam.metrics import rank_correlation as spearman  # noqa: F401  (named as in the paper)

TRAINED = "trained"  # the curves' first point: the trained model itself
GRID_METHOD = "gradcam++"  # the method of the classic grid, when it is a column

SSIM_WINDOW = 11  # Wang et al. 2004: an 11x11 Gaussian window ...
SSIM_SIGMA = 1.5  # ... of standard deviation 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_DATA_RANGE = 1.0  # the maps are min-max normalised to [0, 1] first
EMPTY_STATUSES = (metrics.ZERO, metrics.CONSTANT)  # randomized maps scored with Spearman 0


# ---------------------------------------------------------------------------
# Comparing two maps: the numeric core
# ---------------------------------------------------------------------------


def _pair(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"two maps (H, W) of the same shape are compared. Received: {a.shape} and {b.shape}")
    return a, b


def _unit(x):
    """Min-max normalisation to [0, 1]; a constant map becomes zeros."""
    low, high = x.min(), x.max()
    return np.zeros_like(x) if high == low else (x - low) / (high - low)


def _gaussian_window(size, sigma):
    offsets = np.arange(size) - (size - 1) / 2.0
    taps = np.exp(-(offsets**2) / (2.0 * sigma**2))
    window = np.outer(taps, taps)
    return window / window.sum()


def ssim(a, b, window=SSIM_WINDOW, sigma=SSIM_SIGMA):
    """Structural similarity of two maps (Wang et al. 2004, IEEE TIP), Adebayo's second similarity.

    Both maps are min-max normalised to [0, 1] (data range L = 1), then the
    local means, variances and covariance are taken under a ``window`` x
    ``window`` Gaussian window of standard deviation ``sigma`` (normalised to
    sum 1) at every position where it fits inside the map ("valid"), and

        SSIM = mean over positions of
               (2 mu_a mu_b + C1) (2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1) (s_a^2 + s_b^2 + C2))

    with C1 = (0.01 L)^2 and C2 = (0.03 L)^2, Wang et al.'s constants. The
    variances are the window-weighted (biased) ones of Wang's reference code.
    A map smaller than the window gets the largest odd window that fits. At
    48x48 an 11x11 window gives 38x38 positions.

    Args:
        a, b: two maps (H, W) of the same shape.
        window: side of the window, odd. Default 11.
        sigma: the Gaussian's standard deviation in pixels. Default 1.5.

    Returns:
        A float in [-1, 1] (1 for maps equal up to a positive affine change);
        NaN when either map is not finite.
    """
    a, b = _pair(a, b)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    a, b = _unit(a), _unit(b)
    side = min(window, *a.shape)
    side -= 1 - side % 2  # odd
    weights = _gaussian_window(side, sigma)

    def local_mean(x):
        patches = np.lib.stride_tricks.sliding_window_view(x, (side, side))
        return np.einsum("ijkl,kl->ij", patches, weights)

    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mu_a**2
    var_b = local_mean(b * b) - mu_b**2
    cov = local_mean(a * b) - mu_a * mu_b
    c1 = (SSIM_K1 * SSIM_DATA_RANGE) ** 2
    c2 = (SSIM_K2 * SSIM_DATA_RANGE) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(index.mean())


def similarities(trained, randomized, trained_ok, status):
    """Spearman and SSIM of each trained map with its randomized map.

    Args:
        trained: (n, H, W) the trained model's maps in [0, 1].
        randomized: (n, H, W) the randomized model's maps.
        trained_ok: (n,) bool, the trained maps that are defined.
        status: (n,) `kerascam.metrics.map_status` of the randomized maps.

    Returns:
        ``(spearman, ssim, empty, nonfinite)``: two float arrays (n,), NaN
        where the trained map is undefined or the randomized one is not
        finite; and two bool arrays (n,) marking the randomized maps that are
        all zero or constant (Spearman defined as 0, see the module
        docstring) and those that are not finite (left out).
    """
    status = np.asarray(status)
    n = len(status)
    empty = trained_ok & np.isin(status, EMPTY_STATUSES)
    nonfinite = trained_ok & (status == metrics.NONFINITE)
    rho = np.full(n, np.nan)
    sim = np.full(n, np.nan)
    for i in np.flatnonzero(trained_ok & ~nonfinite):
        if empty[i]:
            rho[i] = 0.0
            sim[i] = ssim(trained[i], np.zeros_like(trained[i]))  # a constant map is 0 after min-max
        else:
            rho[i] = spearman(trained[i], randomized[i])
            sim[i] = ssim(trained[i], randomized[i])
    return rho, sim, empty, nonfinite


# ---------------------------------------------------------------------------
# The scorer
# ---------------------------------------------------------------------------


def _json_number(value, digits=6):
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def _json_map(values, digits=3):
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def _as_float(value):
    return np.nan if value is None else float(value)


def _interval(values):
    ci = metrics.mean_confidence_interval([_as_float(v) for v in values])
    return {"mean": _json_number(ci.mean), "low": _json_number(ci.low), "high": _json_number(ci.high), "n": ci.n}


INDEPENDENT = "only "  # prefix of the independent randomization's steps: "only dec1"
PARTS = ("encoder", "decoder")  # the U-Nets' halves, each randomized alone


def _half_field(half, layers, other):
    """The field of a U-Net half randomized alone (``PARTS``)."""
    return Field(
        f"randomization_{half}_spearman",
        f"Spearman correlation of the map with the map of the model whose {half} ({layers}) alone is "
        f"randomized, {other} and head trained (U-Nets only; near 1: the map ignores the {half})",
        percent=False, digits=6, paired=False,
    )


@register
class RandomizationScore(Scorer):
    """The model-parameter randomization checks of Adebayo et al. 2018 (module docstring).

    ``score`` returns, per image, the Spearman correlation and SSIM between
    the trained model's map and the fully randomized model's map, and for
    the U-Nets the Spearman correlation with the encoder-only and the
    decoder-only randomized model's map (the fields), and as its extra every
    step::

        {"steps": ["predictions", ..., "full", "only predictions", ..., "encoder", "decoder"],
         "kinds": {step: "cascade", "full", "independent" or "part"},
         "layers": {step: number of layers re-initialized at that step},
         "spearman": {step: [per image, 6 decimals, None where undefined]},
         "ssim": {step: [...]},
         "empty": {step: randomized maps all zero or constant (Spearman 0)},
         "nonfinite": {step: randomized maps not finite (left out)},
         "trained_undefined": trained maps not "ok",
         "grid": {...}}   # only with image 0, see below

    For the classic figure, the batch holding image 0 (the first image of
    the split) also keeps, for the grid's method only (``gradcam++`` when it
    is a column, else the first column), that image (uint8) and its maps
    along the cascade (3 decimals; 2,304 numbers per step at 48x48):
    ``"grid": {"image_id": 0, "image": [...], "maps": {"trained": [...],
    step: [...] or None}}``.

    ``summarize`` gives ``randomization_cascade``: per model x method, per
    step (``trained`` first, the cascade, ``full``; then the independent
    steps and the U-Net halves), the mean Spearman and SSIM with their 95 %
    Student-t interval and n, and the counts of empty and non-finite maps;
    and ``_randomization_grid`` (figure data, not written to table.json):
    per model, the grid's image, method, steps and maps.
    """

    name = "randomization"
    description = "model-parameter randomization: the trained model's map against a re-initialized model's"
    fields = (
        Field(
            "randomization_spearman",
            "Spearman correlation of the map with the fully randomized model's map "
            "(lower: the map depends more on the weights; near 1 fails the sanity check)",
            percent=False, digits=6, paired=False,
        ),
        Field(
            "randomization_ssim",
            "SSIM of the map with the fully randomized model's map "
            "(lower: the map depends more on the weights; near 1 fails the sanity check)",
            percent=False, digits=6, paired=False,
        ),
        _half_field("encoder", "enc1-enc4, bottleneck", "decoder"),
        _half_field("decoder", "dec1-dec4", "encoder"),
    )
    needs = ("model",)
    max_images = 25

    def __init__(self, config):
        super().__init__(config)
        self.max_images = getattr(config, "randomization_images", type(self).max_images)
        methods = getattr(config, "methods", None)
        self._grid_method = GRID_METHOD if not methods or GRID_METHOD in methods else list(methods)[0]
        self._copies = {}  # id(model) -> (model, RandomizedCopy); the model is held so its id stays its own

    def settings(self):
        return {**super().settings(), "randomization_seed": SEED}

    def randomized_copy(self, model):
        """The `RandomizedCopy` of ``model``, built on first use and then reused.

        The draws kept by the other models' copies are freed: the experiment
        scores one model's columns after another, so memory holds one
        model's draws.
        """
        entry = self._copies.get(id(model))
        if entry is None or entry[0] is not model:
            entry = (model, RandomizedCopy(model))
            self._copies[id(model)] = entry
        for other, copy in self._copies.values():
            if other is not model:
                copy.forget_draws()
        return entry[1]

    @staticmethod
    def plan(copy):
        """The steps for one model: ``(step, kind, [(layers, draw), ...] to re-initialize from the trained model)``.

        The cascade's steps are cumulative; every other step starts from the
        trained weights. The independent blocks and the U-Net halves use the
        cascade's draw, so "only predictions" is the cascade's first step.
        """
        steps, done = [], []
        for step, layers in copy.cascade:
            done = done + [(layers, "cascade")]
            steps.append((step, "cascade", done))
        steps.append((FULL, "full", [(copy.layer_names, FULL)]))
        steps += [(INDEPENDENT + step, "independent", [(layers, "cascade")]) for step, layers in copy.cascade]
        halves = encoder_decoder_blocks(copy.trained) if copy.cascade else None
        if halves:
            steps += [(part, "part", [(halves[part], "cascade")]) for part in PARTS]
        return steps

    def randomized_maps(self, copy, batch, one, trained_ok):
        """Explains the randomized model at each step of `plan`, in order.

        Yields ``(step, kind, layers, (maps, status, similarities(...)))``:
        the step's name and kind, the number of layers its block holds (a
        cascade step adds them to the earlier ones'), the randomized model's
        maps and their status, and their similarities to the trained maps.
        ``copy`` is left randomized; the caller resets it.
        """
        first = None  # (step, result) of the first step
        for step, kind, randomizations in self.plan(copy):
            if kind == "independent" and first is not None and step == INDEPENDENT + first[0]:
                result = first[1]  # "only" the first block is the cascade's first step
            else:
                if kind != "cascade" or len(randomizations) == 1:
                    copy.reset()
                names, draw = randomizations[-1]
                copy.randomize(names, draw)
                maps, _, status = one.explain(copy.model, batch.images, one.classes)
                result = (maps, status, similarities(one.maps, maps, trained_ok, status))
            if first is None:
                first = (step, result)
            yield step, kind, len(randomizations[-1][0]), result

    def score(self, batch, one):
        copy = self.randomized_copy(one.model)
        trained_ok = np.asarray(one.status) == metrics.OK
        n = len(trained_ok)
        grid_row = None
        if one.method == self._grid_method and 0 in np.asarray(batch.ids).tolist():
            grid_row = np.asarray(batch.ids).tolist().index(0)

        extra = {"steps": [], "kinds": {}, "layers": {}, "spearman": {}, "ssim": {}, "empty": {}, "nonfinite": {},
                 "trained_undefined": int(n - trained_ok.sum())}
        grid = None
        if grid_row is not None:
            image = np.clip(np.rint(np.asarray(batch.images[grid_row], dtype=np.float64)), 0, 255).astype(np.uint8)
            grid = {"image_id": 0, "image": image.tolist(), "maps": {TRAINED: _json_map(one.maps[grid_row])}}

        values = {}
        try:
            for step, kind, layers, (maps, status, (rho, sim, empty, nonfinite)) in self.randomized_maps(
                    copy, batch, one, trained_ok):
                extra["steps"].append(step)
                extra["kinds"][step] = kind
                extra["layers"][step] = layers
                extra["spearman"][step] = [_json_number(v) for v in rho]
                extra["ssim"][step] = [_json_number(v) for v in sim]
                extra["empty"][step] = int(empty.sum())
                extra["nonfinite"][step] = int(nonfinite.sum())
                if grid is not None and kind in ("cascade", "full"):
                    defined = str(status[grid_row]) == metrics.OK
                    grid["maps"][step] = _json_map(maps[grid_row]) if defined else None
                if step == FULL:
                    values.update(randomization_spearman=rho, randomization_ssim=sim)
                if kind == "part":
                    values[f"randomization_{step}_spearman"] = rho
        finally:
            copy.reset()
        for part in PARTS:  # models without a decoder: nothing to score
            values.setdefault(f"randomization_{part}_spearman", [None] * n)
        if grid is not None:
            extra["grid"] = grid
        return ScoreResult(values, extra)

    def summarize(self, extras):
        cascade, grids = {}, {}
        collected = {}
        for model, method, extra in extras:
            if not extra:
                continue
            entry = collected.setdefault((model, method), {
                "steps": list(extra["steps"]), "kinds": dict(extra["kinds"]), "layers": dict(extra["layers"]),
                "spearman": {}, "ssim": {}, "empty": {}, "nonfinite": {}, "trained_undefined": 0,
            })
            for step in extra["steps"]:
                entry["spearman"].setdefault(step, []).extend(extra["spearman"][step])
                entry["ssim"].setdefault(step, []).extend(extra["ssim"][step])
                for count in ("empty", "nonfinite"):
                    entry[count][step] = entry[count].get(step, 0) + int(extra[count][step])
            entry["trained_undefined"] += int(extra["trained_undefined"])
            if "grid" in extra and model not in grids:
                steps = [s for s in extra["steps"] if extra["kinds"][s] in ("cascade", "full")]
                grids[model] = {"method": method, "steps": [TRAINED, *steps], **extra["grid"]}
        for (model, method), entry in collected.items():
            kinds = entry["kinds"]
            cascade.setdefault(model, {})[method] = {
                # The cascade's curve (the figure's x axis), then the other variants.
                "steps": [TRAINED, *(s for s in entry["steps"] if kinds[s] in ("cascade", "full"))],
                "independent": [s for s in entry["steps"] if kinds[s] == "independent"],
                "parts": [s for s in entry["steps"] if kinds[s] == "part"],
                "layers": entry["layers"],
                "spearman": {step: _interval(entry["spearman"][step]) for step in entry["steps"]},
                "ssim": {step: _interval(entry["ssim"][step]) for step in entry["steps"]},
                "empty": entry["empty"],
                "nonfinite": entry["nonfinite"],
                "trained_undefined": entry["trained_undefined"],
            }
        if not cascade:
            return {}
        summary = {"randomization_cascade": cascade}
        if grids:
            summary["_randomization_grid"] = grids
        return summary

    def markdown(self, summary, models, methods):
        cascade = summary.get("randomization_cascade")
        if not cascade:
            return []
        lines = [
            "### Model-parameter randomization (cascade, independent, U-Net halves)", "",
            "Spearman correlation / SSIM between the trained model's map and the map of the same image and "
            "class when the layers are re-initialized (Adebayo et al. 2018): cumulatively from the logits down to "
            "each block (cascade); \"full\": every layer at once, an independent draw; \"only B\": block B alone, "
            "the rest trained (independent); \"encoder\" / \"decoder\": the U-Net's enc1-enc4 + bottleneck / "
            "dec1-dec4 alone, the rest and the head trained. Mean [95 % CI]; lower means the map depends more on "
            "the weights (passes the check), near 1 fails it. An all-zero or constant randomized map counts as "
            "Spearman 0 (it keeps no ranking of the trained map) and is counted in its own row; a non-finite "
            "one is left out and counted.", "",
        ]
        for model in models:
            rows = cascade.get(model)
            if not rows:
                continue
            columns = [k for k in methods if k in rows]
            order = []
            for k in columns:
                for step in [*rows[k]["steps"][1:], *rows[k]["independent"], *rows[k]["parts"]]:
                    if step not in order:
                        order.append(step)
            layers = next(iter(rows.values()))["layers"]
            lines += [f"#### {model}", "", "| step (layers) | " + " | ".join(columns) + " |",
                      "|---" * (len(columns) + 1) + "|"]
            for step in order:
                cells = []
                for k in columns:
                    if step not in rows[k]["spearman"]:
                        cells.append("n/a")
                        continue
                    cells.append(f"{_cell(rows[k]['spearman'][step])} / {_cell(rows[k]['ssim'][step])}")
                lines.append(f"| {step} ({layers.get(step, 0)}) | " + " | ".join(cells) + " |")
            for label, key in (("all-zero or constant randomized maps (Spearman 0), all steps", "empty"),
                               ("non-finite randomized maps (left out), all steps", "nonfinite")):
                lines.append(f"| {label} | " + " | ".join(str(sum(rows[k][key].values())) for k in columns) + " |")
            n = {k: rows[k]["spearman"][FULL]["n"] for k in columns if FULL in rows[k]["spearman"]}
            lines += ["", "n (full randomization): " + ", ".join(f"{k} {v}" for k, v in n.items()), ""]
        return lines

    def figures(self, summary, folder, models, methods):
        cascade = summary.get("randomization_cascade")
        if cascade:
            plot_cascade_curves(os.path.join(folder, "randomization_curves.png"), cascade, models, methods)
        grids = summary.get("_randomization_grid")
        if grids:
            plot_cascade_grid(os.path.join(folder, "randomization_grid.png"), grids, models)


def _cell(ci):
    if ci["mean"] is None:
        return "n/a"
    if ci["low"] is None:
        return f"{ci['mean']:.3f}"
    return f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"
