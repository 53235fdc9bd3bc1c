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
  keep raster order (row by row, left to right): a stable sort of the
  flattened map, so the order and the curves are deterministic.
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
scatters its top pixels (noise) deletes "well". On 16 validation images of
the demo's trained models, a random map's deletion AUC is 0.15 against
GradCAM's 0.14 (U-Net) and 0.39 (ResNet50). ROAD (`road.py`) fills the
removed pixels from their neighbours instead; there the random map's MoRF
mean is 0.73-0.78, far above GradCAM's 0.25 and 0.51.

Cost and memory: the perturbed images are made inside one compiled
TensorFlow function per model (traced once, cached in a
`weakref.WeakKeyDictionary`), which also runs the forward pass; a batch of
``batch_size`` perturbed images holds the steps of one or a few maps, so the
work is the 2 (K + 1) forward passes per map and memory does not grow with
the number of images (``benchmarks/faithfulness.py`` measures both).
"""

import weakref

import keras
import numpy as np
import tensorflow as tf

from kerascam import metrics
from kerascam.cams.logits import logits_model
from kerascam.evaluation.scorer import Field, Scorer, ScoreResult, register

DEFAULT_STEPS = 16
# 25 images x 8 methods x 4 demo models cost about 155 s of CPU on 2 cores
# (benchmarks/faithfulness.py: 0.07-0.43 s of CPU per map at 48x48, K = 16).
DEFAULT_IMAGES = 25
DEFAULT_BATCH_SIZE = 64
DELETION_BASELINE = 0.0  # black, in the raw 0-255 pixels
BLUR_SIGMA_PER_SIDE = 1.0 / 16.0
BLUR_TRUNCATE = 4.0  # kernel radius in sigmas, as scipy.ndimage.gaussian_filter
DECIMALS = 6  # of the saved curves
CURVE_XS = (0.0, 0.25, 0.5, 0.75, 1.0)  # where table.md reads the mean curves


def pixel_order(maps):
    """The order in which pixels are deleted or inserted: highest map value first.

    Ties are broken by raster order (row by row, left to right), a stable sort
    of the flattened map, so equal values never make the result depend on the
    sorting algorithm.

    Args:
        maps: float array (n, H, W) of finite values.

    Returns:
        int64 array (n, H * W): flat pixel indices (``row * W + column``),
        the first to change first.
    """
    maps = np.asarray(maps)
    flat = maps.reshape(len(maps), -1)
    return np.argsort(-flat, axis=1, kind="stable")


def pixel_ranks(maps):
    """Each pixel's position in `pixel_order`: int32 (n, H, W), 0 for the first to change."""
    maps = np.asarray(maps)
    order = pixel_order(maps)
    ranks = np.empty_like(order)
    positions = np.broadcast_to(np.arange(order.shape[1]), order.shape)
    np.put_along_axis(ranks, order, positions, axis=1)
    return ranks.reshape(maps.shape).astype(np.int32)


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


def gaussian_kernel(sigma, truncate=BLUR_TRUNCATE):
    """The 1-D Gaussian of `scipy.ndimage.gaussian_filter1d`: radius ``int(truncate * sigma + 0.5)``.

    Args:
        sigma: standard deviation in pixels; 0 gives ``[1.0]`` (no blur).
        truncate: radius in units of sigma. Default 4, scipy's.

    Returns:
        float32 array (2 * radius + 1,) that sums to 1.
    """
    if not sigma >= 0:
        raise ValueError(f"blur_sigma must be >= 0. Received: blur_sigma={sigma}")
    radius = int(truncate * sigma + 0.5)
    if radius == 0:
        return np.ones(1, np.float32)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (x / sigma) ** 2)
    return (weights / weights.sum()).astype(np.float32)


