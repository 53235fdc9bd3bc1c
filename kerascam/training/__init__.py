"""Training under a tf.distribute strategy, resumable, with exports.

One custom loop serves every strategy: the step runs through
``strategy.run`` (Keras 3's ``model.fit`` fails under
MultiWorkerMirroredStrategy, keras-team/keras#20585), the loss is averaged
over the global batch and the optimizer sums the replicas' gradients.

A run of model M lives in ``WORKDIR/M/``:

- ``checkpoints/``: model, optimizer, epoch and step in the epoch, every
  ``checkpoint_every`` steps and at every epoch's end (the newest three
  kept); a run started again with the same command resumes at the step after
  the newest one, with the batches it would have seen.
- ``history.csv`` and ``logs/`` (TensorBoard): loss and accuracy per epoch.
- ``model.keras``, ``saved_model/``: the trained model.
- ``run.json``: config, final validation accuracy, wall time.

SIGTERM or SIGINT ends the current step, writes a checkpoint and raises
:class:`TrainingInterrupted` (exit code 128 + the signal's number: 143, 130);
a second one ends the process at once. A full disk during a checkpoint or an
export leaves the previous ones whole and raises a one-line ``TrainingError``.

The package, one concern per module:

- ``steps``: strategy, optimizer, model and the train step (per image side).
- ``checkpoints``: how often a run saves, saves that survive a full disk,
  resuming, and the signals that turn into a save and a stop.
- ``state``: the steps before the first epoch: the data, the variables a
  checkpoint holds (``RunState``), restoring the newest checkpoint
  (``restore``) and the numbered saves (``CheckpointSaver``).
- ``target``: ``--target-accuracy``'s checks and stop rule (``TargetAccuracy``).
- ``loop``: ``train`` as a sequence of those steps, then ``TrainingRun``:
  an epoch, its validation and stop decision, the exports and ``run.json``.
- ``jobs``: ``train.py --jobs N``, models side by side in processes of
  their own, and the signals passed on to them.
- ``validation``: the validation pass (``Validation``).
- ``history``: ``history.csv``, the TensorBoard scalars and CAM overlays.
- ``record``: the exports and ``run.json``.
- ``errors``: ``TrainingError`` and ``TrainingInterrupted``.
- ``jax_steps``, ``jax_checkpoints``: under Keras' JAX backend
  (``KERAS_BACKEND=jax``, no TensorFlow needed for the embedded datasets),
  the local devices (data parallel), the jitted train step and validation,
  and checkpoints as Keras weights files; the loop is the same, each step
  choosing its counterpart by backend.
"""

from kerascam.precision import dtype_policy
from kerascam.training.checkpoints import (
    CHECKPOINT_SECONDS,
    EXPECTED_IMAGES_PER_SECOND,
    StopRequest,
    default_checkpoint_every,
)
from kerascam.training.errors import TrainingError, TrainingInterrupted
from kerascam.training.loop import TrainingRun, train
from kerascam.training.record import available_cpus
from kerascam.training.state import CheckpointSaver, Resumed, RunState, prepare_data, restore
from kerascam.training.steps import (
    build_model_for,
    is_chief,
    make_optimizer,
    make_strategy,
    make_train_step,
    make_train_steps,
)
from kerascam.training.target import TargetAccuracy, target_check_steps

__all__ = [
    "CHECKPOINT_SECONDS",
    "EXPECTED_IMAGES_PER_SECOND",
    "CheckpointSaver",
    "Resumed",
    "RunState",
    "StopRequest",
    "TargetAccuracy",
    "TrainingError",
    "TrainingInterrupted",
    "TrainingRun",
    "available_cpus",
    "build_model_for",
    "default_checkpoint_every",
    "dtype_policy",
    "is_chief",
    "make_optimizer",
    "make_strategy",
    "make_train_step",
    "make_train_steps",
    "prepare_data",
    "restore",
    "target_check_steps",
    "train",
]
