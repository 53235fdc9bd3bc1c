"""Bilinear resizing of CAMs in `keras.ops`, the same arithmetic on every backend.

Two sampling grids are used (see `kerascam/cams/base.py` and `score_cam.py`):

* half-pixel centres, for every map resized to the input: output pixel o
  samples input coordinate (o + 0.5) * h / H - 0.5 (OpenCV's INTER_LINEAR,
  TensorFlow's ``tf.image.resize(..., "bilinear", antialias=False)``);
* aligned corners, for ScoreCAM's masks: output pixel o samples
  o * (h - 1) / (H - 1), the grid of ``scipy.ndimage.zoom(order=1)`` with
  which tf-keras-vis upsamples its masks.

Neither `keras.ops.image.resize` nor ``jax.image.resize`` gives both (and
``jax.image.resize`` antialiases when it shrinks), so the interpolation is
written here once: the source rows and columns and their weights are
computed in NumPy exactly as TensorFlow's ``ResizeBilinear`` kernel computes
them (float32 coordinates, clamped at the border), and the map is
interpolated with two gathers per axis, first along the width, then along the
height, with TensorFlow's ``a + (b - a) * weight``. Under JAX that gives
TensorFlow's maps to float32 rounding without TensorFlow.
"""

import keras
import numpy as np


def source_positions(in_size, out_size, align_corners=False):
    """Where each output pixel samples the input along one axis.

    Args:
        in_size: the input's length along the axis.
        out_size: the output's length.
        align_corners: True for the corner-aligned grid, False for
            half-pixel centres.

    Returns:
        (lower, upper, weight): int32 arrays (out_size,) of the two input
        pixels each output pixel lies between, and the float32 weight of
        `upper`.
    """
    in_size, out_size = int(in_size), int(out_size)
    if align_corners and out_size > 1:
        scale = np.float32(in_size - 1) / np.float32(out_size - 1)
        position = np.arange(out_size, dtype=np.float32) * scale
    else:
        scale = np.float32(in_size) / np.float32(out_size)
        offset = np.float32(0.0 if align_corners else 0.5)
        position = (np.arange(out_size, dtype=np.float32) + offset) * scale - offset
    floor = np.floor(position)
    lower = np.maximum(floor, 0).astype(np.int32)
    upper = np.minimum(np.ceil(position), in_size - 1).astype(np.int32)
    if align_corners:
        upper = np.minimum(floor.astype(np.int32) + 1, in_size - 1)
    return lower, upper, (position - floor).astype(np.float32)


def _interpolate(maps, in_size, out_size, axis, align_corners):
    if in_size == out_size:
        return maps
    lower, upper, weight = source_positions(in_size, out_size, align_corners)
    low = keras.ops.take(maps, lower, axis=axis)
    high = keras.ops.take(maps, upper, axis=axis)
    shape = [1] * len(maps.shape)
    shape[axis] = out_size
    return low + (high - low) * keras.ops.convert_to_tensor(weight.reshape(shape))


def resize_bilinear(maps, size, align_corners=False):
    """Bilinear resize of maps (n, h, w) or (n, h, w, c) to `size`, in `keras.ops`.

    Args:
        maps: a float32 tensor whose spatial axes are 1 and 2, with a static
            spatial shape (inside `jax.jit` every shape is static).
        size: the output (H, W), Python ints.
        align_corners: False (default) for half-pixel centres, True for
            corner-aligned sampling (see the module docstring).

    Returns:
        A float32 tensor (n, H, W) or (n, H, W, c); `maps` itself when (h, w)
        already equals `size`.
    """
    height, width = (int(s) for s in maps.shape[1:3])
    resized = _interpolate(maps, width, int(size[1]), 2, align_corners)
    return _interpolate(resized, height, int(size[0]), 1, align_corners)
