"""Perturbation machinery shared by the scores that change pixels and watch the model.

Deletion and insertion (`kerascam.evaluation.scores.faithfulness`, Petsiuk
et al. 2018) and ROAD (`kerascam.evaluation.scores.road`, Rong et al. 2022)
both rank the pixels by the map, change a growing share of them and read the
class probability. What they share lives here:

* **The order** (`pixel_order`): highest map value first. Ties are broken
  at random, by a permutation drawn from a generator seeded by the image
  (its index in the split) and the draw, so an order is reproducible in any
  batch, shard or resumed run. Raster order (row by row), the earlier rule,
  is not neutral for a coarse map: a bilinearly upsampled 2x2 or 3x3 map is
  constant on whole corner blocks, and a ReLU'd map on its zero floor, so a
  step that cuts such a plateau would always take its top rows first.
* **Where ties matter** (`cut_plateaus`): a step's set of changed pixels
  depends on the tie-break only when its count cuts a plateau (the last
  pixel taken and the first one left have equal values). The scores average
  such steps over ``tie_draws`` draws of the tie-break when at least
  `TIE_MIN_SHARE` (1 %) of the image's pixels are up to it, and compute
  every other step once (with draw 0's random tie-break): the same mean as
  averaging whole curves over the draws, at a fraction of the cost.
* **The forward pass** (`PerturbedForward`): one compiled function per model
  that makes deletion and insertion images in the graph, or takes images
  made elsewhere (ROAD's imputations), and returns ``softmax(logits)[class]``.
  The graph is written once in ``keras.ops`` and compiled by the backend:
  `tf.function` with a fixed input signature under TensorFlow, `jax.jit`
  under JAX (with the model's variables as arguments, so that a copy with
  randomized weights is never served the weights baked into a trace).
"""

import weakref

import keras
import numpy as np

from kerascam.cams.logits import logits_model

BLUR_TRUNCATE = 4.0  # kernel radius in sigmas, as scipy.ndimage.gaussian_filter
TIE_SEED = 0  # base of every tie-break's seed
DEFAULT_BATCH_SIZE = 64  # perturbed images per forward pass
# Draws of the tie-break averaged where a step cuts a plateau (the spread of
# those steps over tie-breaks shrinks by 1/sqrt(3)).
TIE_DRAWS = 3
# A cut is averaged over the draws only when at least this share of the
# image's pixels is up to the tie-break (23 px at 48x48, a sixth of a deletion
# step); smaller cuts keep draw 0's random tie-break. What that saves against
# averaging every cut: benchmarks/README.md, score_cost.py.
TIE_MIN_SHARE = 0.01


def pixel_order(maps, seeds=None, draw=0):
    """The order in which pixels are changed: highest map value first, ties at random.

    Ties are broken by a random permutation of the pixels drawn from
    ``numpy.random.default_rng([TIE_SEED, seed, draw])``: the same image
    (seed) and draw always give the same order, and different draws give
    independent tie-breaks of the same ranking.

    Args:
        maps: float array (n, H, W) of finite values.
        seeds: (n,) non-negative integers, one per map (e.g. the image's index
            in the split). Default 0..n-1.
        draw: which draw of the tie-break (a non-negative integer). Default 0.

    Returns:
        int64 array (n, H * W): flat pixel indices (``row * W + column``),
        the first to change first.
    """
    maps = np.asarray(maps)
    flat = maps.reshape(len(maps), -1)
    seeds = np.arange(len(maps)) if seeds is None else np.asarray(seeds, dtype=np.int64).reshape(-1)
    if seeds.shape != (len(maps),) or (seeds < 0).any():
        raise ValueError(f"seeds must be {len(maps)} non-negative integers. Received: {seeds.tolist()}")
    order = np.empty(flat.shape, np.int64)
    for i, (values, seed) in enumerate(zip(flat, seeds)):
        tie_break = np.random.default_rng([TIE_SEED, int(seed), int(draw)]).permutation(flat.shape[1])
        order[i] = np.lexsort((tie_break, -values))  # the last key is the primary one
    return order


