"""What a run holds before its first step: its data, the variables a checkpoint saves, where it resumes.

The steps of ``kerascam.training.loop.train`` before the epochs, in order:
``prepare_data`` (before anything is written), ``build_state`` (model,
optimizer and the run's position, under the strategy), ``check_disk_space``,
``open_checkpoints``, ``restore`` (the newest checkpoint, if any) and
``CheckpointSaver`` (numbered saves from there on).
"""

import dataclasses
import os
import tempfile

import keras

from kerascam import backend, data, io
from kerascam.training.checkpoints import restore_latest, save_checkpoint
from kerascam.training.errors import TrainingError
from kerascam.training.steps import build_model_for, make_optimizer


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The splits of a run and the geometry of its epochs.

    Attributes:
        train: The training split (``kerascam.data.load_split``).
        validation: The validation split.
        global_batch: Images per step over all replicas.
        crop_size: Side of the crops when the split's images need cropping
            (folders, ImageNet), else None.
        steps: Steps of one epoch.
    """

    train: object
    validation: object
    global_batch: int
    crop_size: int | None
    steps: int


def prepare_data(config):
    """Loads ``config``'s splits; a split smaller than one batch is a ``TrainingError``."""
    train_split = data.load_split(config, "train")
    val_split = data.load_split(config, "validation")
    global_batch = config.batch_size
    steps = train_split.num_examples // global_batch
    if steps == 0:
        raise TrainingError(
            f"the training split has {train_split.num_examples} examples, fewer than one batch "
            f"of {global_batch}; lower --batch-size"
        )
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)
    crop_size = config.image_size if train_split.needs_crop else None
    return TrainingData(train_split, val_split, global_batch, crop_size, steps)


def counter(value, dtype):
    """A number a checkpoint saves: a ``tf.Variable`` of ``dtype`` (``"int64"``, ``"float64"``).

    Under Keras' JAX backend a ``kerascam.training.jax_checkpoints.Scalar``
    (a Python number, saved in the checkpoint's JSON), read and set the same way.
    """
    if backend.name() == "jax":
        from kerascam.training.jax_checkpoints import Scalar

        return Scalar(value)
    import tensorflow as tf

    return tf.Variable(value, dtype=dtype, trainable=False)


def progress_variables():
    """Where the run stands within the epoch, saved with the weights.

    The steps done and their loss and correct-prediction sums (so that the
    epoch's history row is the one of an uninterrupted run), and the
    target-accuracy stop (global step and accuracy of the check; step 0: not
    stopped).
    """
    return {
        "step": counter(0, "int64"),
        "loss_sum": counter(0.0, "float64"),
        "correct_sum": counter(0.0, "float64"),
        "stopped_at_step": counter(0, "int64"),
        "stopped_accuracy": counter(0.0, "float64"),
    }


@dataclasses.dataclass
class RunState:
    """The variables a checkpoint holds: model, optimizer, epoch and ``progress_variables()``.

    ``checkpoint`` saves them: a ``tf.train.Checkpoint``, or under Keras' JAX
    backend a ``kerascam.training.jax_checkpoints.KerasCheckpoint``.
    """

    model: object
    optimizer: object
    epoch: object
    progress: dict
    checkpoint: object

    @classmethod
    def of(cls, model, optimizer, epoch, progress):
        if backend.name() == "jax":
            from kerascam.training.jax_checkpoints import KerasCheckpoint

            return cls(model, optimizer, epoch, progress,
                       KerasCheckpoint(model, optimizer, {"epoch": epoch, **progress}))
        import tensorflow as tf

        return cls(model, optimizer, epoch, progress,
                   tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch, **progress))

    def mark_stopped(self, global_step, val_accuracy):
        """Records the target-accuracy stop, saved with the next checkpoint."""
        self.progress["stopped_at_step"].assign(global_step)
        self.progress["stopped_accuracy"].assign(val_accuracy)


def build_state(config, strategy, num_classes, steps):
    """Seeds the run, then builds model, optimizer and position variables in ``strategy.scope()``."""
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_model_for(config, num_classes, weights=config.weights)
        optimizer = make_optimizer(config, steps)
        # Create the optimizer's slots now so a restore fills them directly.
        optimizer.build(model.trainable_variables)
        epoch = counter(0, "int64")
        progress = progress_variables()
    return RunState.of(model, optimizer, epoch, progress)