def gaussian_blur(images, kernel):
    """Separable Gaussian blur of (n, H, W, C) images with mirrored edges, in graph.

    Mirrored edges repeat the edge pixel (``d c b a | a b c d``), scipy's
    ``mode="reflect"``, so a constant image stays constant.

    Args:
        images: float32 tensor (n, H, W, C).
        kernel: float32 tensor (2r + 1,), e.g. `gaussian_kernel`; r must not
            exceed H or W.

    Returns:
        float32 tensor like `images`.
    """
    radius = (tf.size(kernel) - 1) // 2
    shape = tf.shape(images)
    # Channels go into the batch so that one single-channel filter serves all.
    planes = tf.reshape(tf.transpose(images, (0, 3, 1, 2)), (-1, shape[1], shape[2], 1))
    planes = tf.pad(planes, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    planes = tf.nn.conv2d(planes, tf.reshape(kernel, (-1, 1, 1, 1)), strides=1, padding="VALID")
    planes = tf.nn.conv2d(planes, tf.reshape(kernel, (1, -1, 1, 1)), strides=1, padding="VALID")
    blurred = tf.reshape(planes, (shape[0], shape[3], shape[1], shape[2]))
    return tf.transpose(blurred, (0, 2, 3, 1))


class PerturbedForward:
    """One compiled function per model: perturbed images in, class probabilities out.

    Build it with `perturbed_forward`, which caches it per model. The function
    takes a few images with their pixel ranks and a list of jobs, one
    perturbed image each (which image, how many pixels changed, deletion or
    insertion), makes the perturbed images in the graph and returns each
    job's ``softmax(logits)[class]``. Every input has a free leading
    dimension, so one trace serves every batch, step count, baseline and blur.
    """

    def __init__(self, model):
        """Args: model: a Keras classifier with one input and one output (logits or softmax)."""
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(
                "Faithfulness scores models with one input and one output. "
                f"Received: {len(model.inputs)} inputs and {len(model.outputs)} outputs"
            )
        logits = logits_model(model)
        # A new model over the same layers and weights: the cache value must
        # not hold the model it is keyed by, or the model would never be freed.
        self.network = keras.Model(logits.inputs[0], logits.outputs[0], name=f"{model.name}_faithfulness")
        self.input_dtype = model.inputs[0].dtype
        self.image_shape = tuple(model.inputs[0].shape[1:])
        height, width, channels = self.image_shape
        self._compiled = tf.function(
            self._graph,
            input_signature=[
                tf.TensorSpec((None, height, width, channels), tf.float32),  # images
                tf.TensorSpec((None, height, width), tf.int32),  # pixel ranks
                tf.TensorSpec((None,), tf.int64),  # classes
                tf.TensorSpec((None,), tf.int32),  # job: which image
                tf.TensorSpec((None,), tf.int32),  # job: pixels changed
                tf.TensorSpec((None,), tf.bool),  # job: insertion (else deletion)
                tf.TensorSpec((None,), tf.float32),  # deletion baseline, per channel
                tf.TensorSpec((None,), tf.float32),  # blur kernel
            ],
        )

        # Images made elsewhere (ROAD's imputations) go through this one.
        self._compiled_probabilities = tf.function(
            self._probabilities_graph,
            input_signature=[
                tf.TensorSpec((None, height, width, channels), tf.float32),
                tf.TensorSpec((None,), tf.int64),
            ],
        )

    @property
    def tracing_count(self):
        """How many times the functions have been traced (for tests)."""
        return sum(f.experimental_get_tracing_count() for f in (self._compiled, self._compiled_probabilities))

    def _class_probabilities(self, images, classes):
        logits = self.network(tf.cast(images, self.input_dtype), training=False)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        return tf.gather(probabilities, classes, axis=1, batch_dims=1)

    def _probabilities_graph(self, images, classes):
        return self._class_probabilities(images, classes)

    def _graph(self, images, ranks, classes, job_image, job_changed, job_insert, baseline, kernel):
        image = tf.gather(images, job_image)
        changed = (tf.gather(ranks, job_image) < job_changed[:, tf.newaxis, tf.newaxis])[..., tf.newaxis]
        deleted = tf.where(changed, baseline, image)
        inserted = tf.where(changed, image, tf.gather(gaussian_blur(images, kernel), job_image))
        perturbed = tf.where(job_insert[:, tf.newaxis, tf.newaxis, tf.newaxis], inserted, deleted)
        return self._class_probabilities(perturbed, tf.gather(classes, job_image))

    def __call__(self, images, ranks, classes, job_image, job_changed, job_insert, baseline, kernel):
        """Class probabilities (b,) of the b jobs; arguments as `_graph`'s signature."""
        return self._compiled(images, ranks, classes, job_image, job_changed, job_insert, baseline, kernel)

    def probabilities(self, images, classes):
        """``softmax(logits)[class]`` (b,) of b images (b, H, W, C) as they are."""
        return self._compiled_probabilities(np.asarray(images, np.float32), np.asarray(classes, np.int64))


_FORWARDS = weakref.WeakKeyDictionary()  # model -> PerturbedForward


def perturbed_forward(model):
    """The cached `PerturbedForward` of `model`, built on the first request."""
    if model not in _FORWARDS:
        _FORWARDS[model] = PerturbedForward(model)
    return _FORWARDS[model]


def check_perturbation_inputs(images, maps, classes):
    """``(images, maps, classes)`` as arrays that agree, for a perturbation
    score; ValueError naming the shapes otherwise, or for non-finite maps."""
    images = np.asarray(images)
    maps = np.asarray(maps)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if images.ndim != 4 or maps.shape != images.shape[:3] or classes.shape != (len(images),):
        raise ValueError(
            "images (n, H, W, C), maps (n, H, W) and classes (n,) must agree. Received: "
            f"images.shape={images.shape}, maps.shape={maps.shape}, classes.shape={classes.shape}"
        )
    if not np.isfinite(maps).all():
        raise ValueError("maps must be finite; leave out maps whose status is not 'ok'")
    return images, maps, classes


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
):
    """Deletion and insertion curves of Petsiuk et al. (2018), RISE, Sec. 4.1.

    For each image, the pixels are taken in `pixel_order` of its map (highest
    first, ties in raster order). At step k = 0..K the first
    ``round(k * H * W / K)`` of them are set to ``deletion_baseline``
    (deletion, from the image) or to the image's own values (insertion, from
    a Gaussian blur of the image), and the curve's value is the model's
    ``softmax(logits)[class]`` of that perturbed image. The 2 (K + 1)
    perturbed images per map go through one compiled function per model
    (`perturbed_forward`) in batches of ``batch_size``, built there from the
    image, its pixel ranks and the step, so memory holds one batch whatever
    the number of images.

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

    Returns:
        (deletion, insertion): float64 arrays (n, K + 1) of class
        probabilities; column 0 of deletion is the unperturbed image's, column
        K of insertion too (up to float rounding).

    Raises:
        ValueError: for mismatched shapes, non-finite maps, steps < 1 or a
            blur wider than the image.
    """
    images, maps, classes = check_perturbation_inputs(images, maps, classes)
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer. Received: steps={steps}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer. Received: batch_size={batch_size}")
    steps, batch_size = int(steps), int(batch_size)
    n, height, width, channels = images.shape
    forward = perturbed_forward(model)
    if forward.image_shape != (height, width, channels):
        raise ValueError(f"images of shape {images.shape[1:]} do not fit the model's input {forward.image_shape}")
    sigma = blur_sigma_for((height, width)) if blur_sigma is None else float(blur_sigma)
    kernel = gaussian_kernel(sigma)
    if len(kernel) // 2 > min(height, width):
        raise ValueError(
            f"blur_sigma={sigma} needs a kernel radius of {len(kernel) // 2} px, wider than the "
            f"{height}x{width} image"
        )
    baseline = np.broadcast_to(np.asarray(deletion_baseline, np.float32), (channels,)).copy()
    changed = pixels_changed(steps, height * width).astype(np.int32)

    points = steps + 1
    per_map = 2 * points  # deletion steps 0..K, then insertion steps 0..K
    curves = np.full((n, per_map), np.nan)
    for start in range(0, n * per_map, batch_size):
        jobs = np.arange(start, min(start + batch_size, n * per_map))
        which, slot = np.divmod(jobs, per_map)
        first, last = which[0], which[-1] + 1
        probabilities = forward(
            images[first:last].astype(np.float32),
            pixel_ranks(maps[first:last]),
            classes[first:last],
            (which - first).astype(np.int32),
            changed[slot % points],
            slot >= points,
            baseline,
            kernel,
        )
        curves[which, slot] = probabilities.numpy()
    return curves[:, :points], curves[:, points:]


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


