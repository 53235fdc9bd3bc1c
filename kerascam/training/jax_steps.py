"""The training step under Keras' JAX backend: the devices, the compiled step and the validation pass.

The counterpart of `kerascam.training.steps` and
`kerascam.training.validation` when ``KERAS_BACKEND=jax``; the loop
(`kerascam.training.loop`) is the same. The step is Keras 3's "custom training
loop in JAX": ``jax.jit`` over the model's ``stateless_call`` and the
optimizer's ``stateless_apply``, the variables passed in and returned as
arrays, then assigned back to the Keras variables (so that validation,
checkpoints and exports read the model as it is). Nothing here imports
TensorFlow.

Data parallel: with more than one local device (GPUs, or CPU devices made by
``XLA_FLAGS=--xla_force_host_platform_device_count=N``) the model is built
under ``keras.distribution.DataParallel``, which replicates the variables;
each batch is split along its first axis over the devices, and XLA sums the
replicas' gradients (the mean over the global batch, as on TensorFlow).
"""

import concurrent.futures
import contextlib

import keras
import numpy as np

from kerascam import progressive

# What --strategy takes under JAX; the tf.distribute strategies stay TensorFlow's.
TENSORFLOW_STRATEGIES = ("mirrored", "multiworker")


class LocalDevices:
    """The local devices a JAX run trains on, with what the loop asks of a ``tf.distribute.Strategy``.

    ``num_replicas_in_sync``, ``scope()`` (the ``DataParallel`` distribution
    while the model and optimizer are built) and
    ``experimental_distribute_dataset`` (each batch placed on the devices,
    split along its first axis). There is no cluster: this process is the
    chief.

    Args:
        devices: The JAX devices; more than one: data parallel.
    """

    def __init__(self, devices):
        self.devices = list(devices)
        self.distribution = None
        if len(self.devices) > 1:
            self.distribution = keras.distribution.DataParallel(
                devices=[f"{d.platform}:{d.id}" for d in self.devices])

    @classmethod
    def for_strategy(cls, name="auto"):
        """The devices of ``--strategy name``: ``auto`` all local devices, ``default`` the first one.

        Raises:
            ValueError: ``mirrored`` or ``multiworker`` (tf.distribute
                strategies: TensorFlow's backend), or an unknown name.
        """
        import jax

        if name in TENSORFLOW_STRATEGIES:
            raise ValueError(
                f"--strategy {name} is a tf.distribute strategy and runs on Keras' TensorFlow backend; "
                "under KERAS_BACKEND=jax use --strategy auto (data parallel over the local devices) or default"
            )
        if name not in ("auto", "default"):
            raise ValueError(f"Unknown strategy {name!r}. Choose one of: auto, default (under KERAS_BACKEND=jax)")
        devices = jax.local_devices()
        return cls(devices if name == "auto" else devices[:1])

    @property
    def num_replicas_in_sync(self):
        return len(self.devices)

    def scope(self):
        """Where the model and its optimizer are built: their variables replicated over the devices."""
        return self.distribution.scope() if self.distribution else contextlib.nullcontext()

    def check_config(self, config):
        """One-line errors for what a JAX run cannot do, before anything is written.

        Raises:
            ValueError: the global batch does not divide by the devices, or
                ``mixed_float16`` (loss scaling is the TensorFlow path's; on
                JAX train in mixed_bfloat16).
        """
        if config.batch_size % len(self.devices):
            raise ValueError(
                f"the global batch {config.batch_size} does not divide by the {len(self.devices)} local devices "
                f"that data parallel training splits it over; use a --batch-size that is a multiple of "
                f"{len(self.devices)} (or --strategy default: one device)"
            )
        if config.mixed_precision == "mixed_float16":
            raise ValueError("mixed_float16 (with loss scaling) trains on Keras' TensorFlow backend; "
                             "under KERAS_BACKEND=jax use --mixed-precision mixed_bfloat16 or auto")

    def place(self, batch):
        """``batch`` (a dict of arrays) on the devices: split along the first axis, labels as int32."""
        import jax

        batch = {"image": np.asarray(batch["image"]), "label": np.asarray(batch["label"], np.int32),
                 **({"weight": np.asarray(batch["weight"])} if "weight" in batch else {})}
        if self.distribution is None:
            return jax.device_put(batch, self.devices[0])
        return {key: jax.device_put(value, self.distribution.get_data_layout(value.shape).backend_layout)
                for key, value in batch.items()}

    def experimental_distribute_dataset(self, batches):
        """The batches of an iterable, each placed on the devices (as ``place``), one batch ahead.

        A thread draws and places the next batch while the device runs the
        step on this one (the loop waits for the step's loss with the GIL
        released), so the NumPy pipeline's gathers and flips overlap the
        step instead of adding to it. At 224x224 they take about 0.25 ms
        per image on one core (measured on this project's CPU): a third of
        a U-Net step in bfloat16 on one H200, but more than a ResNet50 step
        at batch 256 there (``benchmarks/README.md``), which this one
        thread would then hold back. The order is the iterable's.
        """
        iterator = iter(batches)

        def next_placed():
            batch = next(iterator, None)
            return None if batch is None else self.place(batch)

        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kerascam-batches") as pool:
            ahead = pool.submit(next_placed)
            while True:
                batch = ahead.result()
                if batch is None:
                    return
                ahead = pool.submit(next_placed)
                yield batch


def _variable_values(model, optimizer):
    return ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
            [v.value for v in optimizer.variables])


