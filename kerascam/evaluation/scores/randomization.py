"""Does the map depend on what the model learned? Model-parameter randomization.

Adebayo et al. 2018 ("Sanity Checks for Saliency Maps", NeurIPS) re-initialize
a trained network's weights and explain the same image with the same method:
a map that barely changes cannot be explaining what the network learned (an
edge detector passes no sanity check it does not already pass without the
model). Two variants are scored here, both on a copy of the model; the
trained model is never modified:

* the cascade: the layers are re-initialized cumulatively, from the logits
  down, one named block at a time (`cascade_blocks`):

  - U-Net and ablated U-Net: ``predictions`` (the dense classifier head),
    the decoder levels from the last one (``dec1``, full resolution) back to
    the first (``dec4``), ``bottleneck``, the encoder levels from the
    deepest (``enc4``) to ``enc1``;
  - ResNet50 (and any keras.applications ResNet of the same stage names):
    ``predictions``, then the stages ``conv5`` to ``conv2`` and the stem
    ``conv1``;
  - VGG16, keras.applications' and kerascam's batch-norm variant (and
    VGG19): ``predictions``, ``fc2``, ``fc1``, then ``block5`` to
    ``block1``;

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
(`kerascam.metrics.rank_correlation`) and the structural similarity (`ssim`): values near 1 fail the
check, lower values pass it. There is no fixed threshold; the ``edges`` and
``noise`` columns, which know nothing of the model, give 1 by construction.

How weights are re-initialized (`RandomizedCopy`): every floating-point
variable of a randomized layer is drawn again from that layer's own
initializer (``kernel_initializer``, ``bias_initializer``, BatchNorm's
``gamma_initializer`` ...), as Adebayo et al. re-initialize "all the weights"
of a layer: the fully randomized model is a freshly built one. So a
randomized BatchNormalization layer holds gamma 1, beta 0, moving mean 0 and
moving variance 1 (what it holds before training), and in inference mode it
passes its input through unchanged: keeping the trained moving statistics
would normalise random features with the statistics of learned ones, which
is neither the trained nor an untrained network. A variable whose initializer
the layer does not expose is drawn from He normal (2 or more dimensions) or
from a normal of the trained values' mean and standard deviation (vectors).
Seeds are derived from the draw (``cascade`` or ``full``), the layer's name
and the variable's index with a stable hash, so every batch, method, shard
and resumed run sees the same randomized networks. (VGG16's He
re-initialization at build time, `kerascam.models.applications.he_initialize`,
is not a layer initializer: its randomized layers use the declared Glorot
uniform ones.)
"""

import hashlib
import os
import weakref

import keras
import numpy as np

from kerascam import figures as kfigures
from kerascam import metrics
from kerascam.evaluation.scorer import Field, Scorer, ScoreResult, register
from kerascam.metrics import rank_correlation as spearman  # noqa: F401  (named as in the paper)

SEED = 0
TRAINED = "trained"  # the curves' first point: the trained model itself
FULL = "full"  # the step name of the independent full randomization
GRID_METHOD = "gradcam++"  # the method of the classic grid, when it is a column

SSIM_WINDOW = 11  # Wang et al. 2004: an 11x11 Gaussian window ...
SSIM_SIGMA = 1.5  # ... of standard deviation 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_DATA_RANGE = 1.0  # the maps are min-max normalised to [0, 1] first

# Models already told that they have no named blocks.
_REPORTED = weakref.WeakSet()


# ---------------------------------------------------------------------------
# The cascade
# ---------------------------------------------------------------------------


def _has_weights(layer):
    return any("float" in str(v.dtype) for v in layer.weights)


def _layouts():
    # Each registered model's block rule, once each, in registry order (the U-Net twins share one).
    from kerascam.specs import SPECS

    layouts = []
    for spec in SPECS.values():
        if spec.randomization_blocks is not None and spec.randomization_blocks not in layouts:
            layouts.append(spec.randomization_blocks)
    return layouts


def _matching_layout(model):
    """``(layout, [(step name, [layer names])])`` of the first layout every weighted layer falls into."""
    weighted = [layer.name for layer in model.layers if _has_weights(layer)]
    for layout in _layouts():
        steps = {}
        for name in weighted:
            step = layout.step(name)
            if step is None:
                break
            steps.setdefault(step, []).append(name)
        else:
            names = {name for name, _ in steps}
            if "predictions" in names and layout.complete(names):
                return layout, [(name, layers) for (name, _), layers in sorted(steps.items(), key=lambda s: s[0][1])]
    return None, []


