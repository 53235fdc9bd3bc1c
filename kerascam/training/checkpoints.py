"""Checkpoints of a run and the stops that write them.

How often a run saves (``default_checkpoint_every``: about every 10 minutes
at the speed each model is expected to reach), how a save survives a full
disk, which checkpoint a run resumes from and when it cannot, and how a
signal (SIGTERM, SIGINT, ``train.py --jobs``' SIGUSR1) becomes a save and a
stop on every worker at the same step.
"""

import contextlib
import errno
import glob
import os
import shutil
import signal
import sys
import threading

from kerascam import backend, io
from kerascam.training.errors import TrainingError, unrestorable_checkpoint


# Fields that change the model's variables: a checkpoint of another setting
# of these cannot be resumed.
# (mixed_float16 adds the loss scale to the optimizer's variables.)
ARCHITECTURE_FIELDS = ("model", "dataset", "image_size", "unet_filters", "batch_norm", "vgg_batch_norm", "mixed_precision")


def check_compatible(run_dir, config):
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        return
    previous = io.read_json(path)
    changed = [f for f in ARCHITECTURE_FIELDS if previous.get(f) != getattr(config, f)]
    if changed:
        diffs = ", ".join(f"{f} {previous.get(f)!r} -> {getattr(config, f)!r}" for f in changed)
        raise TrainingError(
            f"{run_dir} holds a run with another architecture ({diffs}); "
            "use another --workdir or remove that folder"
        )


# A checkpoint about every CHECKPOINT_SECONDS when checkpoint_every is None.
CHECKPOINT_SECONDS = 600


# Training images per second each model is expected to reach, by dataset: each
# model's spec holds its own (kerascam.specs, ``images_per_second``); where
# they come from is said here. "shapes" (demo preset, 48x48, batch 32):
# measured on this project's 2-core CPU, idle (the rates are in the specs and
# docs/manual.md, "Interruptions, preemption and a full disk"; the ablated
# U-Net not measured, given the U-Net's rate): a demo epoch is short enough
# that the default is a checkpoint at epoch ends only. "imagenet2012" (and folders, cropped to 224x224 the same
# way): one H200 in bfloat16, the train steps measured under Keras' JAX
# backend (benchmarks/README.md, backend_speed.py), rounded down, ResNet50's
# capped at what a 16-core input pipeline decodes (benchmarks/README.md,
# pipeline.py: per 2 cores); not measured with TensorFlow's GPU build. The
# checkpoint intervals these give at batch 256 are in docs/manual.md
# ("Interruptions, preemption and a full disk").
# Each rate is at its image side (48 and 224); other sides scale it by the
# ratio of pixels (the convolutions' cost).
RATE_SIDES = {"shapes": 48, "imagenet2012": 224}


def expected_images_per_second(dataset):
    """``(side, {model: images per second})`` for ``dataset`` from the registered specs."""
    from kerascam.specs import SPECS

    rates = {name: spec.images_per_second[dataset] for name, spec in SPECS.items() if dataset in spec.images_per_second}
    return RATE_SIDES[dataset], rates


# The paper's four models' rates, as registered when this module was imported.
EXPECTED_IMAGES_PER_SECOND = {dataset: expected_images_per_second(dataset) for dataset in RATE_SIDES}


def default_checkpoint_every(config):
    """Steps between checkpoints so that one lands about every 10 minutes.

    Based on ``expected_images_per_second`` for ``config``'s dataset (folders
    count as ImageNet) and model, scaled to ``config.image_size``, at
    ``config.batch_size``. An interval at or above the steps of an epoch
    means checkpoints at epoch ends only.
    """
    side, table = expected_images_per_second("shapes" if config.dataset == "shapes" else "imagenet2012")
    images_per_second = table.get(config.model, min(table.values())) * (side / config.image_size) ** 2
    return max(1, round(CHECKPOINT_SECONDS * images_per_second / config.batch_size))


def is_no_space(error):
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    if isinstance(error, OSError) and "No space left on device" in str(error):
        return True  # h5py (the JAX path's weights files) puts the C library's error in its text
    # TensorFlow's file writers report the C library's error in their text
    # (only where TensorFlow is loaded: nothing else raises its errors).
    tf = sys.modules.get("tensorflow")
    op_error = getattr(getattr(tf, "errors", None), "OpError", None)
    return op_error is not None and isinstance(error, op_error) and "No space left on device" in str(error)


@contextlib.contextmanager
def no_space_is_one_line(what):
    """Turns a full disk while writing ``what`` into a one-line TrainingError."""
    try:
        yield
    except Exception as e:  # noqa: BLE001  (re-raised unless the disk is full)
        if not is_no_space(e):
            raise
        raise TrainingError(
            f"no space left on device while writing {what}; free space and run the same command to resume"
        ) from e