def _assign(variables, values):
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def commit(variables):
    """Places each variable's value explicitly where it already lies (a committed JAX array).

    Keras creates (and restores) values uncommitted while ``jax.jit``
    returns committed ones, and jit compiles a program for each kind: without
    this the second step would compile the whole step again.
    """
    import jax

    for variable in variables:
        variable.assign(jax.device_put(variable.value, variable.value.sharding))


def make_train_step(model, optimizer, *, num_classes, label_smoothing=0.0):
    """The training step of a JAX run: ``step(batch) -> (loss, correct)``, updating the model in place.

    The loss is the softmax cross-entropy of the logits (in float32, with
    ``label_smoothing``) averaged over the global batch, as in
    `kerascam.training.steps.make_train_step`; ``correct`` counts the
    batch's top-1 hits. Forward, backward and the optimizer update are one
    XLA program.

    Args:
        model: The classifier (built under ``LocalDevices.scope()``).
        optimizer: Its optimizer, built over ``model.trainable_variables``.
        num_classes: Number of classes.
        label_smoothing: Label smoothing of the cross-entropy. Default 0.

    Returns:
        ``step(batch)`` for a placed batch of ``{"image", "label"}``.
    """
    import jax
    import jax.numpy as jnp

    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing, reduction=None)

    def loss_and_outputs(trainable, non_trainable, images, labels):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, images, training=True)
        logits = logits.astype(jnp.float32)
        loss = jnp.mean(loss_fn(jax.nn.one_hot(labels, num_classes), logits))
        return loss, (logits, non_trainable)

    gradients = jax.value_and_grad(loss_and_outputs, has_aux=True)

    def pure_step(values, images, labels):
        trainable, non_trainable, optimizer_values = values
        (loss, (logits, non_trainable)), grads = gradients(trainable, non_trainable,
                                                           images.astype(jnp.float32), labels)
        trainable, optimizer_values = optimizer.stateless_apply(optimizer_values, grads, trainable)
        correct = jnp.sum(jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
        return (trainable, non_trainable, optimizer_values), loss, correct

    compiled = jax.jit(pure_step)
    commit([*model.variables, *optimizer.variables])

    def step(batch):
        values, loss, correct = compiled(_variable_values(model, optimizer), batch["image"], batch["label"])
        trainable, non_trainable, optimizer_values = values
        _assign(model.trainable_variables, trainable)
        _assign(model.non_trainable_variables, non_trainable)
        _assign(optimizer.variables, optimizer_values)
        return loss, correct

    return step


def make_train_steps(config, model, optimizer, strategy, *, num_classes):
    """``{side: train step}`` for every image side ``config`` trains at (as `kerascam.training.steps.make_train_steps`).

    ``config.jit`` changes nothing here: under JAX the step is always compiled.
    """
    nets = {config.image_size: model}
    if config.low_resolution_epochs:
        with strategy.scope():
            nets[config.low_resolution_size] = progressive.resized_twin(model, config.low_resolution_size)
    return {side: make_train_step(net, optimizer, num_classes=num_classes, label_smoothing=config.label_smoothing)
            for side, net in nets.items()}


def validation_batches(training_data):
    """The validation split in its stored order as NumPy batches of the global batch size.

    The last partial batch is padded to the global batch with examples of
    weight 0, so that every batch splits evenly over the devices and the
    pass compiles once. The embedded datasets' arrays without TensorFlow;
    other sources through their tf.data pipeline.
    """
    batch_size = training_data.global_batch
    split = training_data.validation
    if split.arrays is not None:
        from kerascam.data import numpy_pipeline

        batches = numpy_pipeline.evaluation_batches(split.arrays, batch_size)
    else:
        from kerascam.data import pipeline

        batches = pipeline.evaluation_batches(split.examples, batch_size,
                                              crop_size=training_data.crop_size).as_numpy_iterator()
    for batch in batches:
        images, labels = np.asarray(batch["image"]), np.asarray(batch["label"])
        weight = np.ones(len(labels), np.float32)
        missing = batch_size - len(labels)
        if missing:
            images = np.concatenate([images, np.zeros((missing, *images.shape[1:]), images.dtype)])
            labels = np.concatenate([labels, np.zeros(missing, labels.dtype)])
            weight = np.concatenate([weight, np.zeros(missing, np.float32)])
        yield {"image": images, "label": labels, "weight": weight}


class Validation:
    """The validation pass of a JAX run: mean loss and accuracy of ``model`` over the validation split.

    Args:
        model: The classifier.
        strategy: The run's `LocalDevices`.
        training_data: The run's ``TrainingData``.
    """

    def __init__(self, model, strategy, training_data):
        import jax
        import jax.numpy as jnp

        self.model, self.strategy, self.data = model, strategy, training_data

        def totals(trainable, non_trainable, images, labels, weight):
            logits, _ = model.stateless_call(trainable, non_trainable, images.astype(jnp.float32), training=False)
            logits = logits.astype(jnp.float32)
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
            return jnp.sum(per_example * weight), jnp.sum(correct * weight), jnp.sum(weight)

        self.totals = jax.jit(totals)

    def __call__(self):
        """``(val_loss, val_accuracy)``."""
        sums = np.zeros(3)
        trainable = [v.value for v in self.model.trainable_variables]
        non_trainable = [v.value for v in self.model.non_trainable_variables]
        for batch in self.strategy.experimental_distribute_dataset(validation_batches(self.data)):
            sums += [float(v) for v in self.totals(trainable, non_trainable, batch["image"], batch["label"],
                                                    batch["weight"])]
        return sums[0] / sums[2], sums[1] / sums[2]
