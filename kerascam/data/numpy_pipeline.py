"""NumPy input pipelines over the embedded datasets' arrays: training without tf.data.

The embedded datasets (``shapes``, ``markers``) are NumPy arrays drawn from a
seed (`kerascam.data.synthetic`, `kerascam.data.markers`), small enough to
hold in memory. Under Keras' JAX backend, where TensorFlow may be absent,
these iterators feed training in place of `kerascam.data.pipeline`: the same
batches' contents (``image`` uint8, ``label`` int64), the same augmentation
(a random horizontal flip, probability 1/2) and the same guarantees: an
epoch's order and flips are a function of (run seed, epoch) only, so a run
resumed mid-epoch sees the batches an uninterrupted run sees. The numbers
drawn differ from tf.data's (another generator), so the two backends train
on other orders of the same examples.
"""

import numpy as np

# The features a training step reads; masks and evidence are only scored.
TRAINING_FEATURES = ("image", "label")


def epoch_plan(num_examples, *, epoch, seed, augment=True):
    """The order of an epoch and which of its examples are flipped.

    One generator seeded by (``seed``, ``epoch``) draws both, so any batch of
    the epoch can be built without drawing the batches before it.

    Args:
        num_examples: Examples in the split.
        epoch: Epoch index (0-based).
        seed: Run seed.
        augment: Draw flips; without it none is flipped.

    Returns:
        ``(order, flips)``: a permutation of ``range(num_examples)`` and a
        boolean array, ``flips[i]`` for the example at position ``i`` of the
        order.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(num_examples)
    flips = rng.random(num_examples) < 0.5
    return order, flips & augment


def training_batches(arrays, batch_size, *, epoch, seed, augment=True, skip_batches=0, num_batches=None):
    """One epoch of shuffled, flipped, batched training examples, as dicts of NumPy arrays.

    Args:
        arrays: The split's arrays (``image`` (N, H, W, 3) uint8, ``label`` (N,)).
        batch_size: Global batch size; the last partial batch is dropped.
        epoch: Epoch index; with ``seed`` it fixes the order and the flips.
        seed: Run seed.
        augment: Random horizontal flips.
        skip_batches: Batches of the epoch already trained on (a run resumed
            mid-epoch): the rest are those of the whole epoch from there.
        num_batches: Batches to yield at most (default: to the epoch's end).

    Yields:
        ``{"image": (batch, H, W, 3) uint8, "label": (batch,) int64}``.
    """
    num_examples = len(arrays["label"])
    order, flips = epoch_plan(num_examples, epoch=epoch, seed=seed, augment=augment)
    end = num_examples // batch_size
    if num_batches is not None:
        end = min(end, skip_batches + num_batches)
    for b in range(skip_batches, end):
        window = slice(b * batch_size, (b + 1) * batch_size)
        indices = order[window]
        images = arrays["image"][indices]
        # Flip along the width axis (images are (batch, H, W, 3)).
        images = np.where(flips[window][:, None, None, None], images[:, :, ::-1], images)
        yield {"image": images, "label": arrays["label"][indices].astype(np.int64)}


def evaluation_batches(arrays, batch_size):
    """The examples in their stored order, batched, the last partial batch kept (``image`` and ``label``)."""
    num_examples = len(arrays["label"])
    for start in range(0, num_examples, batch_size):
        window = slice(start, start + batch_size)
        yield {"image": arrays["image"][window], "label": arrays["label"][window].astype(np.int64)}
