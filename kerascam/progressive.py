"""Progressive resizing: the first epochs of a run train on downscaled images.

A convolution costs in proportion to the pixels it sees, so an epoch at 32x32
costs about (32 / 48)^2 = 0.44 of one at 48x48. ``TrainConfig`` fields
``low_resolution_epochs`` and ``low_resolution_size`` (``train.py
--low-res-epochs N --low-res-size S``) train the first N epochs on images
resized to S x S, then the rest at ``image_size``: the "progressive
resizing" of fast.ai's DAWNBench ImageNet entry (2018) and of FFCV's
ResNet-50 recipes. The weights learnt at the low resolution carry over, and
the last epochs at full size adapt them (and the batch-norm statistics) to
the size the model is exported and explained at. On the demo's 48x48 shapes
it did not pay (``benchmarks/README.md``, ``recipe_curve.py``): at 32x32 the
details that tell the classes apart are 1-2 pixels, and every model lost
more accuracy than the cheaper epochs saved; no preset turns it on.

The model itself is built once, at ``image_size``; the low-resolution epochs
run a twin that shares every layer (and so every variable and optimizer
slot) and differs only by its input. Checkpoints, the exported model,
validation and CAM summaries all use the full-size model. Only networks whose
layers accept both sizes can do this: any fully convolutional network with a
global pooling head (the U-Nets, ResNet50), and VGG16 when both sizes leave
the same flattened block5 output (48 and 64 both pool to 2x2).
"""

import keras


def side_of_epoch(config, epoch):
    """The image side epoch ``epoch`` (0-based) trains at."""
    if epoch < config.low_resolution_epochs:
        return config.low_resolution_size
    return config.image_size


def check_config(config):
    """Raises ValueError for low-resolution settings a run cannot use."""
    epochs, size = config.low_resolution_epochs, config.low_resolution_size
    if not epochs:
        return
    if epochs < 0 or epochs >= config.epochs:
        raise ValueError(
            f"low_resolution_epochs must lie in [0, epochs) so that the last epoch trains at full size; "
            f"got {epochs} of {config.epochs} epochs"
        )
    if not size or size >= config.image_size:
        raise ValueError(
            f"low_resolution_size must be smaller than image_size {config.image_size}; got {size}"
        )
    from kerascam.models import check_image_size

    try:
        check_image_size(config.model, size)
    except ValueError as e:
        raise ValueError(f"low_resolution_size {size}: {e}") from None


def resized_twin(model, side):
    """A model of ``side`` x ``side`` inputs that shares all of ``model``'s layers.

    Training the twin trains ``model``: the two hold the same variables.
    Raises ValueError when a layer cannot take the new size (a dense layer
    after a flatten whose length changes).
    """
    inputs = keras.Input((side, side, model.input_shape[-1]), name="image")
    try:
        return keras.models.clone_model(
            model,
            input_tensors=[inputs] if isinstance(model.input, list) else inputs,
            clone_function=lambda layer: layer,
        )
    except ValueError as e:
        from kerascam.training.errors import first_line  # here: kerascam.training imports this module

        reason = first_line(e)
        raise ValueError(f"{model.name} cannot train at {side}x{side} with its layers built at "
                         f"{model.input_shape[1]}x{model.input_shape[2]} ({reason})") from None


def downscale(batches, side):
    """``batches`` with each image resized to ``side`` x ``side`` (bilinear with antialiasing, floats in 0-255)."""
    import tensorflow as tf

    def resize(batch):
        images = tf.image.resize(tf.cast(batch["image"], tf.float32), (side, side), antialias=True)
        return dict(batch, image=images)

    return batches.map(resize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def downscale_arrays(batches, side):
    """:func:`downscale` for an iterable of NumPy batches (Keras' JAX backend, no tf.data).

    ``keras.ops.image.resize``, bilinear with antialiasing as TensorFlow's
    ``tf.image.resize``; floats in 0-255.
    """
    for batch in batches:
        images = keras.ops.image.resize(keras.ops.cast(batch["image"], "float32"), (side, side),
                                        interpolation="bilinear", antialias=True)
        yield dict(batch, image=keras.ops.convert_to_numpy(images))
