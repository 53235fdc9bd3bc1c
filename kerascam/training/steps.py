"""What one training step is made of: strategy, model, optimizer and the step itself (the dtype policy: kerascam.precision).

The TensorFlow path; under Keras' JAX backend ``make_strategy`` and
``make_train_steps`` hand over to `kerascam.training.jax_steps`, and
TensorFlow is imported only where it serves.
"""

import keras

from kerascam import backend, progressive
from kerascam.models import build_model


def make_strategy(name="auto", devices=None):
    """Returns a ``tf.distribute.Strategy``.

    Args:
        name: ``"auto"`` (MirroredStrategy over all GPUs when there are two
            or more, else the default strategy), ``"default"`` (one device) or
            ``"mirrored"`` (MirroredStrategy over ``devices``, default all
            GPUs, or the CPU when there is none).
            ``"multiworker"``: MultiWorkerMirroredStrategy over the cluster
            in the ``TF_CONFIG`` environment variable (on SLURM, build one
            with ``tf.distribute.cluster_resolver.SlurmClusterResolver``
            and pass the strategy to ``train``).
        devices: Device names for ``"mirrored"``, e.g. two logical CPUs.

    Under Keras' JAX backend: `kerascam.training.jax_steps.LocalDevices`
    (``"auto"``/``"default"``; the tf.distribute strategies are refused in
    one line).
    """
    if backend.name() == "jax":
        from kerascam.training.jax_steps import LocalDevices

        return LocalDevices.for_strategy(name)
    import tensorflow as tf

    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "auto":
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    raise ValueError(f"Unknown strategy {name!r}. Choose one of: auto, default, mirrored, multiworker")


def is_chief(strategy):
    """True unless ``strategy`` spans a cluster in which this task is not the chief.

    The chief is the task of type ``chief``, or worker 0 when the cluster
    names no chief. Only the chief writes checkpoints, logs and exports.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def make_optimizer(config, steps_per_epoch):
    """The optimizer with warm-up + cosine decay over the whole run.

    The peak is ``config.effective_learning_rate`` (the learning rate scaled
    to the global batch). Under ``mixed_float16`` it is wrapped in Keras'
    ``LossScaleOptimizer`` (dynamic loss scaling: steps whose gradients
    overflow are skipped and the scale lowered).
    """
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(int(config.warmup_epochs * steps_per_epoch), total - 1)
    peak = config.effective_learning_rate
    if warmup > 0:
        schedule = keras.optimizers.schedules.CosineDecay(0.0, total - warmup, warmup_target=peak, warmup_steps=warmup)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(peak, total)
    weight_decay = config.weight_decay or None
    if config.optimizer == "adam":
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=weight_decay or 0.0)
    elif config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    else:
        raise ValueError(f"Unknown optimizer {config.optimizer!r}. Choose one of: adam, sgd")
    if config.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def build_model_for(config, num_classes, weights=None):
    """The model ``config`` describes, with ``num_classes`` outputs (under the current dtype policy)."""
    return build_model(
        config.model, config.image_size, num_classes, weights=weights, unet_filters=config.unet_filters,
        batch_norm=config.batch_norm, vgg_batch_norm=config.vgg_batch_norm,
    )


def reduce_sum(strategy, values):
    import tensorflow as tf

    return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in values]


def make_train_step(
    model, optimizer, strategy, *, num_classes, global_batch, label_smoothing=0.0, jit_compile=False
):
    """The training step of :func:`train`, a ``tf.function`` of one distributed batch.

    Each replica computes the cross-entropy of its images averaged over the
    *global* batch (the optimizer sums the replicas' gradients) and applies
    the gradients; the loss and the number of correct top-1 predictions are
    summed over the replicas. ``benchmarks/pipeline.py`` times this same step.

    Args:
        model: The classifier, built in ``strategy.scope()``.
        optimizer: Its optimizer, built in the same scope. A Keras
            ``LossScaleOptimizer`` (mixed_float16) gets the gradients of the
            scaled loss, which it unscales.
        strategy: The ``tf.distribute.Strategy`` the step runs under.
        num_classes: Number of classes of the one-hot labels.
        global_batch: Global batch size, the loss' divisor.
        label_smoothing: Label smoothing of the cross-entropy. Default 0.
        jit_compile: Compile each replica's forward and backward pass with
            XLA. Default False.

    Returns:
        ``step(batch)`` for a batch of ``{"image", "label"}``, returning
        ``[loss, correct]`` as scalar tensors.
    """
    import tensorflow as tf

    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing, reduction=None)
    scales_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def forward_backward(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            per_example = loss_fn(tf.one_hot(labels, num_classes), tf.cast(logits, tf.float32))
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            # mixed_float16: the gradients of the scaled loss, unscaled by the optimizer.
            scaled = optimizer.scale_loss(loss) if scales_loss else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        correct = tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == labels, tf.float32))
        return loss, correct, grads

    if jit_compile:
        # XLA compiles each replica's forward and backward pass; the
        # cross-replica gradient sum and the update stay outside, where every
        # strategy supports them.
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def train_replica_step(batch):
        loss, correct, grads = forward_backward(tf.cast(batch["image"], tf.float32), batch["label"])
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, correct

    @tf.function
    def train_step(batch):
        return reduce_sum(strategy, strategy.run(train_replica_step, args=(batch,)))

    return train_step


def make_train_steps(config, model, optimizer, strategy, *, num_classes, global_batch):
    """``{side: train step}`` for every image side ``config`` trains at.

    The model's own side, and with progressive resizing the low resolution,
    through a twin that shares all the model's layers
    (``kerascam.progressive.resized_twin``): both steps train ``model``.
    Under Keras' JAX backend: `kerascam.training.jax_steps.make_train_steps`.
    """
    if backend.name() == "jax":
        from kerascam.training import jax_steps

        return jax_steps.make_train_steps(config, model, optimizer, strategy, num_classes=num_classes)
    nets = {config.image_size: model}
    if config.low_resolution_epochs:
        with strategy.scope():
            nets[config.low_resolution_size] = progressive.resized_twin(model, config.low_resolution_size)
    return {
        side: make_train_step(net, optimizer, strategy, num_classes=num_classes, global_batch=global_batch,
                              label_smoothing=config.label_smoothing, jit_compile=config.jit)
        for side, net in nets.items()
    }
