"""Saving trained models: the ``.keras`` file and a TensorFlow SavedModel.

The SavedModel serves logits from raw RGB pixels (0-255), as float32
(signature ``serving_default``, function ``serve``) or uint8 (``serve_uint8``):
the model preprocesses its input itself, so a serving client sends the image
as it is.
"""

import os

import keras
import tensorflow as tf

from kerascam import io


def save_keras(model, path):
    """Writes ``model`` to the ``.keras`` file ``path`` atomically."""
    with io.atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def load_keras(path):
    """Loads a ``.keras`` file in Keras safe mode (no arbitrary code, no Lambda).

    Raises:
        ValueError: one line naming the file, for a missing, truncated or
            corrupted file, or one that carries code (a Lambda layer) that
            safe mode refuses to run.
    """
    import kerascam.models  # noqa: F401  (registers ImagePreprocessing)

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such model file")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as e:  # noqa: BLE001  (Keras raises many types here)
        text = str(e)
        if "lambda" in text.lower() or "safe_mode" in text:
            reason = "it carries a Lambda layer (code), which safe mode refuses to run"
        else:
            reason = f"not a readable .keras file ({type(e).__name__}: {text.strip().splitlines()[0] if text.strip() else ''})"
        raise ValueError(f"{path}: cannot load model: {reason}") from e


def export_saved_model(model, path):
    """Exports ``model`` as a SavedModel folder at ``path``, atomically.

    Endpoints: ``serve`` (float32 images, also the ``serving_default``
    signature) and ``serve_uint8`` (uint8 images), both of shape
    (batch, H, W, 3) with the model's H and W, returning logits.
    """
    height, width = model.input_shape[1:3]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=lambda images: model(images, training=False),
        input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32, name="images")],
    )
    archive.add_endpoint(
        name="serve_uint8",
        fn=lambda images: model(tf.cast(images, tf.float32), training=False),
        input_signature=[tf.TensorSpec((None, height, width, 3), tf.uint8, name="images")],
    )
    with io.atomic_path(path) as tmp:
        archive.write_out(tmp, verbose=False)
