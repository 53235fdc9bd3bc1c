"""Training under a tf.distribute strategy, resumable, with exports.

One custom loop serves every strategy: the step runs through
``strategy.run`` (Keras 3's ``model.fit`` fails under
MultiWorkerMirroredStrategy, keras-team/keras#20585), the loss is averaged
over the global batch and the optimizer sums the replicas' gradients.

A run of model M lives in ``WORKDIR/M/``:

- ``checkpoints/``: model, optimizer and epoch after every epoch; a run
  started again with the same command resumes from the newest one.
- ``history.csv`` and ``logs/`` (TensorBoard): loss and accuracy per epoch.
- ``model.keras``, ``saved_model/``: the trained model.
- ``run.json``: config, final validation accuracy, wall time.
"""

import contextlib
import csv
import io as _io
import math
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from kerascam import data, export, io
from kerascam.configs import MIXED_PRECISION_POLICIES
from kerascam.data import pipeline
from kerascam.models import build_model


class TrainingError(RuntimeError):
    """A problem the user can act on; train.py prints it as one line."""


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
    """
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


@contextlib.contextmanager
def dtype_policy(name):
    """Sets Keras' global dtype policy to ``name`` (None: float32) for a block."""
    previous = keras.config.dtype_policy()
    if name is not None and name not in MIXED_PRECISION_POLICIES:
        raise ValueError(f"Unknown mixed precision {name!r}. Choose one of: {', '.join(MIXED_PRECISION_POLICIES)}")
    keras.config.set_dtype_policy(name or "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# Fields that change the model's variables: a checkpoint of another setting
# of these cannot be resumed.
# (mixed_float16 adds the loss scale to the optimizer's variables.)
_ARCHITECTURE_FIELDS = ("model", "dataset", "image_size", "unet_filters", "batch_norm", "vgg_batch_norm", "mixed_precision")


def _check_compatible(run_dir, config):
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        return
    previous = io.read_json(path)
    changed = [f for f in _ARCHITECTURE_FIELDS if previous.get(f) != getattr(config, f)]
    if changed:
        diffs = ", ".join(f"{f} {previous.get(f)!r} -> {getattr(config, f)!r}" for f in changed)
        raise TrainingError(
            f"{run_dir} holds a run with another architecture ({diffs}); "
            "use another --workdir or remove that folder"
        )


def _reduce_sum(strategy, values):
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
        return _reduce_sum(strategy, strategy.run(train_replica_step, args=(batch,)))

    return train_step


class _History:
    """Per-epoch metrics in ``history.csv`` and TensorBoard, kept consistent on resume."""

    FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")

    def __init__(self, run_dir, start_epoch):
        self.path = os.path.join(run_dir, "history.csv")
        self.rows = []
        if os.path.exists(self.path):
            with open(self.path, newline="", encoding="utf-8") as f:
                # Rows past the checkpoint belong to epochs about to be redone.
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < start_epoch]
        self.writer = tf.summary.create_file_writer(os.path.join(run_dir, "logs"))

    def add(self, row):
        self.rows.append(row)
        buffer = _io.StringIO()
        writer = csv.DictWriter(buffer, self.FIELDS)
        writer.writeheader()
        writer.writerows(self.rows)
        io.write_text(self.path, buffer.getvalue())
        with self.writer.as_default(step=row["epoch"] + 1):
            for key in self.FIELDS[1:-1]:
                tf.summary.scalar(key, row[key])
        self.writer.flush()


def train(config, workdir="runs", *, strategy=None, verbose=1):
    """Trains ``config.model`` on ``config.dataset`` and exports it.

    Args:
        config: A ``kerascam.configs.TrainConfig``.
        workdir: Folder of all runs; this run lives in ``workdir/config.model``.
        strategy: A ``tf.distribute.Strategy``; default
            ``make_strategy(config.strategy)``.
        verbose: 1 shows progress bars and an epoch line, 2 one line per
            epoch that names the model (for runs side by side), 0 is silent.

    Returns:
        The ``run.json`` summary as a dict.

    Raises:
        TrainingError: the loss became non-finite (the last good checkpoint is
            kept), or ``workdir`` holds an incompatible run.
    """
    with dtype_policy(config.mixed_precision):
        return _train(config, workdir, strategy, verbose)


