"""Which Keras backend kerascam runs on, and TensorFlow only where it is needed.

kerascam runs on Keras' TensorFlow backend (the default) and on JAX
(``KERAS_BACKEND=jax``). On JAX, TensorFlow need not be installed: the
embedded data, training, the CAM engine, the scores and the figures run
without it. What only TensorFlow does (tf.data over TFDS ImageNet, SavedModel
export, tf-keras-vis, tf.distribute strategies) imports it where it is used,
through :func:`require_tensorflow`, so that a missing TensorFlow is one
clear line instead of an ``ImportError`` deep in a stack.
"""

import os
import sys

SUPPORTED = ("tensorflow", "jax")


def name():
    """The Keras backend this process runs on.

    Keras' own answer once Keras is imported (it may come from
    ``~/.keras/keras.json``); before that, ``KERAS_BACKEND``, which
    ``import kerascam`` sets to ``tensorflow`` when it is unset, without
    importing Keras.
    """
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        return keras.backend.backend()
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def check_supported():
    """Raises a one-line ``ValueError`` when ``KERAS_BACKEND`` names a backend kerascam does not run on.

    Reads the user's request, the environment variable, so that a command
    can refuse before anything imports Keras.
    """
    requested = os.environ.get("KERAS_BACKEND", "tensorflow")
    if requested not in SUPPORTED:
        raise ValueError(
            f"kerascam runs on Keras' {' or '.join(SUPPORTED)} backend, but KERAS_BACKEND is {requested!r}; "
            "set it to one of those"
        )


def require_tensorflow(purpose):
    """Imports and returns TensorFlow, or raises one line naming ``purpose``.

    Args:
        purpose: What needs TensorFlow, as the user would name it
            (``"SavedModel export"``, ``"the tf-keras-vis backend"``).

    Raises:
        ImportError: TensorFlow is not installed (or cannot be imported).
    """
    try:
        import tensorflow as tf
    except ImportError:
        raise ImportError(
            f"{purpose} needs TensorFlow, which is not installed here (pip install tensorflow); "
            f"on Keras' {name()} backend without it, leave {purpose} out"
        ) from None
    return tf
