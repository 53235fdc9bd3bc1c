"""tf.data input pipelines over ``{"image", "label", "mask", "evidence"}`` examples.

Per-example steps are pure functions of an example dict, so each one can be
tested eagerly and inside ``Dataset.map``. Augmentation uses stateless random
ops seeded by (run seed, epoch, example index): an epoch's batches are the
same whether the run went straight through or resumed from a checkpoint.

Training batches carry no ``evidence`` (the shapes dataset's sticker mask):
only its scores read it, so it is dropped before shuffling. Evaluation batches
keep every feature but ``file_name``, each mask cropped like its image.
"""

import tensorflow as tf

from kerascam.data.preprocessing import random_flip, resize_center_crop, train_crop_and_flip

AUTOTUNE = tf.data.AUTOTUNE
# Decoded ImageNet images average ~110 KB: 10,000 of them is ~1 GB of buffer.
MAX_SHUFFLE_BUFFER = 10_000

__all__ = ["evaluation_batches", "random_flip", "training_batches"]


def _model_features(example):
    # Strings (file names) cannot be distributed to replicas; models need none.
    return {k: v for k, v in example.items() if k != "file_name"}


def _training_features(example):
    # The evidence mask is only scored, never trained on: not shuffled or
    # flipped for nothing, and not copied to every replica at every step.
    return {k: v for k, v in _model_features(example).items() if k != "evidence"}


def training_batches(
    examples, batch_size, *, epoch, seed, augment=True, crop_size=None, num_examples=None, skip_batches=0
):
    """One epoch of shuffled, augmented, batched training examples.

    Args:
        examples: Unbatched dataset of example dicts.
        batch_size: Global batch size; the last partial batch is dropped so
            every step sees the same number of images on every replica.
        epoch: Epoch index; with ``seed`` it fixes this epoch's order and
            augmentation, so a resumed run sees the same batches.
        seed: Run seed.
        augment: Random horizontal flips (and crops, with ``crop_size``).
        crop_size: For images of their own sizes (ImageNet, folders):
            random-resized-crop to this size (centre crop without ``augment``).
        num_examples: Size of ``examples`` when its cardinality is unknown.
        skip_batches: Batches of this epoch already trained on (a run resumed
            mid-epoch): they are left out before the crop and flip, so the
            rest of the epoch is the same batches an uninterrupted run sees.
    """
    n = int(examples.cardinality())
    n = n if n > 0 else (num_examples or MAX_SHUFFLE_BUFFER)
    epoch_seed = seed * 100_003 + epoch
    # Order: shuffle (order depends only on seed and epoch), augment with
    # per-example stateless seeds, batch, then prefetch so the next batch is
    # built while the model trains.
    ds = examples.map(_training_features).shuffle(min(n, MAX_SHUFFLE_BUFFER), seed=epoch_seed, reshuffle_each_iteration=False)
    ds = ds.enumerate()
    if skip_batches:
        # After the shuffle and the numbering (order and per-example seeds
        # stay those of the whole epoch), before the crop and flip: skipped
        # examples are never augmented, batched or sent to a device. Sources
        # that decode in ``examples`` (ImageNet, folders) still decode them
        # to fill the shuffle buffer.
        ds = ds.skip(skip_batches * batch_size)

    def prepare(index, example):
        example_seed = tf.stack([tf.cast(epoch_seed, tf.int64), index])
        if crop_size and augment:
            return train_crop_and_flip(example, crop_size, example_seed)
        if crop_size:
            return resize_center_crop(example, crop_size)
        return random_flip(example, example_seed) if augment else example

    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def evaluation_batches(examples, batch_size, *, crop_size=None):
    """Examples in their stored order, batched, the last partial batch kept.

    Every feature but ``file_name`` is kept, ``mask`` and ``evidence``
    included where the dataset has them.

    ``crop_size``: resize the shorter side and centre-crop (ImageNet style);
    masks get the image's window, resized nearest-neighbour.
    """
    ds = examples.map(_model_features)
    if crop_size:
        ds = ds.map(lambda ex: resize_center_crop(ex, crop_size), num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE)
