"""The training loop: ``train`` runs one model from start (or its newest checkpoint) to its exports.

``train`` is a sequence of named steps: prepare the data
(``state.prepare_data``), build the run's variables and restore the newest
checkpoint (``state.build_state``, ``state.restore``), then
``TrainingRun.run_epoch`` for each epoch to do, each ending in
``TrainingRun.end_epoch`` (validate, decide to stop, save), and
``TrainingRun.finish`` (export and record ``run.json``).
"""

import dataclasses
import math
import os
import shutil
import signal
import time

import keras

from kerascam import backend, io, progressive
from kerascam.precision import dtype_policy
from kerascam.training.checkpoints import (
    StopRequest,
    check_compatible,
    default_checkpoint_every,
    make_stop_agreement,
    test_signals,
)
from kerascam.training.errors import TrainingError, TrainingInterrupted
from kerascam.training.history import CamSummaries, History
from kerascam.training.record import SAVED_MODEL_ON_JAX, available_cpus, export_model, float32_copy, write_run_summary
from kerascam.training.state import (
    CheckpointSaver,
    build_state,
    check_disk_space,
    open_checkpoints,
    prepare_data,
    restore,
)
from kerascam.training.steps import is_chief, make_strategy, make_train_steps
from kerascam.training.target import TargetAccuracy, target_check_steps
from kerascam.training.validation import make_validation

# Why a JAX run writes no CAM overlays: its log line and run.json's "cam_summaries_skipped".
CAM_SUMMARIES_ON_JAX = ("no TensorBoard CAM overlays (--cam-summaries) on Keras' JAX backend: they are "
                        "written through TensorFlow")

# Kept importable from here: tests and older code name them through this module.
_float32_copy = float32_copy
__all__ = ["available_cpus", "target_check_steps", "train", "TrainingRun"]


def train(config, workdir="runs", *, strategy=None, verbose=1):
    """Trains ``config.model`` on ``config.dataset`` and exports it.

    Args:
        config: A ``kerascam.configs.TrainConfig``.
        workdir: Folder of all runs; this run lives in ``workdir/config.model``.
        strategy: A ``tf.distribute.Strategy`` (under Keras' JAX backend a
            ``kerascam.training.jax_steps.LocalDevices``); default
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
            the run cannot use (``kerascam.progressive.check_config``);
            under Keras' JAX backend, a tf.distribute ``config.strategy``,
            a global batch that does not divide by the local devices or
            ``mixed_float16`` (``kerascam.training.jax_steps.LocalDevices.check_config``;
            ``cam_summaries`` are left out there, with a line saying so).
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
    if backend.name() == "jax":
        strategy.check_config(config)
    chief = is_chief(strategy)
    check_compatible(run_dir, config)
    write_cam_summaries = None
    if config.cam_summaries and backend.name() == "jax":
        if verbose:  # the demo preset asks for them: a note, not an error
            print(f"{config.model}: {CAM_SUMMARIES_ON_JAX}")
    elif config.cam_summaries:
        # kerascam.summaries draws the overlays; imported before any step so
        # that a missing module fails at once, not after the first epoch.
        from kerascam.summaries import write_cam_summaries

    # Prepare the data, before writing anything: a dataset that fails to
    # load leaves no trace of a run that never started.
    training_data = prepare_data(config)
    if chief:
        os.makedirs(run_dir, exist_ok=True)
        io.write_json(os.path.join(run_dir, "config.json"), config.to_dict())
    # Build the variables, check the disk has room for them, restore.
    state = build_state(config, strategy, training_data.train.num_classes, training_data.steps)
    if chief:
        check_disk_space(run_dir, state)
    manager = open_checkpoints(state, run_dir, chief)
    target = TargetAccuracy(config.target_accuracy, training_data.steps)
    resumed = restore(state, os.path.join(run_dir, "checkpoints"), target)
    _announce(config, strategy, resumed, verbose)
    run = TrainingRun(config, strategy, chief, verbose, stop_request, training_data, state,
                      CheckpointSaver(state, manager, training_data.steps, resumed), target, resumed,
                      run_dir, write_cam_summaries)
    # The epochs left (none when a stop at the target still holds), each
    # validated and saved at its end; then the exports and run.json.
    for epoch in range(resumed.epoch, config.epochs if not resumed.stopped else resumed.epoch):
        if run.run_epoch(epoch):
            break
    return run.finish(started)


def _announce(config, strategy, resumed, verbose):
    """The run's first lines: where it resumes, and its replicas, batch and learning rate."""
    if not verbose:
        return
    if resumed.checkpoint:
        print(f"{config.model}: resuming from {resumed.checkpoint} ({resumed.where()})")
        if resumed.stopped:
            print(f"{config.model}: stopped at validation accuracy {resumed.stopped_accuracy:.4f} >= "
                  f"--target-accuracy {config.target_accuracy}; not training further")
    precision = f", {config.mixed_precision}" if config.mixed_precision else ""
    print(
        f"{config.model}: {strategy.num_replicas_in_sync} replica(s), global batch {config.batch_size}, "
        f"peak learning rate {config.effective_learning_rate:.3g} ({config.lr_scaling} scaling from "
        f"{config.learning_rate:g} per {config.reference_batch_size}){precision}{', XLA' if config.jit else ''}"
        f"{', Keras JAX backend' if backend.name() == 'jax' else ''}"
    )


