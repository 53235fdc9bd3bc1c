"""ImageNet-style crops for ``{"image", "label", "mask", "evidence", "boxes"}`` examples.

Pure per-example functions, usable eagerly and inside ``Dataset.map``:

* training: :func:`random_resized_crop` then :func:`random_flip` (or both at
  once with :func:`train_crop_and_flip`), the "Inception" crop of Szegedy et
  al., "Going deeper with convolutions" (CVPR 2015);
* evaluation: :func:`resize_center_crop`, the shorter side resized to
  ``size / crop_fraction`` then a central ``size`` x ``size`` crop (the 256 ->
  224 protocol of Krizhevsky et al. and He et al.).

Every function moves the masks (``mask``, ``evidence``) and ``boxes`` exactly
like ``image``: the same crop window, the same flip, the same output size
(nearest-neighbour for masks, so they stay 0/1). Other features (``label``,
``file_name``, ...) pass through untouched.

Features in and out:

* ``image``: uint8 ``(H, W, 3)`` in, **uint8** ``(size, size, 3)`` out (the
  models take raw 0-255 pixels; resizing is done in float32, then rounded and
  clipped back to uint8).
* ``mask``: uint8 ``(H, W)``, 1 on class evidence.
* ``evidence``: uint8 ``(H, W)``, 1 on the part of an object that decides its
  class (the shapes dataset's sticker).
* ``boxes``: float32 ``(K, 4)`` ``[xmin, ymin, xmax, ymax]`` in pixel-edge
  coordinates of the current image (see :mod:`kerascam.data.boxes`). Boxes
  are clipped to the output; a box cropped away entirely keeps its row with
  zero area, so K never changes.

Random functions are stateless: ``seed`` is a shape ``[2]`` integer tensor
and fixes the result, eagerly and in a graph alike.
"""

import tensorflow as tf

# Features of shape (H, W) that follow the image's geometry.
_MASKS = ("mask", "evidence")