def pixel_ranks(maps, seeds=None, draw=0, order=None):
    """Each pixel's position in `pixel_order`: int32 (n, H, W), 0 for the first to change.

    Args:
        maps, seeds, draw: as `pixel_order`.
        order: the `pixel_order` already computed, to skip computing it again.
    """
    maps = np.asarray(maps)
    order = pixel_order(maps, seeds, draw) if order is None else order
    ranks = np.empty_like(order)
    positions = np.broadcast_to(np.arange(order.shape[1]), order.shape)
    np.put_along_axis(ranks, order, positions, axis=1)
    return ranks.reshape(maps.shape).astype(np.int32)


def cut_plateaus(maps, order, counts, min_pixels=1):
    """Which counts cut a plateau of tied map values, so that the tie-break decides what they change.

    The first ``count`` pixels of ``order`` are the same set for every
    tie-break unless the last of them and the next one have equal values.
    Then ``min(taken, left)`` pixels of that plateau (those taken up to
    ``count``, those left after it) are up to the tie-break: two draws can
    differ in that many pixels each way.

    Args:
        maps: (n, H, W) maps.
        order: (n, H * W) their `pixel_order`.
        counts: int array (m,) of pixel counts in [0, H * W] (the first
            ``count`` pixels of the order are changed).
        min_pixels: a cut counts when at least this many pixels are up to
            the tie-break. Default 1: every cut.

    Returns:
        bool array (n, m).
    """
    flat = np.asarray(maps).reshape(len(order), -1)
    ranked = -np.take_along_axis(flat, order, axis=1)  # non-decreasing along each row
    counts = np.asarray(counts, dtype=np.int64)
    inside = (counts > 0) & (counts < flat.shape[1])
    cut = np.zeros((len(order), len(counts)), bool)
    for i, row in enumerate(ranked):
        for j in np.flatnonzero(inside):
            count = counts[j]
            if row[count - 1] != row[count]:
                continue
            start = np.searchsorted(row, row[count], side="left")
            end = np.searchsorted(row, row[count], side="right")
            cut[i, j] = min(count - start, end - count) >= min_pixels
    return cut


def min_tie_pixels(num_pixels):
    """The smallest plateau cut worth averaging over draws: `TIE_MIN_SHARE` of the image's pixels."""
    return max(1, int(np.ceil(TIE_MIN_SHARE * num_pixels)))


def gaussian_kernel(sigma, truncate=BLUR_TRUNCATE):
    """The 1-D Gaussian of `scipy.ndimage.gaussian_filter1d`: radius ``int(truncate * sigma + 0.5)``.

    Args:
        sigma: standard deviation in pixels; 0 gives ``[1.0]`` (no blur).
        truncate: radius in units of sigma. Default 4, scipy's.

    Returns:
        float32 array (2 * radius + 1,) that sums to 1.
    """
    if not sigma >= 0:
        raise ValueError(f"blur_sigma must be >= 0. Received: blur_sigma={sigma}")
    radius = int(truncate * sigma + 0.5)
    if radius == 0:
        return np.ones(1, np.float32)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (x / sigma) ** 2)
    return (weights / weights.sum()).astype(np.float32)


def gaussian_blur(images, kernel):
    """Separable Gaussian blur of (n, H, W, C) images with mirrored edges, in graph.

    Mirrored edges repeat the edge pixel (``d c b a | a b c d``), scipy's
    ``mode="reflect"``, so a constant image stays constant.

    Args:
        images: float32 tensor (n, H, W, C).
        kernel: float32 tensor (2r + 1,), e.g. `gaussian_kernel`; r must not
            exceed H or W.

    Returns:
        float32 tensor like `images`.
    """
    if keras.backend.backend() == "tensorflow":
        # The kernel's length is a graph value there (one trace serves every
        # blur), which keras.ops.pad cannot take as a padding.
        return _gaussian_blur_tf(images, kernel)
    radius = (kernel.shape[0] - 1) // 2  # static: jax.jit traces once per kernel length
    height, width, channels = images.shape[1:]
    # Channels go into the batch so that one single-channel filter serves all.
    planes = keras.ops.reshape(keras.ops.transpose(images, (0, 3, 1, 2)), (-1, height, width, 1))
    planes = keras.ops.pad(planes, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="symmetric")
    planes = keras.ops.conv(planes, keras.ops.reshape(kernel, (-1, 1, 1, 1)), padding="valid")
    planes = keras.ops.conv(planes, keras.ops.reshape(kernel, (1, -1, 1, 1)), padding="valid")
    blurred = keras.ops.reshape(planes, (-1, channels, height, width))
    return keras.ops.transpose(blurred, (0, 2, 3, 1))


