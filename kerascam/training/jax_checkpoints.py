"""Checkpoints of a run under Keras' JAX backend: Keras weights files, no TensorFlow.

A checkpoint numbered N (the global step it was saved after) is three files
in the run's ``checkpoints/`` folder:

- ``ckpt-N.weights.h5``: the model's weights (``model.save_weights``; any
  model of the same architecture loads it with ``load_weights``);
- ``ckpt-N.optimizer.npz``: the optimizer's variables (its step count, the
  moments or momenta), in the order of ``optimizer.variables``;
- ``ckpt-N.json``: where the run stands (epoch, step in the epoch, the
  epoch's loss and correct-prediction sums, the target-accuracy stop) and
  the variables' paths, checked on restore.

Each file is written atomically (`kerascam.io`), the JSON last: a checkpoint
exists once its JSON does, so a kill or a full disk mid-save leaves the
previous checkpoints as they were. The newest three are kept, as
``tf.train.CheckpointManager`` keeps them on the TensorFlow path. The input
order needs no state of its own: an epoch's batches are a function of the run
seed and the epoch (`kerascam.data.numpy_pipeline`).
"""

import glob
import os
import re

import numpy as np

from kerascam import io
from kerascam.training.errors import TrainingError, unrestorable_checkpoint

FORMAT_VERSION = 1
_NUMBERED = re.compile(r"ckpt-(\d+)\.json$")


class Scalar:
    """A number a checkpoint saves (epoch, step, sums), read and set as a ``tf.Variable`` is.

    ``assign(value)`` sets it, ``numpy()`` reads it: the two calls the loop
    makes, the same on both backends.
    """

    def __init__(self, value):
        self.value = value

    def assign(self, value):
        self.value = value.item() if hasattr(value, "item") else value

    def numpy(self):
        return np.asarray(self.value)


class KerasCheckpoint:
    """Writes and reads a run's model, optimizer and ``Scalar``\\ s as one numbered checkpoint.

    Args:
        model: The classifier.
        optimizer: Its optimizer (built: its variables exist).
        scalars: ``{name: Scalar}``, the run's position (``epoch``, ``step``, ...).
    """

    def __init__(self, model, optimizer, scalars):
        self.model, self.optimizer, self.scalars = model, optimizer, scalars

    def write(self, prefix):
        """Writes the three files of ``prefix`` (``.../ckpt-N``), the JSON last."""
        with io.atomic_path(prefix + ".weights.h5", suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp)
        with io.atomic_file(prefix + ".optimizer.npz", "wb") as f:
            np.savez(f, *[np.asarray(v.numpy()) for v in self.optimizer.variables])
        io.write_json(prefix + ".json", {
            "format": FORMAT_VERSION,
            "scalars": {name: scalar.numpy().item() for name, scalar in self.scalars.items()},
            "optimizer_variables": _variable_names(self.optimizer),
        })

    def read(self, prefix):
        """Restores everything from ``prefix``; raises ``ValueError`` naming what does not match."""
        state = io.read_json(prefix + ".json")
        paths = _variable_names(self.optimizer)
        if state.get("format") != FORMAT_VERSION or state.get("optimizer_variables") != paths:
            raise ValueError("its optimizer variables are not this run's")
        self.model.load_weights(prefix + ".weights.h5")
        with np.load(prefix + ".optimizer.npz") as saved:
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        if len(values) != len(paths):
            raise ValueError(f"it holds {len(values)} optimizer variables, this run has {len(paths)}")
        for variable, value in zip(self.optimizer.variables, values):
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"{variable.path} has shape {value.shape}, expected {tuple(variable.shape)}")
            variable.assign(value)
        for name, scalar in self.scalars.items():
            scalar.assign(state["scalars"][name])


def _variable_names(optimizer):
    """The optimizer's variables by path without the optimizer's own name (``adam_1/...`` in a second run of a process)."""
    return [v.path.split("/", 1)[-1] for v in optimizer.variables]


class KerasCheckpointManager:
    """Numbered ``KerasCheckpoint`` saves in ``directory``, the newest ``max_to_keep`` kept.

    What `kerascam.training.state.CheckpointSaver` and
    `kerascam.training.checkpoints.save_checkpoint` ask of
    ``tf.train.CheckpointManager``: ``directory``, ``checkpoints`` (the
    prefixes saved, oldest first) and ``save(checkpoint_number=N)``.
    """

    def __init__(self, checkpoint, directory, max_to_keep=3):
        self.checkpoint, self.directory, self.max_to_keep = checkpoint, directory, max_to_keep

    @property
    def checkpoints(self):
        return [prefix for _, prefix in numbered_checkpoints(self.directory)]

    def save(self, checkpoint_number):
        os.makedirs(self.directory, exist_ok=True)
        prefix = os.path.join(self.directory, f"ckpt-{checkpoint_number}")
        self.checkpoint.write(prefix)
        for old in self.checkpoints[:-self.max_to_keep]:
            # The JSON first: a kill mid-delete leaves no checkpoint missing a file.
            for suffix in (".json", ".weights.h5", ".optimizer.npz"):
                if os.path.exists(old + suffix):
                    os.remove(old + suffix)
        return prefix


def numbered_checkpoints(directory):
    """``[(N, prefix)]`` of the checkpoints whose JSON exists in ``directory``, by number."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(directory), "ckpt-*.json")):
        match = _NUMBERED.search(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path[: -len(".json")]))
    return sorted(found)


def restore_latest(checkpoint, directory):
    """Restores ``checkpoint`` (a ``KerasCheckpoint``) from the newest checkpoint in ``directory``.

    Returns:
        The restored checkpoint's prefix, or None when there is none (a fresh start).

    Raises:
        TrainingError: the newest checkpoint misses a file, or cannot be
            restored (damaged, or of another run), or the folder holds the
            TensorFlow path's checkpoints; never taken for a fresh start.
    """
    found = numbered_checkpoints(directory)
    if not found:
        if os.path.exists(os.path.join(directory, "checkpoint")):  # tf.train.CheckpointManager's state file
            raise TrainingError(
                f"{directory} holds TensorFlow checkpoints; resume that run with KERAS_BACKEND=tensorflow, "
                "or use another --workdir"
            )
        return None
    latest = found[-1][1]
    missing = [latest + s for s in (".weights.h5", ".optimizer.npz") if not os.path.exists(latest + s)]
    if missing:
        raise TrainingError(
            f"{latest}.json names a checkpoint whose file {missing[0]} is missing; restore it, or remove "
            "the checkpoints folder to start over"
        )
    try:
        checkpoint.read(latest)
    except Exception as e:  # noqa: BLE001  (a damaged file raises many kinds of errors)
        raise unrestorable_checkpoint(latest, e) from e
    return latest
