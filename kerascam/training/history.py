"""A run's per-epoch metrics: ``history.csv`` and TensorBoard, kept consistent on resume."""

import csv
import io as _io
import os
import time

import keras
import tensorflow as tf

from kerascam import io
from kerascam.training.checkpoints import no_space_is_one_line


class History:
    """Per-epoch metrics in ``history.csv`` and TensorBoard, kept consistent on resume.

    Args:
        run_dir: The run's folder (``WORKDIR/MODEL``).
        start_epoch: The epoch the run resumes at (0-based): rows of that
            epoch and later, past the checkpoint, are dropped.
    """

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

    def add_epoch(self, epoch, loss, accuracy, val_loss, val_acc, optimizer, epoch_start):
        """Adds the row of ``epoch`` (0-based); a full disk is a one-line ``TrainingError``.

        ``optimizer``'s current learning rate is recorded, and the seconds
        since ``epoch_start`` (a ``time.time()``).
        """
        with no_space_is_one_line(self.path):
            self.add(
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