def _gaussian_blur_tf(images, kernel):
    import tensorflow as tf

    radius = (tf.size(kernel) - 1) // 2
    shape = tf.shape(images)
    planes = tf.reshape(tf.transpose(images, (0, 3, 1, 2)), (-1, shape[1], shape[2], 1))
    planes = tf.pad(planes, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    planes = tf.nn.conv2d(planes, tf.reshape(kernel, (-1, 1, 1, 1)), strides=1, padding="VALID")
    planes = tf.nn.conv2d(planes, tf.reshape(kernel, (1, -1, 1, 1)), strides=1, padding="VALID")
    blurred = tf.reshape(planes, (shape[0], shape[3], shape[1], shape[2]))
    return tf.transpose(blurred, (0, 2, 3, 1))


class PerturbedForward:
    """One compiled function per model: perturbed images in, class probabilities out.

    Build it with `perturbed_forward`, which caches it per model. The function
    takes a few images with their pixel ranks and a list of jobs, one
    perturbed image each (which image, how many pixels changed, deletion or
    insertion), makes the perturbed images in the graph and returns each
    job's ``softmax(logits)[class]``. Every input has a free leading
    dimension, so one trace serves every batch, step count, baseline and blur.
    """

    def __init__(self, model):
        """Args: model: a Keras classifier with one input and one output (logits or softmax)."""
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(
                "Faithfulness scores models with one input and one output. "
                f"Received: {len(model.inputs)} inputs and {len(model.outputs)} outputs"
            )
        logits = logits_model(model)
        # A new model over the same layers and weights: the cache value must
        # not hold the model it is keyed by, or the model would never be freed.
        self.network = keras.Model(logits.inputs[0], logits.outputs[0], name=f"{model.name}_faithfulness")
        self.input_dtype = model.inputs[0].dtype
        self.image_shape = tuple(model.inputs[0].shape[1:])
        self._traces = 0
        if keras.backend.backend() == "tensorflow":
            self._compile_tf()
        else:
            self._compile_jax()

    def _compile_tf(self):
        import tensorflow as tf

        height, width, channels = self.image_shape
        graph = tf.function(
            self._counted(self._graph),
            input_signature=[
                tf.TensorSpec((None, height, width, channels), tf.float32),  # images
                tf.TensorSpec((None, height, width), tf.int32),  # pixel ranks
                tf.TensorSpec((None,), tf.int64),  # classes
                tf.TensorSpec((None,), tf.int32),  # job: which image
                tf.TensorSpec((None,), tf.int32),  # job: pixels changed
                tf.TensorSpec((None,), tf.bool),  # job: insertion (else deletion)
                tf.TensorSpec((None,), tf.float32),  # deletion baseline, per channel
                tf.TensorSpec((None,), tf.float32),  # blur kernel
            ],
        )
        # Images made elsewhere (ROAD's imputations) go through this one.
        probabilities = tf.function(
            self._counted(self._class_probabilities),
            input_signature=[
                tf.TensorSpec((None, height, width, channels), tf.float32),
                tf.TensorSpec((None,), tf.int64),
            ],
        )
        self._compiled = lambda *arrays: graph(*arrays).numpy()
        self._compiled_probabilities = lambda *arrays: probabilities(*arrays).numpy()

    def _compile_jax(self):
        import jax

        network = self.network

        def stateless(function):
            # The network's weights enter as arguments, read by its stateless
            # call, instead of constants baked into the trace: a model whose
            # weights were changed (randomized) is never served stale ones.
            def with_variables(variables, *arrays):
                def forward(images):
                    outputs, _ = network.stateless_call(*variables, images, training=False)
                    return outputs

                return function(*arrays, forward=forward)

            return jax.jit(self._counted(with_variables))

        graph, probabilities = stateless(self._graph), stateless(self._class_probabilities)

        def variables():
            return ([v.value for v in network.trainable_variables],
                    [v.value for v in network.non_trainable_variables])

        def run_graph(images, ranks, classes, job_image, job_changed, job_insert, baseline, kernel):
            # jax.jit traces once per shape: the images and the jobs are
            # padded to powers of two, so that a run's varying batch sizes
            # compile a few programs rather than one per size.
            images, ranks, classes = (_pad_to_bucket(a) for a in (images, ranks, classes))
            jobs = len(job_image)
            job_image, job_changed, job_insert = (_pad_to_bucket(a) for a in (job_image, job_changed, job_insert))
            out = graph(variables(), images, ranks, classes, job_image, job_changed, job_insert, baseline, kernel)
            return np.asarray(out)[:jobs]

        def run_probabilities(images, classes):
            count = len(images)
            return np.asarray(probabilities(variables(), _pad_to_bucket(images), _pad_to_bucket(classes)))[:count]

        self._compiled = run_graph
        self._compiled_probabilities = run_probabilities

    def _counted(self, function):
        def traced(*args, **kwargs):
            self._traces += 1  # runs only while tf.function or jax.jit traces
            return function(*args, **kwargs)

        return traced

    @property
    def tracing_count(self):
        """How many times the functions have been traced (for tests)."""
        return self._traces

    def _class_probabilities(self, images, classes, forward=None):
        images = keras.ops.cast(images, self.input_dtype)
        logits = self.network(images, training=False) if forward is None else forward(images)
        probabilities = keras.ops.softmax(keras.ops.cast(logits, "float32"), axis=-1)
        return keras.ops.take_along_axis(probabilities, keras.ops.expand_dims(classes, 1), axis=1)[:, 0]

    def _graph(self, images, ranks, classes, job_image, job_changed, job_insert, baseline, kernel, forward=None):
        ops = keras.ops
        image = ops.take(images, job_image, axis=0)
        changed = ops.expand_dims(ops.take(ranks, job_image, axis=0) < job_changed[:, None, None], -1)
        deleted = ops.where(changed, baseline, image)
        inserted = ops.where(changed, image, ops.take(gaussian_blur(images, kernel), job_image, axis=0))
        perturbed = ops.where(job_insert[:, None, None, None], inserted, deleted)
        return self._class_probabilities(perturbed, ops.take(classes, job_image, axis=0), forward)

    def __call__(self, images, ranks, classes, job_image, job_changed, job_insert, baseline, kernel):
        """Class probabilities, a NumPy array (b,), of the b jobs; arguments as `_graph`'s signature."""
        arrays = (images, ranks, classes, job_image, job_changed, job_insert, baseline, kernel)
        return self._compiled(*(np.asarray(a, dtype) for a, dtype in zip(arrays, _ARGUMENT_DTYPES)))

    def probabilities(self, images, classes):
        """``softmax(logits)[class]``, a NumPy array (b,), of b images (b, H, W, C) as they are."""
        return self._compiled_probabilities(np.asarray(images, np.float32), np.asarray(classes, np.int64))


# The dtypes of `PerturbedForward`'s arguments, in order (its TensorFlow signature's).
_ARGUMENT_DTYPES = (np.float32, np.int32, np.int64, np.int32, np.int32, bool, np.float32, np.float32)


def _pad_to_bucket(array):
    """``array`` with zeros appended along its first axis up to the next power of two."""
    size = 1 << max(0, len(array) - 1).bit_length()
    if size == len(array):
        return array
    return np.concatenate([array, np.zeros((size - len(array), *array.shape[1:]), array.dtype)])


_FORWARDS = weakref.WeakKeyDictionary()  # model -> PerturbedForward


def perturbed_forward(model):
    """The cached `PerturbedForward` of `model`, built on the first request."""
    if model not in _FORWARDS:
        _FORWARDS[model] = PerturbedForward(model)
    return _FORWARDS[model]


def check_perturbation_inputs(images, maps, classes):
    """``(images, maps, classes)`` as arrays that agree, for a perturbation
    score; ValueError naming the shapes otherwise, or for non-finite maps."""
    images = np.asarray(images)
    maps = np.asarray(maps)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if images.ndim != 4 or maps.shape != images.shape[:3] or classes.shape != (len(images),):
        raise ValueError(
            "images (n, H, W, C), maps (n, H, W) and classes (n,) must agree. Received: "
            f"images.shape={images.shape}, maps.shape={maps.shape}, classes.shape={classes.shape}"
        )
    if not np.isfinite(maps).all():
        raise ValueError("maps must be finite; leave out maps whose status is not 'ok'")
    return images, maps, classes