def rounded(curve):
    """A curve as a JSON-friendly list of floats, `DECIMALS` decimals."""
    return [round(float(value), DECIMALS) for value in curve]


def _finite_or_none(value):
    return float(value) if np.isfinite(value) else None


@register
class FaithfulnessScorer(Scorer):
    """Deletion and insertion AUC of each map (see the module docstring).

    Config attributes read (with their defaults when the config lacks them):
    ``faithfulness_images`` (`DEFAULT_IMAGES`; None for every image) and
    ``faithfulness_steps`` (`DEFAULT_STEPS`).
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
            paired=True,
        ),
        Field(
            "insertion_auc",
            "Insertion AUC: class probability as the map's top pixels are restored on a blurred copy "
            "(higher is better)",
            percent=False,
            digits=6,
            paired=True,
        ),
    )

    def __init__(self, config):
        super().__init__(config)
        self.max_images = getattr(config, "faithfulness_images", DEFAULT_IMAGES)
        self.steps = getattr(config, "faithfulness_steps", DEFAULT_STEPS)
        if int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"faithfulness_steps must be a positive integer. Received: {self.steps}")
        if self.max_images is not None and (int(self.max_images) != self.max_images or self.max_images < 1):
            raise ValueError(f"faithfulness_images must be a positive integer or None. Received: {self.max_images}")
        self.steps = int(self.steps)

    def settings(self):
        return {
            **super().settings(),
            "faithfulness_steps": self.steps,
            "faithfulness_deletion_baseline": DELETION_BASELINE,
            "faithfulness_blur_sigma_per_side": BLUR_SIGMA_PER_SIDE,
        }

    def score(self, batch, one):
        n = len(one.maps)
        deletion = np.full((n, self.steps + 1), np.nan)
        insertion = np.full((n, self.steps + 1), np.nan)
        ok = np.asarray(one.status) == metrics.OK
        if ok.any():
            deletion[ok], insertion[ok] = deletion_insertion_curves(
                one.model, batch.images[ok], one.maps[ok], one.classes[ok], steps=self.steps
            )
        extra = {
            "deletion": [rounded(c) if good else None for c, good in zip(deletion, ok)],
            "insertion": [rounded(c) if good else None for c, good in zip(insertion, ok)],
        }
        values = {"deletion_auc": area_under_curve(deletion), "insertion_auc": area_under_curve(insertion)}
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
            plot_curves(curves, f"{folder}/faithfulness.png", models, methods)


def mean_curves(extras, kinds):
    """Mean curve with 95 % Student-t bounds per point, per model x method and kind.

    Args:
        extras: ``(model, method, extra)`` triples, each extra a dict whose
            ``kinds`` hold one curve (list) per image, None for maps that
            were not scored.
        kinds: the keys to average, e.g. ``("deletion", "insertion")``.

    Returns:
        ``{model: {method: {kind: {"mean": [...], "low": [...], "high":
        [...], "n": curves}}}}`` from `kerascam.metrics.mean_confidence_interval`
        at each point; undefined values (bounds of a single curve) are None.

    Raises:
        ValueError: when the curves differ in length.
    """
    gathered = {}
    for model, method, extra in extras:
        if not extra:
            continue
        entry = gathered.setdefault((model, method), {kind: [] for kind in kinds})
        for kind in kinds:
            entry[kind].extend(curve for curve in extra[kind] if curve is not None)
    lengths = {len(curve) for entry in gathered.values() for kind in kinds for curve in entry[kind]}
    if len(lengths) > 1:
        raise ValueError(f"curves of different lengths cannot be averaged: {sorted(lengths)}")
    if not lengths:
        return {}
    points = lengths.pop()
    curves = {}
    for (model, method), entry in gathered.items():
        curves.setdefault(model, {})[method] = {
            kind: _mean_curve(np.asarray(entry[kind], dtype=np.float64).reshape(-1, points)) for kind in kinds
        }
    return curves


def _mean_curve(curves):
    intervals = [metrics.mean_confidence_interval(curves[:, k]) for k in range(curves.shape[1])]
    return {
        "mean": [_finite_or_none(round(i.mean, DECIMALS)) for i in intervals],
        "low": [_finite_or_none(round(i.low, DECIMALS)) for i in intervals],
        "high": [_finite_or_none(round(i.high, DECIMALS)) for i in intervals],
        "n": int(len(curves)),
    }


def curve_table(curves, models, methods, kinds, heading, note, at=CURVE_XS):
    """Markdown lines: one row per model x method, the mean curves read at the points nearest ``at``.

    Args:
        curves: ``{"x": [...], "curves": mean_curves(...)}``.
        models, methods: names in table order; pairs without curves are left out.
        kinds: the curves shown, one column each.
        heading: the section's heading line.
        note: a sentence under it (settings).
        at: x values to show. Default `CURVE_XS`.
    """
    xs = np.asarray(curves["x"], dtype=np.float64)
    columns = sorted({int(np.argmin(np.abs(xs - x))) for x in at})
    where = " / ".join(f"{xs[c]:.2f}" for c in columns)
    lines = [heading, "", note, "", "| model | method | n | " + " | ".join(f"{kind} at x = {where}" for kind in kinds)
             + " |", "|---" * (3 + len(kinds)) + "|"]
    for model in models:
        for method in methods:
            entry = curves["curves"].get(model, {}).get(method)
            if entry is None:
                continue
            cells = [" / ".join("n/a" if entry[kind]["mean"][c] is None else f"{entry[kind]['mean'][c]:.3f}"
                                for c in columns) for kind in kinds]
            lines.append(f"| {model} | {method} | {entry[kinds[0]]['n']} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def plot_curves(curves, path, models, methods, *, panels=None, xlabel="fraction of pixels changed"):
    """Draws mean curves: a column per model, a row per kind, a line per method with its 95 % band.

    Drawn on matplotlib's Agg canvas (no pyplot); the PNG is written
    atomically (`kerascam.io.atomic_path`).

    Args:
        curves: ``{"x": [...], "curves": mean_curves(...)}``.
        path: the PNG to write.
        models, methods: names in drawing order; those without curves are
            left out.
        panels: ``(kind, y label)`` per row. Default deletion above
            insertion.
        xlabel: the x axis' label.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from kerascam.figures import DPI, FONT_SIZE
    from kerascam.io import atomic_path

    if panels is None:
        panels = (("deletion", "deletion (lower is better)"), ("insertion", "insertion (higher is better)"))
    models = [m for m in models if m in curves["curves"]]
    if not models:
        return
    xs = np.asarray(curves["x"], dtype=np.float64)
    fig = Figure(figsize=(2.6 * len(models) + 0.4, 2.4 * len(panels)), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), len(models), squeeze=False, sharex=True, sharey=True)
    colors = {method: f"C{i % 10}" for i, method in enumerate(methods)}
    for column, model in enumerate(models):
        for row, (kind, label) in enumerate(panels):
            ax = axes[row][column]
            for method in methods:
                entry = curves["curves"][model].get(method)
                if entry is None:
                    continue
                mean, low, high = (np.array(entry[kind][key], dtype=np.float64) for key in ("mean", "low", "high"))
                ax.plot(xs, mean, color=colors[method], linewidth=1.2, label=method)
                ax.fill_between(xs, low, high, color=colors[method], alpha=0.15, linewidth=0)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.tick_params(labelsize=FONT_SIZE)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(model, fontsize=FONT_SIZE + 1)
            if row == len(panels) - 1:
                ax.set_xlabel(xlabel, fontsize=FONT_SIZE)
            if column == 0:
                ax.set_ylabel(f"{label}\nclass probability", fontsize=FONT_SIZE)
    axes[0][-1].legend(fontsize=FONT_SIZE, loc="best", frameon=False)
    fig.tight_layout(pad=0.3)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
