"""kerascam's explanation engines: which backend computes, and the per-model cache.

The engine of a method is compiled on the backend Keras runs on: TensorFlow
(`tf_engine.py`, `tf.function` graphs) or JAX (`jax_engine.py`, `jax.jit`);
what both share is in `engine_core.py`, and each method's maths in its own
file, in `keras.ops`. Under JAX nothing here imports TensorFlow: the
backend's module is imported when the first engine is built, so that only
the one in use is loaded.

Engines are cached per model in a `weakref.WeakKeyDictionary`, keyed by the
model and then by (target layer(s), method): repeated `explain` calls reuse
the traced computations and a model that is no longer used can still be
freed (an engine holds the model's layers, never the model object).
"""

import importlib
import weakref

import keras

from kerascam.backend import SUPPORTED
from kerascam.cams.logits import logits_model
from kerascam.cams.registry import METHODS

# Keras backend -> the module holding its GradientEngine and ScoreCAMEngine.
ENGINE_MODULES = {"tensorflow": "kerascam.cams.tf_engine", "jax": "kerascam.cams.jax_engine"}

_ENGINES = weakref.WeakKeyDictionary()  # model -> {(target layer(s), method): engine}


def engines_module():
    """The module of engines for the Keras backend this process runs on.

    Raises:
        ValueError: in one line, when Keras runs on a backend kerascam does not support.
    """
    name = keras.backend.backend()
    if name not in ENGINE_MODULES:
        raise ValueError(
            f"kerascam's CAM engine runs on Keras' {' or '.join(SUPPORTED)} backend; Keras runs on {name!r} "
            "here: set KERAS_BACKEND to one of those"
        )
    return importlib.import_module(ENGINE_MODULES[name])


def get_engine(model, target_layer, method):
    """The cached engine of `model` at `target_layer` for `method`.

    Args:
        model: a functional Keras classifier (one input, one output: logits,
            or probabilities from a softmax head, explained at its logits;
            see `kerascam.cams.logits`).
        target_layer: the name of a 4-D layer of `model`, or a list or tuple
            of names (their maps fused).
        method: a name in `kerascam.cams.METHODS`; the method class builds
            the engine (`make_engine`) from the backend's module.

    Returns:
        A `engine_core.CAMEngine`, built on the first request and reused
        while `model` lives.
    """
    if method not in METHODS:
        raise ValueError(f"The kerascam engine has no method {method!r}. Valid: {list(METHODS)}")
    key = (target_layer if isinstance(target_layer, str) else tuple(target_layer), method)
    engines = _ENGINES.setdefault(model, {})
    if key not in engines:
        engines[key] = METHODS[method].make_engine(logits_model(model), target_layer, engines_module())
    return engines[key]