def _output_size(size):
    if isinstance(size, int):
        size = (size, size)
    height, width = (int(s) for s in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive. Received: size={size}")
    return height, width


def _crop(example, top, left, height, width):
    """The window ``[top, top+height) x [left, left+width)`` of every spatial
    feature; boxes are shifted and clipped to the window."""
    out = dict(example)
    for key in ("image", *_MASKS):
        if key in example:
            out[key] = example[key][top : top + height, left : left + width]
    if "boxes" in example:
        offset = tf.cast(tf.stack([left, top, left, top]), tf.float32)
        limit = tf.cast(tf.stack([width, height, width, height]), tf.float32)
        out["boxes"] = tf.clip_by_value(tf.cast(example["boxes"], tf.float32) - offset, 0.0, limit)
    return out


def _resize(example, height, width):
    """Every spatial feature resized to ``(height, width)``: bilinear for the
    image, nearest-neighbour for the mask, a scale for boxes."""
    out = dict(example)
    old_shape = tf.shape(example["image"])
    # antialias: a 500-pixel photo shrunk to 224 would alias without it.
    resized = tf.image.resize(tf.cast(example["image"], tf.float32), [height, width], method="bilinear", antialias=True)
    out["image"] = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    for key in _MASKS:
        if key in example:
            mask = tf.image.resize(example[key][..., None], [height, width], method="nearest")[..., 0]
            out[key] = tf.cast(mask, example[key].dtype)
    if "boxes" in example:
        scale_x = tf.cast(width, tf.float32) / tf.cast(old_shape[1], tf.float32)
        scale_y = tf.cast(height, tf.float32) / tf.cast(old_shape[0], tf.float32)
        out["boxes"] = tf.cast(example["boxes"], tf.float32) * tf.stack([scale_x, scale_y, scale_x, scale_y])
    return out


def _set_output_shape(example, height, width):
    example["image"].set_shape([height, width, 3])
    for key in _MASKS:
        if key in example:
            example[key].set_shape([height, width])
    return example


def random_resized_crop(example, size, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Random crop of random area and aspect ratio, resized to ``size``.

    The window is drawn by ``tf.image.stateless_sample_distorted_bounding_box``
    (10 attempts; when none fits, the whole image is used).

    Args:
        example: Dict with ``image`` and optionally ``mask`` and ``boxes``.
        size: Output side (int) or ``(height, width)``.
        seed: Shape ``[2]`` int32/int64 tensor or tuple.
        scale: Range of the crop's area as a fraction of the image's area.
        ratio: Range of the crop's aspect ratio, width / height.

    Returns:
        A new dict; ``image`` is uint8 ``(height, width, 3)``.
    """
    out_height, out_width = _output_size(size)
    shape = tf.shape(example["image"])
    whole_image = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=whole_image,
        seed=seed,
        # 0: any window inside the image will do; only area and ratio matter.
        min_object_covered=0.0,
        aspect_ratio_range=list(ratio),
        area_range=list(scale),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    example = _crop(example, begin[0], begin[1], crop_size[0], crop_size[1])
    return _set_output_shape(_resize(example, out_height, out_width), out_height, out_width)


def random_flip(example, seed):
    """Flips ``image``, the masks and ``boxes`` left-right with probability 1/2.

    Args:
        example: Dict with ``image`` and optionally ``mask`` and ``boxes``.
        seed: Shape ``[2]`` int32/int64 tensor or tuple.
    """
    flip = tf.random.stateless_uniform([], seed=seed) < 0.5
    out = dict(example)
    for key in ("image", *_MASKS):
        if key in example:
            value = example[key]
            out[key] = tf.cond(flip, lambda v=value: tf.reverse(v, [1]), lambda v=value: v)
    if "boxes" in example:
        boxes = tf.cast(example["boxes"], tf.float32)
        width = tf.cast(tf.shape(example["image"])[1], tf.float32)
        xmin, ymin, xmax, ymax = tf.unstack(boxes, 4, axis=-1)
        mirrored = tf.stack([width - xmax, ymin, width - xmin, ymax], axis=-1)
        out["boxes"] = tf.cond(flip, lambda: mirrored, lambda: boxes)
    return out


def train_crop_and_flip(example, size, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """:func:`random_resized_crop` then :func:`random_flip`, with two seeds
    split from ``seed`` so the crop and the flip are independent."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    example = random_resized_crop(example, size, crop_seed, scale=scale, ratio=ratio)
    return random_flip(example, flip_seed)


def resize_center_crop(example, size, crop_fraction=0.875):
    """Evaluation crop: resize, keeping the aspect ratio, then crop the centre.

    The image is resized so that the crop covers ``crop_fraction`` of it along
    its limiting axis; for a square ``size`` that is the shorter side resized
    to ``round(size / crop_fraction)`` (224 / 0.875 = 256). The crop starts at
    ``(resized - size) // 2`` on each axis.

    Args:
        example: Dict with ``image`` and optionally ``mask`` and ``boxes``.
        size: Output side (int) or ``(height, width)``.
        crop_fraction: Fraction of the resized shorter side that is kept, in
            (0, 1].

    Returns:
        A new dict; ``image`` is uint8 ``(height, width, 3)``.
    """
    out_height, out_width = _output_size(size)
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1]. Received: crop_fraction={crop_fraction}")
    shape = tf.shape(example["image"])
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    factor = tf.maximum(out_height / (crop_fraction * height), out_width / (crop_fraction * width))
    resized_height = tf.maximum(tf.cast(tf.round(height * factor), tf.int32), out_height)
    resized_width = tf.maximum(tf.cast(tf.round(width * factor), tf.int32), out_width)
    example = _resize(example, resized_height, resized_width)
    top = (resized_height - out_height) // 2
    left = (resized_width - out_width) // 2
    return _set_output_shape(_crop(example, top, left, out_height, out_width), out_height, out_width)
