"""The validation pass of a run: mean loss and accuracy over the validation split."""

import keras
import numpy as np

from kerascam import backend
from kerascam.training.steps import reduce_sum


def make_validation(model, strategy, training_data):
    """The run's validation pass: `Validation`, or under Keras' JAX backend `kerascam.training.jax_steps.Validation`."""
    if backend.name() == "jax":
        from kerascam.training.jax_steps import Validation as JaxValidation

        return JaxValidation(model, strategy, training_data)
    return Validation(model, strategy, training_data)


class Validation:
    """The validation pass: mean loss and accuracy of ``model`` over the validation split.

    Args:
        model: The classifier.
        strategy: The ``tf.distribute.Strategy`` it was built under.
        training_data: The run's ``TrainingData`` (the split, batch and crops).
    """

    def __init__(self, model, strategy, training_data):
        import tensorflow as tf

        self.strategy = strategy
        self.data = training_data

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

        self.eval_step = eval_step

    def __call__(self):
        """``(val_loss, val_accuracy)``."""
        from kerascam.data import pipeline

        totals = np.zeros(3)
        batches = pipeline.evaluation_batches(self.data.validation.examples, self.data.global_batch,
                                              crop_size=self.data.crop_size)
        for batch in self.strategy.experimental_distribute_dataset(batches):
            totals += [float(v) for v in self.eval_step(batch)]
        return totals[0] / totals[2], totals[1] / totals[2]