def cascade_blocks(model, quiet=False):
    """The named blocks of ``model``, in the order the cascade re-initializes them.

    Adebayo et al. 2018 ("Sanity Checks for Saliency Maps", NeurIPS)
    randomize a network cumulatively from its top (the logits) to its bottom.
    kerascam's models are walked block by block (their specs' ``randomization_blocks``):
    U-Nets ``predictions, dec1, ..., dec4, bottleneck, enc4, ..., enc1``;
    ResNet50 ``predictions, conv5, ..., conv1``; VGG16
    ``predictions, fc2, fc1, block5, ..., block1``. Only layers with
    floating-point weights are listed; every such layer of the model is in
    exactly one block.

    A model whose layers do not all fall into one of these layouts (a user's
    own, or one with a nested sub-model) has no cascade: the result is empty
    and one line says so, once per model object.

    Args:
        model: a Keras model.
        quiet: say nothing when the model has no named blocks.

    Returns:
        A list of ``(step_name, [layer names])`` from the logits down.
    """
    layout, blocks = _matching_layout(model)
    if layout is not None:
        return blocks
    if not quiet and model not in _REPORTED:
        _REPORTED.add(model)
        print(
            f"score 'randomization': cascade and independent randomization skipped for model {model.name!r}: "
            "it has no named blocks (the layer names of kerascam's U-Nets, ResNet50 or VGG16); only its full "
            "randomization is scored",
            flush=True,
        )
    return []


def encoder_decoder_blocks(model):
    """The U-Net's encoder (``enc*`` and ``bottleneck``) and decoder (``dec*``) layers, or None.

    The encoder is the contracting path down to the bottleneck: the layers
    whose outputs the skip connections carry (``enc1``-``enc4``) and the
    bottleneck, the last stage before the first up-convolution. The decoder
    is ``dec1``-``dec4``; the head (``predictions``) is in neither.

    Args:
        model: a Keras model.

    Returns:
        ``{"encoder": [layer names], "decoder": [layer names]}`` for a model
        with kerascam's U-Net blocks, None for any other (no decoder).
    """
    layout, blocks = _matching_layout(model)
    return None if layout is None or layout.halves is None else layout.halves(dict(blocks))


# ---------------------------------------------------------------------------
# The randomized copy
# ---------------------------------------------------------------------------


def _leaf_layers(layer, prefix=""):
    """``{path: layer}`` of the layers holding weights, through nested models."""
    out = {}
    for child in getattr(layer, "layers", ()):
        path = prefix + child.name
        if getattr(child, "layers", None):
            out.update(_leaf_layers(child, path + "/"))
        elif _has_weights(child):
            out[path] = child
    return out


