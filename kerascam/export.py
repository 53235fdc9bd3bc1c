"""Saving trained models: the ``.keras`` file and a TensorFlow SavedModel.

The SavedModel serves logits from raw RGB pixels (0-255), as float32
(signature ``serving_default``, function ``serve``) or uint8 (``serve_uint8``):
the model preprocesses its input itself, so a serving client sends the image
as it is.
"""

import keras
import tensorflow as tf

from kerascam import io


def save_keras(model, path):
    """Writes ``model`` to the ``.keras`` file ``path`` atomically."""
    with io.atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def load_keras(path):
    """Loads a ``.keras`` file in Keras safe mode (no arbitrary code, no Lambda)."""
    import kerascam.models  # noqa: F401  (registers ImagePreprocessing)

    return keras.saving.load_model(path, safe_mode=True)


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
