"""Re-initializing a trained model's weights, block by block (Adebayo et al. 2018).

Adebayo et al. 2018 ("Sanity Checks for Saliency Maps", NeurIPS) explain a
trained network again after re-initializing its weights. This module makes
those networks; the scores that explain them are
`kerascam.evaluation.scores.randomization` (the cascade, full, independent
and U-Net-half variants) and `kerascam.evaluation.scores.grid_pointing`
(its randomized-model control). The trained model is never modified: every
randomization acts on a copy (`RandomizedCopy`).

Named blocks (`cascade_blocks`), from the logits down, as each model's spec
declares them (``randomization_blocks``, `kerascam.specs.blocks`):

* U-Net and ablated U-Net: ``predictions`` (the dense classifier head),
  the decoder levels from the last one (``dec1``, full resolution) back to
  the first (``dec4``), ``bottleneck``, the encoder levels from the deepest
  (``enc4``) to ``enc1``; its halves (`encoder_decoder_blocks`) are the
  encoder (``enc1``-``enc4`` and the ``bottleneck``: the contracting path,
  everything below the first up-convolution, which also feeds the skip
  connections) and the decoder (``dec1``-``dec4``);
* ResNet50 (and any keras.applications ResNet of the same stage names):
  ``predictions``, then the stages ``conv5`` to ``conv2`` and the stem
  ``conv1``;
* VGG16, keras.applications' and kerascam's batch-norm variant (and VGG19):
  ``predictions``, ``fc2``, ``fc1``, then ``block5`` to ``block1``.

A model whose layer names follow none of these layouts (a user's own) has
no blocks, and one line says so (once per model object).

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
import weakref

import keras
import numpy as np

SEED = 0  # base of every layer's seed
FULL = "full"  # the draw of the full randomization (independent of the cascade's)

# Models already told that they have no named blocks.
_REPORTED = weakref.WeakSet()


# ---------------------------------------------------------------------------
# The named blocks
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
