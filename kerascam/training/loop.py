"""The training loop: ``train`` runs one model from start (or its newest checkpoint) to its exports."""

import csv
import io as _io
import math
import os
import shutil
import signal
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from kerascam import data, export, io, progressive
from kerascam.data import pipeline
from kerascam.precision import dtype_policy
from kerascam.training.checkpoints import (
    StopRequest,
    check_compatible,
    default_checkpoint_every,
    make_stop_agreement,
    no_space_is_one_line,
    restore_latest,
    save_checkpoint,
    test_signals,
)
from kerascam.training.errors import TrainingError, TrainingInterrupted
from kerascam.training.steps import (
    build_model_for,
    is_chief,
    make_optimizer,
    make_strategy,
    make_train_steps,
    reduce_sum,
)


def available_cpus():
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def target_check_steps(steps_per_epoch):
    """Steps of an epoch after which ``target_accuracy`` is checked: every quarter epoch.

    The last one is the epoch's end, where the validation pass runs anyway.
    """
    return sorted({max(1, round(steps_per_epoch * k / 4)) for k in range(1, 5)})


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
        TrainingInterrupted: SIGTERM or SIGINT arrived (called from the main
            thread); the step under way finished and a checkpoint was saved.
        TrainingError: the loss became non-finite (the last good checkpoint is
            kept), the disk filled up while writing (the previous checkpoint
            and exports are kept), or ``workdir`` holds an incompatible run.
        ValueError: ``target_accuracy`` outside (0, 1], a negative
            ``checkpoint_every`` or ``cam_summaries``, low-resolution epochs
            the run cannot use (``kerascam.progressive.check_config``).
    """
    progressive.check_config(config)
    if config.target_accuracy is not None and not 0 < config.target_accuracy <= 1:
        raise ValueError(f"target_accuracy must lie in (0, 1]. Received: target_accuracy={config.target_accuracy}")
    if config.checkpoint_every is not None and config.checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be 0 (epoch ends only) or positive. Received: {config.checkpoint_every}")
    if config.cam_summaries < 0:
        raise ValueError(f"cam_summaries must be 0 or positive. Received: {config.cam_summaries}")
    with dtype_policy(config.mixed_precision), StopRequest() as stop_request:
        return _train(config, workdir, strategy, verbose, stop_request)


def _train(config, workdir, strategy, verbose, stop_request):
    started = time.time()
    run_dir = os.path.join(workdir, config.model)
    strategy = strategy or make_strategy(config.strategy)
    chief = is_chief(strategy)
    check_compatible(run_dir, config)
    write_cam_summaries = None
    if config.cam_summaries:
        # kerascam.summaries draws the overlays; imported before any step so
        # that a missing module fails at once, not after the first epoch.
        from kerascam.summaries import write_cam_summaries

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
        # Where the run stands within the epoch, saved with the weights: the
        # steps done and their loss and correct-prediction sums (so that the
        # epoch's history row is the one of an uninterrupted run), and the
        # target-accuracy stop (global step and accuracy of the check).
        progress = {
            "step": tf.Variable(0, dtype=tf.int64, trainable=False),
            "loss_sum": tf.Variable(0.0, dtype=tf.float64, trainable=False),
            "correct_sum": tf.Variable(0.0, dtype=tf.float64, trainable=False),
            "stopped_at_step": tf.Variable(0, dtype=tf.int64, trainable=False),
            "stopped_accuracy": tf.Variable(0.0, dtype=tf.float64, trainable=False),
        }
    if chief:
        # Three kept checkpoints and one being written (weights and optimizer
        # slots), model.keras, the SavedModel, and room for logs.
        copies = 4 * (1 + len(optimizer.variables) // max(1, len(model.trainable_variables))) + 2
        io.check_free_space(run_dir, copies * 4 * model.count_params() + 64 * 2**20, "checkpoints and exports")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var, **progress)
    shared_dir = os.path.join(run_dir, "checkpoints")
    # Every worker takes part in saving (the variables are read collectively),
    # but only the chief's copy lands in the run folder; the others write to
    # a scratch folder of their own. All of them resume from the chief's.
    save_dir = shared_dir if chief else tempfile.mkdtemp(prefix="kerascam-worker-ckpt-")
    manager = tf.train.CheckpointManager(checkpoint, save_dir, max_to_keep=3)
    latest = restore_latest(checkpoint, shared_dir)
    start_epoch, start_step = int(epoch_var.numpy()), int(progress["step"].numpy())
    stopped_at_step = int(progress["stopped_at_step"].numpy())
    stopped_accuracy = float(progress["stopped_accuracy"].numpy())
    # A run stopped at its target stays stopped while the target holds; with
    # a higher target, or none, it trains on from that checkpoint.
    stopped = bool(stopped_at_step) and config.target_accuracy is not None and stopped_accuracy >= config.target_accuracy
    if latest and verbose:
        # "epoch N": N epochs done; mid-epoch, the words of the interruption line.
        where = f"epoch {start_epoch + 1} step {start_step}, mid-epoch" if start_step else f"epoch {start_epoch}"
        print(f"{config.model}: resuming from {latest} ({where})")
        if stopped:
            print(f"{config.model}: stopped at validation accuracy {stopped_accuracy:.4f} >= "
                  f"--target-accuracy {config.target_accuracy}; not training further")
    if not stopped:
        progress["stopped_at_step"].assign(0)
    if verbose:
        precision = f", {config.mixed_precision}" if config.mixed_precision else ""
        print(
            f"{config.model}: {strategy.num_replicas_in_sync} replica(s), global batch {global_batch}, "
            f"peak learning rate {config.effective_learning_rate:.3g} ({config.lr_scaling} scaling from "
            f"{config.learning_rate:g} per {config.reference_batch_size}){precision}{', XLA' if config.jit else ''}"
        )

    num_classes = train_split.num_classes
    train_steps = make_train_steps(config, model, optimizer, strategy, num_classes=num_classes,
                                   global_batch=global_batch)

    def eval_replica_step(batch):
        images = tf.cast(batch["image"], tf.float32)
        labels = batch["label"]
        logits = tf.cast(model(images, training=False), tf.float32)
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        correct = tf.cast(tf.argmax(logits, -1) == labels, tf.float32)
        return tf.reduce_sum(per_example), tf.reduce_sum(correct), tf.cast(tf.size(labels), tf.float32)

    @tf.function(reduce_retracing=True)
    def eval_step(batch):
        return reduce_sum(strategy, strategy.run(eval_replica_step, args=(batch,)))

    def evaluate():
        totals = np.zeros(3)
        batches = pipeline.evaluation_batches(val_split.examples, global_batch, crop_size=crop_size)
        for batch in strategy.experimental_distribute_dataset(batches):
            totals += [float(v) for v in eval_step(batch)]
        return totals[0] / totals[2], totals[1] / totals[2]

    every = config.checkpoint_every if config.checkpoint_every is not None else default_checkpoint_every(config)
    target = config.target_accuracy
    checks = target_check_steps(steps) if target is not None else ()
    any_worker_stops = make_stop_agreement(strategy)
    signal_plan = test_signals()
    stop_request.install()  # from here on, a signal saves a checkpoint
    # Checkpoints are numbered by global step; a number already saved (the
    # one resumed from, or a periodic save just before a stop) is never
    # written again, so an existing checkpoint is never overwritten in place.
    last_saved = start_epoch * steps + start_step if latest else None

    def save(epoch, done, loss_sum, correct_sum):
        nonlocal last_saved
        number = epoch * steps + done
        if number == last_saved:
            return
        epoch_var.assign(epoch if done < steps else epoch + 1)
        progress["step"].assign(done if done < steps else 0)
        progress["loss_sum"].assign(loss_sum if done < steps else 0.0)
        progress["correct_sum"].assign(correct_sum if done < steps else 0.0)
        save_checkpoint(manager, number)
        last_saved = number

    def interrupted(epoch, done):
        return TrainingInterrupted(
            f"{config.model}: interrupted at epoch {epoch + 1} step {done}; the same command resumes",
            # Another worker's signal (MultiWorkerMirroredStrategy): SIGTERM's code.
            128 + (stop_request.signum or signal.SIGTERM),
        )

    cam_images = cam_labels = None
    if write_cam_summaries is not None and chief:
        # The first images of the validation split: the same ones every epoch.
        first = next(iter(pipeline.evaluation_batches(val_split.examples, config.cam_summaries, crop_size=crop_size)))
        cam_images, cam_labels = first["image"].numpy(), first["label"].numpy()
        if cam_images.dtype != np.uint8:  # resized crops come as floats in 0-255
            cam_images = np.clip(np.rint(cam_images), 0, 255).astype(np.uint8)

    history = _History(run_dir, start_epoch) if chief else None
    explained = None  # the model the CAM summaries explain (float32 under mixed precision)
    val_loss = val_acc = float("nan")
    evaluated = False
    for epoch in range(start_epoch, config.epochs if not stopped else start_epoch):
        epoch_start = time.time()
        first_step = start_step if epoch == start_epoch else 0
        # Resumed mid-epoch: the epoch's own order, less the batches done,
        # skipped in the example stream (pipeline.training_batches). Not
        # tf.data's iterator checkpointing: it would store the shuffle buffer,
        # up to 10,000 decoded images (about 1 GB for ImageNet), in every
        # checkpoint, and the order is already a function of seed and epoch.
        batches = pipeline.training_batches(
            train_split.examples, global_batch, epoch=epoch, seed=config.seed, augment=config.augment,
            crop_size=crop_size, num_examples=train_split.num_examples, skip_batches=first_step,
        ).take(steps - first_step)
        side = progressive.side_of_epoch(config, epoch)
        if side != config.image_size:
            batches = progressive.downscale(batches, side)
        train_step = train_steps[side]
        bar = keras.utils.Progbar(steps, verbose=1 if verbose == 1 else 0, stateful_metrics=["loss", "acc"])
        at = f" ({side}x{side} images)" if side != config.image_size else ""
        if verbose == 1:
            print(f"{config.model} epoch {epoch + 1}/{config.epochs}{at}")
        loss_sum = float(progress["loss_sum"].numpy()) if first_step else 0.0
        correct_sum = float(progress["correct_sum"].numpy()) if first_step else 0.0
        for done, batch in enumerate(strategy.experimental_distribute_dataset(batches), start=first_step + 1):
            loss, correct = (float(v) for v in train_step(batch))
            if not math.isfinite(loss):
                raise TrainingError(
                    f"{config.model}: the loss became {loss} at epoch {epoch + 1}, step {done}; "
                    f"stopped, the last good checkpoint is kept in {manager.directory} "
                    "(try a smaller --learning-rate)"
                )
            loss_sum += loss
            correct_sum += correct
            bar.update(done, [("loss", loss_sum / done), ("acc", correct_sum / (done * global_batch))])
            for signum in signal_plan.get(epoch * steps + done, ()):
                os.kill(os.getpid(), signum)
            if done == steps:
                break  # the epoch's end: validation, checkpoint, stop (below)
            stop = any_worker_stops(stop_request.signum is not None)
            reached = False
            if done in checks:
                val_loss, val_acc = evaluate()
                reached = val_acc >= target
            if reached:
                progress["stopped_at_step"].assign(epoch * steps + done)
                progress["stopped_accuracy"].assign(val_acc)
            if reached or stop or (every and done % every == 0):
                save(epoch, done, loss_sum, correct_sum)
            if reached:
                stopped, evaluated = True, True
                if history is not None:  # the partial epoch's row
                    _add_history_row(history, epoch, loss_sum / done, correct_sum / (done * global_batch),
                                     val_loss, val_acc, optimizer, epoch_start)
                break
            if stop:
                raise interrupted(epoch, done)
        if stopped:
            break
        val_loss, val_acc = evaluate()
        evaluated = True
        stopped = target is not None and val_acc >= target
        if stopped:
            progress["stopped_at_step"].assign((epoch + 1) * steps)
            progress["stopped_accuracy"].assign(val_acc)
        if history is not None:
            # The epoch's row before its checkpoint: a kill between the two
            # redoes the epoch on resume, which drops the row past the
            # checkpoint; the other order would lose the row of a saved epoch.
            _add_history_row(history, epoch, loss_sum / steps, correct_sum / (steps * global_batch),
                             val_loss, val_acc, optimizer, epoch_start)
        save(epoch, steps, loss_sum, correct_sum)
        if history is not None and write_cam_summaries is not None:
            # Mixed precision: the float32 twin, as exported, so that the
            # overlays never come from float16 gradients.
            # Built once and refreshed each epoch, so its CAM graph is traced once.
            if not config.mixed_precision:
                explained = model
            elif explained is None:
                explained = _float32_copy(model, config, num_classes)
            else:
                explained.set_weights(model.get_weights())
            write_cam_summaries(history.writer, explained, cam_images, epoch + 1,
                                class_names=list(train_split.class_names), labels=cam_labels)
        if history is not None and verbose == 1:
            print(f"  val_loss {val_loss:.4f} - val_accuracy {val_acc:.4f} ({time.time() - epoch_start:.0f} s)")
        elif history is not None and verbose == 2:
            print(
                f"{config.model} epoch {epoch + 1}/{config.epochs}{at}: loss {loss_sum / steps:.4f} - accuracy "
                f"{correct_sum / (steps * global_batch):.4f} - val_loss {val_loss:.4f} - val_accuracy {val_acc:.4f} "
                f"({time.time() - epoch_start:.0f} s)",
                flush=True,
            )
        if stopped:
            break
        # A signal during the validation or the save: that checkpoint is the one to resume from.
        if any_worker_stops(stop_request.signum is not None):
            raise interrupted(epoch, steps)

    if not evaluated:  # nothing left to train: report the saved model
        val_loss, val_acc = evaluate()
    stop_info = None
    if stopped:
        stop_step = int(progress["stopped_at_step"].numpy())
        stop_info = {
            "epoch": (stop_step - 1) // steps + 1,
            "step": stop_step - (stop_step - 1) // steps * steps,
            "global_step": stop_step,
            "val_accuracy": float(progress["stopped_accuracy"].numpy()),
        }
        if verbose:
            print(f"{config.model}: validation accuracy {stop_info['val_accuracy']:.4f} reached --target-accuracy "
                  f"{target} at epoch {stop_info['epoch']} step {stop_info['step']}; stopped there")
    if not chief:
        shutil.rmtree(save_dir, ignore_errors=True)
        return {"model": config.model, "val_accuracy": float(val_acc), "chief": False,
                "epochs_completed": int(epoch_var.numpy()), "replicas": strategy.num_replicas_in_sync}

    if config.mixed_precision:
        model = _float32_copy(model, config, train_split.num_classes)
    with no_space_is_one_line(os.path.join(run_dir, "model.keras")):
        export.save_keras(model, os.path.join(run_dir, "model.keras"))
    with no_space_is_one_line(os.path.join(run_dir, "saved_model")):
        export.export_saved_model(model, os.path.join(run_dir, "saved_model"))
    previous_seconds = 0.0
    summary_path = os.path.join(run_dir, "run.json")
    if latest and os.path.exists(summary_path):
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
        "stopped_early": stop_info is not None,
        # Where the target accuracy was reached: epoch and step (1-based), its
        # validation accuracy; the exported model is that checkpoint's.
        "stopped_at": stop_info,
        "val_accuracy": float(val_acc),
        "val_loss": float(val_loss),
        "wall_seconds": previous_seconds + time.time() - started,
        "replicas": strategy.num_replicas_in_sync,
        # TensorFlow's thread pools (0: TensorFlow's default, one thread per
        # core): with the seed and the machine, what the weights depend on
        # (oneDNN sums in another order with another number of threads).
        "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                    "cpus": available_cpus()},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    with no_space_is_one_line(summary_path):
        io.write_json(summary_path, summary)
    return summary


def _add_history_row(history, epoch, loss, accuracy, val_loss, val_acc, optimizer, epoch_start):
    with no_space_is_one_line(history.path):
        history.add(
            {
                "epoch": epoch,
                "loss": loss,
                "accuracy": accuracy,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
                "seconds": time.time() - epoch_start,
            }
        )


def _float32_copy(model, config, num_classes):
    """The float32 twin of a mixed-precision model, with its weights.

    Mixed precision is for training speed; explanations take gradients of the
    exported model, which should not be computed in float16.
    """
    with dtype_policy(None):
        twin = build_model_for(config, num_classes)
    twin.set_weights(model.get_weights())
    return twin