def _stable_seed(*parts):
    digest = hashlib.blake2s("/".join(map(str, parts)).encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def _initializer(layer, variable):
    """The layer's own initializer of ``variable`` (``kernel`` -> ``kernel_initializer``), or None."""
    name = variable.name.split("/")[-1].split(":")[0]
    candidates = [f"{name}_initializer"]
    if name.endswith("_kernel"):  # depthwise_kernel -> depthwise_initializer
        candidates.append(name[: -len("_kernel")] + "_initializer")
    for attribute in candidates:
        initializer = getattr(layer, attribute, None)
        if isinstance(initializer, keras.initializers.Initializer):
            return initializer
    return None


def initial_value(layer, variable, seed):
    """A fresh draw of one variable of ``layer``, from the layer's own initializer.

    Args:
        layer: the layer that owns ``variable``.
        variable: a floating-point ``keras.Variable`` of ``layer``.
        seed: int; the draw is a function of it (and of the initializer).

    Returns:
        A tensor of the variable's shape and dtype. Initializers without
        randomness (zeros, ones) give their constant. Without an initializer
        of its own: He normal for 2 or more dimensions, else a normal of the
        current values' mean and standard deviation.
    """
    shape, dtype = tuple(variable.shape), variable.dtype
    initializer = _initializer(layer, variable)
    if initializer is None:
        if len(shape) >= 2:
            initializer = keras.initializers.HeNormal(seed=seed)
        else:
            current = np.asarray(keras.ops.convert_to_numpy(variable.value), dtype=np.float64)
            rng = np.random.default_rng(seed)
            return keras.ops.cast(rng.normal(current.mean(), current.std(), size=shape), dtype)
    else:
        config = initializer.get_config()
        if "seed" in config:
            initializer = type(initializer).from_config({**config, "seed": seed})
    return initializer(shape, dtype=dtype)


class RandomizedCopy:
    """A clone of a trained model whose layers can be re-initialized and restored.

    The clone (``keras.models.clone_model`` and the trained weights) is built
    once and its variables are then assigned in place, so a CAM engine cached
    for the clone (`kerascam.cams.engine.get_engine`) keeps its traced graphs
    across steps: they read the variables, whose values change. The trained
    model is never written to.

    Re-initialization follows Adebayo et al. 2018 ("Sanity Checks for
    Saliency Maps", NeurIPS): every floating-point variable of a layer
    (BatchNorm's moving statistics included) is drawn again from the layer's
    own initializer, seeded by the draw's name, the layer's name and the
    variable's index (see the module docstring).

    Attributes:
        model: the clone, the model to explain.
        trained: the trained model.
        cascade: `cascade_blocks(trained)`.
        randomized: names of the layers currently re-initialized.

    Args:
        model: a trained functional or Sequential Keras model.
        seed: base of every layer's seed. Default `SEED` (0).
    """

    def __init__(self, model, seed=SEED):
        self.trained = model
        self.seed = seed
        self.cascade = cascade_blocks(model)
        try:
            self.model = keras.models.clone_model(model)
        except Exception as error:  # subclassed models cannot be cloned from their config
            raise ValueError(
                f"the randomization check clones the model, and {model.name!r} cannot be cloned "
                f"({type(error).__name__}: {error}); use a functional or Sequential model"
            ) from error
        self.model.set_weights(model.get_weights())
        trained_layers = _leaf_layers(model)
        self._layers = _leaf_layers(self.model)
        if list(trained_layers) != list(self._layers):
            raise ValueError(f"the clone of {model.name!r} does not have the model's layers")
        self._trained_layers = trained_layers
        self.randomized = []
        # (draw, layer, variable index) -> its drawn value: the cascade, the
        # independent blocks and the encoder/decoder cases of every method
        # reuse one draw instead of drawing it again (the same seeds give the
        # same values, so this changes no number, only the time).
        self._drawn = {}

    @property
    def layer_names(self):
        """Every layer with weights (``outer/inner`` inside a nested model)."""
        return list(self._layers)

    def randomize(self, layer_names, draw="cascade"):
        """Re-initializes ``layer_names``; the other layers keep what they hold.

        Called with one block after another, this is the cumulative cascade.

        Args:
            layer_names: names of layers with weights (see `layer_names`).
            draw: name of the draw, part of every seed: the cascade and the
                full randomization use different ones, so they are
                independent draws. Default ``"cascade"``.
        """
        unknown = [name for name in layer_names if name not in self._layers]
        if unknown:
            raise ValueError(f"{self.trained.name!r} has no layer with weights named {unknown[0]!r}")
        for name in layer_names:
            layer = self._layers[name]
            for index, variable in enumerate(layer.weights):
                if "float" not in str(variable.dtype):
                    continue
                key = (draw, name, index)
                if key not in self._drawn:
                    self._drawn[key] = initial_value(layer, variable, _stable_seed(self.seed, draw, name, index))
                variable.assign(self._drawn[key])
            if name not in self.randomized:
                self.randomized.append(name)

    def forget_draws(self):
        """Frees the drawn values kept for reuse (a model's worth per draw)."""
        self._drawn = {}

    def randomize_all(self, draw=FULL):
        """Re-initializes every layer at once: the full randomization."""
        self.randomize(self.layer_names, draw)

    def reset(self):
        """Gives the re-initialized layers back their trained weights."""
        for name in self.randomized:
            for clone_variable, variable in zip(self._layers[name].weights, self._trained_layers[name].weights):
                clone_variable.assign(variable.value)
        self.randomized = []


# ---------------------------------------------------------------------------
# Comparing two maps
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
EMPTY_STATUSES = (metrics.ZERO, metrics.CONSTANT)  # randomized maps scored with Spearman 0


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
        Field(
            "randomization_encoder_spearman",
            "Spearman correlation of the map with the map of the model whose encoder (enc1-enc4, bottleneck) "
            "alone is randomized, decoder and head trained (U-Nets only; near 1: the map ignores the encoder)",
            percent=False, digits=6, paired=False,
        ),
        Field(
            "randomization_decoder_spearman",
            "Spearman correlation of the map with the map of the model whose decoder (dec1-dec4) alone is "
            "randomized, encoder and head trained (U-Nets only; near 1: the map ignores the decoder)",
            percent=False, digits=6, paired=False,
        ),
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
            for step, kind, randomizations in self.plan(copy):
                layers = len(randomizations[-1][0])  # the block's own layers (a cascade step adds them)
                if kind == "independent" and extra["steps"] and step == INDEPENDENT + extra["steps"][0]:
                    result = first  # "only" the first block is the cascade's first step
                else:
                    if kind != "cascade" or len(randomizations) == 1:
                        copy.reset()
                    names, draw = randomizations[-1]
                    copy.randomize(names, draw)
                    maps, _, status = one.explain(copy.model, batch.images, one.classes)
                    result = (maps, status, similarities(one.maps, maps, trained_ok, status))
                if not extra["steps"]:
                    first = result
                maps, status, (rho, sim, empty, nonfinite) = result
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
            plot_curves(os.path.join(folder, "randomization_curves.png"), cascade, models, methods)
        grids = summary.get("_randomization_grid")
        if grids:
            plot_grid(os.path.join(folder, "randomization_grid.png"), grids, models)


def _cell(ci):
    if ci["mean"] is None:
        return "n/a"
    if ci["low"] is None:
        return f"{ci['mean']:.3f}"
    return f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def plot_curves(path, cascade, models, methods):
    """Mean Spearman (solid) and SSIM (dashed) along the cascade, one panel per model.

    Args:
        path: the PNG to write (atomically).
        cascade: `RandomizationScore.summarize`'s ``randomization_cascade``.
        models, methods: the order of the panels and of the lines.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = [m for m in models if cascade.get(m)]
    if not models:
        return
    fig = Figure(figsize=(3.6 * len(models), 3.2), dpi=kfigures.DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    colors = {k: f"C{i % 10}" for i, k in enumerate(methods)}
    for ax, model in zip(axes, models):
        steps = []
        for method in methods:
            curve = cascade[model].get(method)
            if not curve:
                continue
            steps = curve["steps"] if len(curve["steps"]) > len(steps) else steps
            for measure, style in (("spearman", "-"), ("ssim", "--")):
                ys = [1.0] + [_as_float(curve[measure][s]["mean"]) for s in curve["steps"][1:]]
                ax.plot(range(len(ys)), ys, style, marker="o", markersize=2.5, color=colors[method],
                        label=f"{method} {'Spearman' if measure == 'spearman' else 'SSIM'}")
        ax.axhline(0.0, color="0.6", linewidth=0.6)
        ax.set_xticks(range(len(steps)))
        ax.set_xticklabels(steps, rotation=60, ha="right", fontsize=kfigures.FONT_SIZE)
        ax.tick_params(axis="y", labelsize=kfigures.FONT_SIZE)
        ax.set_ylim(min(-0.2, ax.get_ylim()[0]), 1.05)
        ax.set_title(model, fontsize=kfigures.FONT_SIZE + 1)
        ax.set_xlabel("layers re-initialized down to", fontsize=kfigures.FONT_SIZE)
    axes[0].set_ylabel("similarity to the trained model's map", fontsize=kfigures.FONT_SIZE)
    axes[0].legend(fontsize=kfigures.FONT_SIZE - 1, loc="lower left")
    kfigures._save(fig, path)


def plot_grid(path, grids, models):
    """Adebayo et al.'s classic figure: one image's maps along the cascade, one row per model.

    Args:
        path: the PNG to write (atomically).
        grids: `RandomizationScore.summarize`'s ``_randomization_grid``.
        models: the order of the rows.
    """
    models = [m for m in models if m in grids]
    if not models:
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = 1 + max(len(grids[m]["steps"]) for m in models)
    # kerascam's square cells, each with room for its step's name above it.
    cell = kfigures.CELL_INCHES
    fig = Figure(figsize=(cols * cell + kfigures.ROW_LABEL_INCHES, len(models) * (cell + 0.25)), dpi=kfigures.DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(models), cols, squeeze=False)
    for row, model in zip(axes, models):
        grid = grids[model]
        image = np.asarray(grid["image"], dtype=np.uint8)
        row[0].imshow(image)
        row[0].set_title(f"image {grid['image_id']}", fontsize=kfigures.FONT_SIZE)
        row[0].set_ylabel(f"{model}\n{grid['method']}", fontsize=kfigures.FONT_SIZE)
        for ax in row:
            kfigures._bare(ax)
        for ax, step in zip(row[1:], grid["steps"]):
            ax.set_title(step, fontsize=kfigures.FONT_SIZE)
            values = grid["maps"].get(step)
            if values is None:
                ax.imshow(image)
                kfigures._note(ax, "undefined")
            else:
                ax.imshow(kfigures.overlay(image, np.asarray(values, dtype=np.float64)))
        for ax in row[1 + len(grid["steps"]):]:
            ax.axis("off")
    kfigures._save(fig, path)