def check_disk_space(run_dir, state):
    """Fails before the first step when ``run_dir``'s disk cannot hold the checkpoints and exports."""
    model, optimizer = state.model, state.optimizer
    # Three kept checkpoints and one being written (weights and optimizer
    # slots), model.keras, the SavedModel, and room for logs.
    copies = 4 * (1 + len(optimizer.variables) // max(1, len(model.trainable_variables))) + 2
    io.check_free_space(run_dir, copies * 4 * model.count_params() + 64 * 2**20, "checkpoints and exports")


def open_checkpoints(state, run_dir, chief):
    """The ``tf.train.CheckpointManager`` this task saves through (the newest three kept).

    Every worker takes part in saving (the variables are read collectively),
    but only the chief's copy lands in ``run_dir/checkpoints``; the others
    write to a scratch folder of their own. All of them resume from the
    chief's (``restore``). Under Keras' JAX backend a
    ``kerascam.training.jax_checkpoints.KerasCheckpointManager``.
    """
    shared_dir = os.path.join(run_dir, "checkpoints")
    save_dir = shared_dir if chief else tempfile.mkdtemp(prefix="kerascam-worker-ckpt-")
    if backend.name() == "jax":
        from kerascam.training.jax_checkpoints import KerasCheckpointManager

        return KerasCheckpointManager(state.checkpoint, save_dir, max_to_keep=3)
    import tensorflow as tf

    return tf.train.CheckpointManager(state.checkpoint, save_dir, max_to_keep=3)


@dataclasses.dataclass(frozen=True)
class Resumed:
    """Where a run picks up.

    Attributes:
        checkpoint: The path of the checkpoint restored, or None (a fresh start).
        epoch: Epochs done (0-based index of the epoch to run next).
        step: Steps done within that epoch (0: it starts at its beginning).
        stopped: The run stopped at its target accuracy, which still holds:
            no more training.
        stopped_accuracy: The accuracy of that stop's check.
    """

    checkpoint: str | None
    epoch: int
    step: int
    stopped: bool
    stopped_accuracy: float

    def where(self):
        """"epoch N" (N epochs done) or, mid-epoch, the words of the interruption line."""
        return f"epoch {self.epoch + 1} step {self.step}, mid-epoch" if self.step else f"epoch {self.epoch}"


def restore(state, directory, target):
    """Restores ``state`` from the newest checkpoint in ``directory``; a fresh start when there is none.

    Args:
        state: The run's ``RunState``.
        directory: The folder of the chief's checkpoints.
        target: The run's ``kerascam.training.target.TargetAccuracy``: a
            stop it recorded is kept only while the target holds (else the
            stop is cleared and the run trains on).

    Returns:
        A ``Resumed``.

    Raises:
        TrainingError: see ``kerascam.training.checkpoints.restore_latest``.
    """
    latest = restore_latest(state.checkpoint, directory)
    stopped_accuracy = float(state.progress["stopped_accuracy"].numpy())
    stopped = target.still_holds(int(state.progress["stopped_at_step"].numpy()), stopped_accuracy)
    if not stopped:
        state.progress["stopped_at_step"].assign(0)
    return Resumed(latest, int(state.epoch.numpy()), int(state.progress["step"].numpy()), stopped, stopped_accuracy)


class CheckpointSaver:
    """Saves a run's state numbered by global step, never the same number twice.

    A number already saved (the one resumed from, or a periodic save just
    before a stop) is never written again, so an existing checkpoint is never
    overwritten in place.

    Args:
        state: The run's ``RunState``.
        manager: Its ``tf.train.CheckpointManager`` (``open_checkpoints``).
        steps_per_epoch: Steps of one epoch.
        resumed: Where the run resumed (``restore``).
    """

    def __init__(self, state, manager, steps_per_epoch, resumed):
        self.state = state
        self.manager = manager
        self.steps = steps_per_epoch
        self.last_saved = resumed.epoch * steps_per_epoch + resumed.step if resumed.checkpoint else None

    def save(self, epoch, done, loss_sum, correct_sum):
        """Saves after step ``done`` (1-based) of ``epoch`` (0-based), with the epoch's sums so far.

        At the epoch's last step the checkpoint records the next epoch, at
        its step 0 with empty sums.
        """
        number = epoch * self.steps + done
        if number == self.last_saved:
            return
        ended = done >= self.steps
        progress = self.state.progress
        self.state.epoch.assign(epoch if not ended else epoch + 1)
        progress["step"].assign(done if not ended else 0)
        progress["loss_sum"].assign(loss_sum if not ended else 0.0)
        progress["correct_sum"].assign(correct_sum if not ended else 0.0)
        save_checkpoint(self.manager, number)
        self.last_saved = number
