"""Maps that know nothing of the model, scored beside the real methods.

Each table then shows what is reachable without the classifier: a score that
a CAM does not beat by a clear margin over these says little about the CAM.

* ``noise``: independent uniform noise per pixel, seeded by the image's
  bytes, so the same image always gets the same map (in any batch, shard or
  resumed run) and a randomized model gets the same map as the trained one.
  Its expected localization score is the uniform map's (the chance row).
* ``edges``: the Sobel gradient magnitude of the image's luminance, the
  image's own edges. A map that correlates with it as strongly as a CAM does
  may be showing the image rather than the classifier (Adebayo et al. 2018,
  "Sanity Checks for Saliency Maps").

Both return maps in [0, 1] at the input resolution, which also serve as their
"native" maps.

The perturbation scores (deletion and insertion, ROAD) also report each map's
score minus the same model's ``noise`` map's on the same image
(`minus_baseline`): a model that is fragile under perturbation gives every
map a low score, and the difference is what the map adds to it.
"""

import zlib

import cv2
import numpy as np

from kerascam.cams.base import normalize_maps


def noise_maps(images):
    """Uniform noise in [0, 1) per pixel, seeded by each image's content.

    Args:
        images: array (N, H, W, 3).

    Returns:
        float32 (N, H, W).
    """
    images = np.asarray(images)
    maps = np.empty(images.shape[:3], np.float32)
    for i, image in enumerate(images):
        seed = zlib.crc32(np.ascontiguousarray(image, dtype=np.float32).tobytes())
        maps[i] = np.random.default_rng(seed).random(images.shape[1:3], dtype=np.float32)
    return maps


def luminance(images):
    """ITU-R BT.601 luma of RGB images, float32 (N, H, W)."""
    images = np.asarray(images, dtype=np.float32)
    return images[..., 0] * 0.299 + images[..., 1] * 0.587 + images[..., 2] * 0.114


def edge_maps(images):
    """Sobel gradient magnitude of each image's luminance, min-max normalised.

    3x3 Sobel kernels, borders reflected (OpenCV's default,
    BORDER_REFLECT_101). A flat image has no edges: its map is all zeros
    (`kerascam.metrics.map_status` says "zero").

    Args:
        images: array (N, H, W, 3) of RGB pixels.

    Returns:
        float32 (N, H, W) in [0, 1].
    """
    gray = luminance(images)
    magnitude = np.empty_like(gray)
    for i, g in enumerate(gray):
        dx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
        dy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
        magnitude[i] = np.sqrt(dx * dx + dy * dy)
    return normalize_maps(magnitude)


BASELINES = {"noise": noise_maps, "edges": edge_maps}

NOISE_COLUMN = "noise"  # the model-free map whose score is each model's baseline


def model_batch_key(batch, one):
    """What every column of one model shares on one batch: the model, the images and the classes."""
    return (id(one.model), one.model_name, np.asarray(batch.ids).tobytes(), np.asarray(one.classes).tobytes())


def chance_of_perturbation(batch, max_images, names):
    """The chance row of perturbation scores: 0 for ``names`` on the scored images, NaN on the others.

    A map that knows nothing of the model scores 0 there in expectation: a
    uniform map's order is random (ties are broken at random), as is the
    noise map's, so both remove the same random pixels, and the combined
    ROAD score of either removes the same share both ways.

    Args:
        batch: the `kerascam.evaluation.scorer.Batch`.
        max_images: the scorer's image count (images with a smaller index
            are scored); None for every image.
        names: the fields.
    """
    scored = np.asarray(batch.ids) < (max_images or np.inf)
    return {name: np.where(scored, 0.0, np.nan) for name in names}


def minus_baseline(values, baseline, is_baseline_column):
    """``values - baseline`` per image; None everywhere for the baseline's own column (it is 0 by definition)."""
    if is_baseline_column:
        return [None] * len(values)
    return np.asarray(values, np.float64) - np.asarray(baseline, np.float64)
