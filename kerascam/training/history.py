"""A run's per-epoch records: ``history.csv`` and TensorBoard (metrics, CAM overlays), kept consistent on resume."""

import csv
import io as _io
import os
import time

import keras
import numpy as np

from kerascam import backend, io
from kerascam.training.checkpoints import no_space_is_one_line
from kerascam.training.record import float32_copy


class History:
    """Per-epoch metrics in ``history.csv`` and TensorBoard, kept consistent on resume.

    Args:
        run_dir: The run's folder (``WORKDIR/MODEL``).
        start_epoch: The epoch the run resumes at (0-based): rows of that
            epoch and later, past the checkpoint, are dropped.

    Under Keras' JAX backend ``history.csv`` alone: TensorBoard's writer is
    TensorFlow's, which need not be installed there (``writer`` is None).
    """

    FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")

    def __init__(self, run_dir, start_epoch):
        self.path = os.path.join(run_dir, "history.csv")
        self.rows = []
        if os.path.exists(self.path):
            with open(self.path, newline="", encoding="utf-8") as f:
                # Rows past the checkpoint belong to epochs about to be redone.
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < start_epoch]
        self.writer = None
        if backend.name() != "jax":
            import tensorflow as tf

            self.writer = tf.summary.create_file_writer(os.path.join(run_dir, "logs"))

    def add(self, row):
        self.rows.append(row)
        buffer = _io.StringIO()
        writer = csv.DictWriter(buffer, self.FIELDS)
        writer.writeheader()
        writer.writerows(self.rows)
        io.write_text(self.path, buffer.getvalue())
        if self.writer is None:
            return
        import tensorflow as tf

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


class CamSummaries:
    """TensorBoard CAM overlays of the first validation images after every epoch.

    The same images every epoch. Under mixed precision the overlays come
    from the float32 twin, as exported, never from float16 gradients; the
    twin is built once and refreshed each epoch, so its CAM graph is traced
    once.

    Args:
        write: ``kerascam.summaries.write_cam_summaries``.
        config: The run's ``TrainConfig`` (``cam_summaries`` images).
        training_data: The run's ``TrainingData``.
    """

    def __init__(self, write, config, training_data):
        self.write_summaries = write
        self.config = config
        self.num_classes = training_data.train.num_classes
        self.class_names = list(training_data.train.class_names)
        from kerascam.data import pipeline

        first = next(iter(pipeline.evaluation_batches(training_data.validation.examples, config.cam_summaries,
                                                      crop_size=training_data.crop_size)))
        self.images, self.labels = first["image"].numpy(), first["label"].numpy()
        if self.images.dtype != np.uint8:  # resized crops come as floats in 0-255
            self.images = np.clip(np.rint(self.images), 0, 255).astype(np.uint8)
        self.explained = None  # the model the overlays explain (float32 under mixed precision)

    def write(self, writer, model, step):
        """Writes the overlays of ``model`` at TensorBoard step ``step`` (epochs done)."""
        if not self.config.mixed_precision:
            self.explained = model
        elif self.explained is None:
            self.explained = float32_copy(model, self.config, self.num_classes)
        else:
            self.explained.set_weights(model.get_weights())
        self.write_summaries(writer, self.explained, self.images, step, class_names=self.class_names,
                             labels=self.labels)