def _train(config, workdir, strategy, verbose):
    started = time.time()
    run_dir = os.path.join(workdir, config.model)
    strategy = strategy or make_strategy(config.strategy)
    chief = is_chief(strategy)
    _check_compatible(run_dir, config)

    # Load the data before writing anything: a dataset that fails to load
    # leaves no trace of a run that never started.
    train_split = data.load_split(config, "train")
    val_split = data.load_split(config, "validation")
    global_batch = config.batch_size
    crop_size = config.image_size if train_split.needs_crop else None
    steps = train_split.num_examples // global_batch
    if steps == 0:
        raise TrainingError(
            f"the training split has {train_split.num_examples} examples, fewer than one batch "
            f"of {global_batch}; lower --batch-size"
        )
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)
    if chief:
        os.makedirs(run_dir, exist_ok=True)
        io.write_json(os.path.join(run_dir, "config.json"), config.to_dict())

    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_model_for(config, train_split.num_classes, weights=config.weights)
        optimizer = make_optimizer(config, steps)
        # Create the optimizer's slots now so a restore fills them directly.
        optimizer.build(model.trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    if chief:
        # Two kept checkpoints and one being written (weights and optimizer
        # slots), model.keras, the SavedModel, and room for logs.
        copies = 3 * (1 + len(optimizer.variables) // max(1, len(model.trainable_variables))) + 2
        io.check_free_space(run_dir, copies * 4 * model.count_params() + 64 * 2**20, "checkpoints and exports")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
    shared_dir = os.path.join(run_dir, "checkpoints")
    # Every worker takes part in saving (the variables are read collectively),
    # but only the chief's copy lands in the run folder; the others write to
    # a scratch folder of their own. All of them resume from the chief's.
    save_dir = shared_dir if chief else tempfile.mkdtemp(prefix="kerascam-worker-ckpt-")
    manager = tf.train.CheckpointManager(checkpoint, save_dir, max_to_keep=2)
    latest = tf.train.latest_checkpoint(shared_dir)
    if latest:
        try:
            checkpoint.restore(latest).assert_existing_objects_matched()
        except Exception as e:  # noqa: BLE001  (a damaged file raises many kinds of errors)
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TrainingError(
                f"cannot restore checkpoint {latest} ({reason}); it is damaged or from "
                "another run: remove it to resume from the previous one, or use another --workdir"
            ) from e
        if verbose:
            print(f"{config.model}: resuming from {latest} (epoch {int(epoch_var)})")
    if verbose:
        precision = f", {config.mixed_precision}" if config.mixed_precision else ""
        print(
            f"{config.model}: {strategy.num_replicas_in_sync} replica(s), global batch {global_batch}, "
            f"peak learning rate {config.effective_learning_rate:.3g} ({config.lr_scaling} scaling from "
            f"{config.learning_rate:g} per {config.reference_batch_size}){precision}{', XLA' if config.jit else ''}"
        )
    start_epoch = int(epoch_var.numpy())

    num_classes = train_split.num_classes
    train_step = make_train_step(
        model, optimizer, strategy, num_classes=num_classes, global_batch=global_batch,
        label_smoothing=config.label_smoothing, jit_compile=config.jit,
    )

    def eval_replica_step(batch):
        images = tf.cast(batch["image"], tf.float32)
        labels = batch["label"]
        logits = tf.cast(model(images, training=False), tf.float32)
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        correct = tf.cast(tf.argmax(logits, -1) == labels, tf.float32)
        return tf.reduce_sum(per_example), tf.reduce_sum(correct), tf.cast(tf.size(labels), tf.float32)

    @tf.function(reduce_retracing=True)
    def eval_step(batch):
        return _reduce_sum(strategy, strategy.run(eval_replica_step, args=(batch,)))

    def evaluate():
        totals = np.zeros(3)
        batches = pipeline.evaluation_batches(val_split.examples, global_batch, crop_size=crop_size)
        for batch in strategy.experimental_distribute_dataset(batches):
            totals += [float(v) for v in eval_step(batch)]
        return totals[0] / totals[2], totals[1] / totals[2]

    history = _History(run_dir, start_epoch) if chief else None
    val_loss = val_acc = float("nan")
    for epoch in range(start_epoch, config.epochs):
        epoch_start = time.time()
        batches = pipeline.training_batches(
            train_split.examples, global_batch, epoch=epoch, seed=config.seed, augment=config.augment,
            crop_size=crop_size, num_examples=train_split.num_examples,
        ).take(steps)
        bar = keras.utils.Progbar(steps, verbose=1 if verbose == 1 else 0, stateful_metrics=["loss", "acc"])
        if verbose == 1:
            print(f"{config.model} epoch {epoch + 1}/{config.epochs}")
        loss_sum = correct_sum = 0.0
        for step, batch in enumerate(strategy.experimental_distribute_dataset(batches)):
            loss, correct = (float(v) for v in train_step(batch))
            if not math.isfinite(loss):
                raise TrainingError(
                    f"{config.model}: the loss became {loss} at epoch {epoch + 1}, step {step + 1}; "
                    f"stopped, the last good checkpoint is kept in {manager.directory} "
                    "(try a smaller --learning-rate)"
                )
            loss_sum += loss
            correct_sum += correct
            bar.update(step + 1, [("loss", loss_sum / (step + 1)), ("acc", correct_sum / ((step + 1) * global_batch))])
        val_loss, val_acc = evaluate()
        epoch_var.assign(epoch + 1)
        if history is not None:
            # The epoch's row before its checkpoint: a kill between the two
            # redoes the epoch on resume, which drops the row past the
            # checkpoint; the other order would lose the row of a saved epoch.
            history.add(
                {
                    "epoch": epoch,
                    "loss": loss_sum / steps,
                    "accuracy": correct_sum / (steps * global_batch),
                    "val_loss": val_loss,
                    "val_accuracy": val_acc,
                    "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
                    "seconds": time.time() - epoch_start,
                }
            )
        manager.save(checkpoint_number=epoch + 1)
        if history is None:
            continue
        if verbose == 1:
            print(f"  val_loss {val_loss:.4f} - val_accuracy {val_acc:.4f} ({time.time() - epoch_start:.0f} s)")
        elif verbose == 2:
            print(
                f"{config.model} epoch {epoch + 1}/{config.epochs}: loss {loss_sum / steps:.4f} - accuracy "
                f"{correct_sum / (steps * global_batch):.4f} - val_loss {val_loss:.4f} - val_accuracy {val_acc:.4f} "
                f"({time.time() - epoch_start:.0f} s)",
                flush=True,
            )

    if start_epoch >= config.epochs:  # nothing left to train: report the saved model
        val_loss, val_acc = evaluate()
    if not chief:
        shutil.rmtree(save_dir, ignore_errors=True)
        return {"model": config.model, "val_accuracy": float(val_acc), "chief": False,
                "epochs_completed": int(epoch_var.numpy()), "replicas": strategy.num_replicas_in_sync}

    if config.mixed_precision:
        model = _float32_copy(model, config, train_split.num_classes)
    export.save_keras(model, os.path.join(run_dir, "model.keras"))
    export.export_saved_model(model, os.path.join(run_dir, "saved_model"))
    previous_seconds = 0.0
    summary_path = os.path.join(run_dir, "run.json")
    if start_epoch > 0 and os.path.exists(summary_path):
        previous_seconds = io.read_json(summary_path).get("wall_seconds", 0.0)
    summary = {
        "model": config.model,
        "config": config.to_dict(),
        "num_classes": num_classes,
        "class_names": list(train_split.class_names),
        "parameters": int(model.count_params()),
        "effective_learning_rate": config.effective_learning_rate,
        # Unreadable image files left out of the data (folders), by split.
        "skipped_files": [f"train/{n}" for n in train_split.skipped] + [f"validation/{n}" for n in val_split.skipped],
        "epochs_completed": int(epoch_var.numpy()),
        "val_accuracy": float(val_acc),
        "val_loss": float(val_loss),
        "wall_seconds": previous_seconds + time.time() - started,
        "replicas": strategy.num_replicas_in_sync,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    io.write_json(summary_path, summary)
    return summary


def _float32_copy(model, config, num_classes):
    """The float32 twin of a mixed-precision model, with its weights.

    Mixed precision is for training speed; explanations take gradients of the
    exported model, which should not be computed in float16.
    """
    with dtype_policy(None):
        twin = build_model_for(config, num_classes)
    twin.set_weights(model.get_weights())
    return twin
