"""tf.data input pipelines over ``{"image", "label", "mask"}`` examples.

Per-example steps are pure functions of an example dict, so each one can be
tested eagerly and inside ``Dataset.map``. Augmentation uses stateless random
ops seeded by (run seed, epoch, example index): an epoch's batches are the
same whether the run went straight through or resumed from a checkpoint.
"""

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def random_flip(example, seed):
    """Flips image (and mask, if any) left-right with probability 1/2."""
    flip = tf.random.stateless_uniform([], seed=seed) < 0.5
    out = dict(example)
    out["image"] = tf.cond(flip, lambda: tf.reverse(example["image"], [1]), lambda: example["image"])
    if "mask" in example:
        out["mask"] = tf.cond(flip, lambda: tf.reverse(example["mask"], [1]), lambda: example["mask"])
    return out


def training_batches(examples, batch_size, *, epoch, seed, augment=True):
    """One epoch of shuffled, augmented, batched training examples.

    Args:
        examples: Unbatched dataset of example dicts.
        batch_size: Global batch size; the last partial batch is dropped so
            every step sees the same number of images on every replica.
        epoch: Epoch index; with ``seed`` it fixes this epoch's order and flips.
        seed: Run seed.
        augment: Random horizontal flips.
    """
    n = int(examples.cardinality())
    # Order: shuffle the full index set (order depends only on seed and
    # epoch), augment with per-example stateless seeds, then batch and
    # prefetch so the next batch is built while the model trains.
    ds = examples.shuffle(max(n, 1), seed=seed * 100_003 + epoch, reshuffle_each_iteration=False)
    if augment:
        ds = ds.enumerate().map(
            lambda i, ex: random_flip(ex, tf.stack([tf.cast(seed * 100_003 + epoch, tf.int64), i])),
            num_parallel_calls=AUTOTUNE,
        )
    return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def evaluation_batches(examples, batch_size):
    """Examples in their stored order, batched, the last partial batch kept."""
    return examples.batch(batch_size).prefetch(AUTOTUNE)