def save_checkpoint(manager, number):
    """``manager.save(number)``; a full disk leaves the previous checkpoints as they were.

    TensorFlow writes a checkpoint's data and index first (through a
    temporary folder, then renamed) and only then, atomically, rewrites the
    ``checkpoint`` state file that names the newest; the older files are
    deleted after that. A failure mid-write therefore never moves the state
    file to a partial checkpoint: what it leaves behind is this number's
    partial files, removed here so that they free their space. (A number is
    never saved twice: see ``kerascam.training.state.CheckpointSaver``.)
    """
    prefix = os.path.join(manager.directory, f"ckpt-{number}")
    try:
        with no_space_is_one_line(f"checkpoint {prefix}"):
            manager.save(checkpoint_number=number)
    except TrainingError:
        if prefix not in manager.checkpoints:
            for path in glob.glob(glob.escape(prefix) + ".*") + glob.glob(glob.escape(prefix) + "_temp*"):
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
        raise


def restore_latest(checkpoint, directory):
    """Restores ``checkpoint`` from the newest checkpoint in ``directory``.

    Returns:
        The restored checkpoint's path, or None when ``directory`` holds none
        (a fresh start).

    Raises:
        TrainingError: the state file names a checkpoint whose files are gone
            (never taken for a fresh start), or the newest checkpoint cannot
            be restored (damaged, or of another run).

    Under Keras' JAX backend: `kerascam.training.jax_checkpoints.restore_latest`.
    """
    if backend.name() == "jax":
        from kerascam.training.jax_checkpoints import restore_latest as restore_keras_checkpoint

        return restore_keras_checkpoint(checkpoint, directory)
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(directory)
    state = tf.train.get_checkpoint_state(directory)
    if state is None and glob.glob(os.path.join(glob.escape(directory), "ckpt-*.json")):
        raise TrainingError(
            f"{directory} holds checkpoints of Keras' JAX backend (kerascam.training.jax_checkpoints); "
            "resume that run with KERAS_BACKEND=jax, or use another --workdir"
        )
    if latest is None and state is not None and state.model_checkpoint_path:
        # latest_checkpoint() answers None when the files it names are gone.
        raise TrainingError(
            f"{os.path.join(directory, 'checkpoint')} names {state.model_checkpoint_path}, whose files are "
            "missing; restore them, or remove the checkpoints folder to start over"
        )
    if latest:
        try:
            checkpoint.restore(latest).assert_existing_objects_matched()
        except Exception as e:  # noqa: BLE001  (a damaged file raises many kinds of errors)
            raise unrestorable_checkpoint(latest, e) from e
    return latest


class StopRequest:
    """Catches SIGTERM and SIGINT during training: the loop saves and stops.

    The first signal only sets ``signum``; the handlers then go back to the
    default action, so a second signal ends the process at once, even inside
    a long TensorFlow call. SIGUSR1 (what ``train.py --jobs N`` sends its
    training processes) asks the same, without arming the second-signal exit.
    The handlers are installed by :meth:`install` once the first step is near
    (a Ctrl-C while a dataset is prepared still stops at once), from the main
    thread only (Python's rule; elsewhere it never fires), and removed when
    the ``with`` block ends.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        return self

    def install(self):
        if threading.current_thread() is threading.main_thread() and not self._previous:
            for signum in (*self.SIGNALS, signal.SIGUSR1):
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        if signum == signal.SIGUSR1:
            self.signum = self.signum or signal.SIGTERM
            return
        self.signum = signum
        for other in self.SIGNALS:
            signal.signal(other, signal.SIG_DFL)

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# Tests only: "STEP:SIGNAL[,STEP:SIGNAL...]" makes the loop send itself
# SIGNAL right after global step STEP (1-based over the run), so that a test
# interrupts a run at an exact step without sleeping on timing luck.
TEST_SIGNALS_VARIABLE = "KERASCAM_TEST_SIGNALS"


def test_signals():
    plan = {}
    for item in filter(None, os.environ.get(TEST_SIGNALS_VARIABLE, "").split(",")):
        step, name = item.split(":")
        plan.setdefault(int(step), []).append(getattr(signal, name))
    return plan


def spans_workers(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver is not None and sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values()) > 1


def make_stop_agreement(strategy):
    """``agree(flag)``: True on every worker if any worker's ``flag`` is True.

    One scalar all-reduce per call across the workers of a
    MultiWorkerMirroredStrategy (a signal reaches one worker, but all of them
    must save at the same step: saving is collective); the flag itself
    elsewhere.
    """
    if not spans_workers(strategy):
        return lambda flag: flag
    import tensorflow as tf

    @tf.function
    def total(flag):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(flag,)), axis=None)

    return lambda flag: float(total(tf.constant(1.0 if flag else 0.0))) > 0