@dataclasses.dataclass
class EpochSums:
    """The running sums of an epoch's steps: their loss and their correct predictions."""

    loss: float = 0.0
    correct: float = 0.0


class TrainingRun:
    """The epochs of a run and its last steps, once its variables are built and restored.

    ``run_epoch`` trains an epoch (checking the target accuracy and saving
    within it), ``end_epoch`` validates, decides to stop and saves, and
    ``finish`` exports the model and records ``run.json``. The run stands in
    its attributes between them: ``val_loss`` and ``val_accuracy`` of the
    last validation, ``evaluated`` (whether one ran for the model as it now
    is) and ``stopped`` (at the target accuracy).
    """

    def __init__(self, config, strategy, chief, verbose, stop_request, training_data, state, saver, target,
                 resumed, run_dir, write_cam_summaries=None):
        self.config, self.strategy, self.chief, self.verbose = config, strategy, chief, verbose
        self.stop_request, self.data, self.state, self.saver = stop_request, training_data, state, saver
        self.target, self.resumed, self.run_dir = target, resumed, run_dir
        self.steps = training_data.steps
        self.train_steps = make_train_steps(config, state.model, state.optimizer, strategy,
                                            num_classes=training_data.train.num_classes,
                                            global_batch=training_data.global_batch)
        self.validate = make_validation(state.model, strategy, training_data)
        every = config.checkpoint_every
        self.checkpoint_every = every if every is not None else default_checkpoint_every(config)
        self.any_worker_stops = make_stop_agreement(strategy)
        self.signal_plan = test_signals()
        stop_request.install()  # from here on, a signal saves a checkpoint
        self.cam_summaries = None
        if write_cam_summaries is not None and chief:
            self.cam_summaries = CamSummaries(write_cam_summaries, config, training_data)
        self.history = History(run_dir, resumed.epoch) if chief else None
        self.val_loss = self.val_accuracy = float("nan")
        self.evaluated = False
        self.stopped = resumed.stopped

    def interrupted(self, epoch, done):
        """The ``TrainingInterrupted`` of a signal that stopped the run after step ``done`` of ``epoch``."""
        return TrainingInterrupted(
            f"{self.config.model}: interrupted at epoch {epoch + 1} step {done}; the same command resumes",
            # Another worker's signal (MultiWorkerMirroredStrategy): SIGTERM's code.
            128 + (self.stop_request.signum or signal.SIGTERM),
        )

    def epoch_batches(self, epoch, first_step, side):
        """The batches of ``epoch`` from step ``first_step`` on, at image side ``side``.

        Resumed mid-epoch: the epoch's own order, less the batches done,
        skipped in the example stream (pipeline.training_batches). Not
        tf.data's iterator checkpointing: it would store the shuffle buffer,
        up to 10,000 decoded images (about 1 GB for ImageNet), in every
        checkpoint, and the order is already a function of seed and epoch.

        Under Keras' JAX backend: NumPy batches, of the embedded datasets'
        arrays (`kerascam.data.numpy_pipeline`, no TensorFlow) or of the
        tf.data pipeline where the data needs it (ImageNet, folders).
        """
        config, data = self.config, self.data
        if backend.name() == "jax" and data.train.arrays is not None:
            from kerascam.data import numpy_pipeline

            batches = numpy_pipeline.training_batches(
                data.train.arrays, data.global_batch, epoch=epoch, seed=config.seed, augment=config.augment,
                skip_batches=first_step, num_batches=self.steps - first_step,
            )
            return progressive.downscale_arrays(batches, side) if side != config.image_size else batches
        from kerascam.data import pipeline

        batches = pipeline.training_batches(
            data.train.examples, data.global_batch, epoch=epoch, seed=config.seed, augment=config.augment,
            crop_size=data.crop_size, num_examples=data.train.num_examples, skip_batches=first_step,
        ).take(self.steps - first_step)
        if side != config.image_size:
            batches = progressive.downscale(batches, side)
        return batches.as_numpy_iterator() if backend.name() == "jax" else batches

    def run_epoch(self, epoch):
        """Trains ``epoch`` (its rest when resumed mid-epoch), then ``end_epoch``; True when the run stops."""
        epoch_start = time.time()
        config, steps = self.config, self.steps
        first_step = self.resumed.step if epoch == self.resumed.epoch else 0
        side = progressive.side_of_epoch(config, epoch)
        batches = self.epoch_batches(epoch, first_step, side)
        train_step = self.train_steps[side]
        bar = keras.utils.Progbar(steps, verbose=1 if self.verbose == 1 else 0, stateful_metrics=["loss", "acc"])
        at = f" ({side}x{side} images)" if side != config.image_size else ""
        if self.verbose == 1:
            print(f"{config.model} epoch {epoch + 1}/{config.epochs}{at}")
        sums = EpochSums()
        if first_step:
            sums = EpochSums(float(self.state.progress["loss_sum"].numpy()),
                             float(self.state.progress["correct_sum"].numpy()))
        for done, batch in enumerate(self.strategy.experimental_distribute_dataset(batches), start=first_step + 1):
            loss, correct = (float(v) for v in train_step(batch))
            if not math.isfinite(loss):
                raise TrainingError(
                    f"{config.model}: the loss became {loss} at epoch {epoch + 1}, step {done}; "
                    f"stopped, the last good checkpoint is kept in {self.saver.manager.directory} "
                    "(try a smaller --learning-rate)"
                )
            sums.loss += loss
            sums.correct += correct
            bar.update(done, [("loss", sums.loss / done), ("acc", sums.correct / (done * self.data.global_batch))])
            for signum in self.signal_plan.get(epoch * steps + done, ()):
                os.kill(os.getpid(), signum)
            if done == steps:
                break  # the epoch's end: validation, checkpoint, stop (end_epoch)
            if self.after_step(epoch, done, sums, epoch_start):
                return True
        return self.end_epoch(epoch, sums, epoch_start, at)

    def after_step(self, epoch, done, sums, epoch_start):
        """Within an epoch, after step ``done``: the target check, a periodic save, a signal's stop.

        Returns:
            True when the target accuracy was reached (saved there).

        Raises:
            TrainingInterrupted: a signal reached any worker (saved there).
        """
        stop = self.any_worker_stops(self.stop_request.signum is not None)
        reached = False
        if done in self.target.checks:
            self.val_loss, self.val_accuracy = self.validate()
            reached = self.target.reached(self.val_accuracy)
        if reached:
            self.state.mark_stopped(epoch * self.steps + done, self.val_accuracy)
        if reached or stop or (self.checkpoint_every and done % self.checkpoint_every == 0):
            self.saver.save(epoch, done, sums.loss, sums.correct)
        if reached:
            self.stopped, self.evaluated = True, True
            if self.history is not None:  # the partial epoch's row
                self.history.add_epoch(epoch, sums.loss / done, sums.correct / (done * self.data.global_batch),
                                       self.val_loss, self.val_accuracy, self.state.optimizer, epoch_start)
            return True
        if stop:
            raise self.interrupted(epoch, done)
        return False

    def end_epoch(self, epoch, sums, epoch_start, at=""):
        """Validates, decides to stop, records the epoch's row, saves and writes the CAM overlays.

        Returns:
            True when the target accuracy was reached.

        Raises:
            TrainingInterrupted: a signal arrived during the validation or the
                save: that checkpoint is the one to resume from.
        """
        steps, global_batch = self.steps, self.data.global_batch
        self.val_loss, self.val_accuracy = self.validate()
        self.evaluated = True
        self.stopped = self.target.reached(self.val_accuracy)
        if self.stopped:
            self.state.mark_stopped((epoch + 1) * steps, self.val_accuracy)
        if self.history is not None:
            # The epoch's row before its checkpoint: a kill between the two
            # redoes the epoch on resume, which drops the row past the
            # checkpoint; the other order would lose the row of a saved epoch.
            self.history.add_epoch(epoch, sums.loss / steps, sums.correct / (steps * global_batch),
                                   self.val_loss, self.val_accuracy, self.state.optimizer, epoch_start)
        self.saver.save(epoch, steps, sums.loss, sums.correct)
        if self.history is not None and self.cam_summaries is not None:
            self.cam_summaries.write(self.history.writer, self.state.model, epoch + 1)
        if self.history is not None and self.verbose:
            self.report_epoch(epoch, sums, epoch_start, at)
        if self.stopped:
            return True
        if self.any_worker_stops(self.stop_request.signum is not None):
            raise self.interrupted(epoch, steps)
        return False

    def report_epoch(self, epoch, sums, epoch_start, at):
        """The epoch's line: validation only under progress bars (verbose 1), everything at verbose 2."""
        seconds = time.time() - epoch_start
        if self.verbose == 1:
            print(f"  val_loss {self.val_loss:.4f} - val_accuracy {self.val_accuracy:.4f} ({seconds:.0f} s)")
        elif self.verbose == 2:
            steps, config = self.steps, self.config
            print(
                f"{config.model} epoch {epoch + 1}/{config.epochs}{at}: loss {sums.loss / steps:.4f} - accuracy "
                f"{sums.correct / (steps * self.data.global_batch):.4f} - val_loss {self.val_loss:.4f} - "
                f"val_accuracy {self.val_accuracy:.4f} ({seconds:.0f} s)",
                flush=True,
            )

    def stop_info(self):
        """``run.json``'s ``stopped_at``: where the target was reached, or None."""
        if not self.stopped:
            return None
        progress = self.state.progress
        info = {**self.target.position(int(progress["stopped_at_step"].numpy())),
                "val_accuracy": float(progress["stopped_accuracy"].numpy())}
        if self.verbose:
            print(f"{self.config.model}: validation accuracy {info['val_accuracy']:.4f} reached --target-accuracy "
                  f"{self.target.accuracy} at epoch {info['epoch']} step {info['step']}; stopped there")
        return info

    def finish(self, started):
        """Exports the model and writes ``run.json`` (the chief); returns the run's summary.

        ``started``: ``time.time()`` when this session of the run began.
        """
        if not self.evaluated:  # nothing left to train: report the saved model
            self.val_loss, self.val_accuracy = self.validate()
        stop_info = self.stop_info()
        config, data, state = self.config, self.data, self.state
        epochs_completed = int(state.epoch.numpy())
        replicas = self.strategy.num_replicas_in_sync
        if not self.chief:
            shutil.rmtree(self.saver.manager.directory, ignore_errors=True)
            return {"model": config.model, "val_accuracy": float(self.val_accuracy), "chief": False,
                    "epochs_completed": epochs_completed, "replicas": replicas}
        model = export_model(state.model, config, data.train.num_classes, self.run_dir)
        if backend.name() == "jax" and self.verbose:
            print(f"{config.model}: wrote model.keras; no SavedModel ({SAVED_MODEL_ON_JAX})")
        results = {
            "model": config.model,
            "config": config.to_dict(),
            "num_classes": data.train.num_classes,
            "class_names": list(data.train.class_names),
            "parameters": int(model.count_params()),
            "effective_learning_rate": config.effective_learning_rate,
            # Unreadable image files left out of the data (folders), by split.
            "skipped_files": [f"train/{n}" for n in data.train.skipped]
                             + [f"validation/{n}" for n in data.validation.skipped],
            "epochs_completed": epochs_completed,
            "stopped_early": stop_info is not None,
            # Where the target accuracy was reached: epoch and step (1-based), its
            # validation accuracy; the exported model is that checkpoint's.
            "stopped_at": stop_info,
            "val_accuracy": float(self.val_accuracy),
            "val_loss": float(self.val_loss),
        }
        if config.cam_summaries and backend.name() == "jax":
            results["cam_summaries_skipped"] = CAM_SUMMARIES_ON_JAX
        return write_run_summary(self.run_dir, results, started=started, resumed=bool(self.resumed.checkpoint),
                                 replicas=replicas)
