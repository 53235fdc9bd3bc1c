"""The embedded default dataset: procedurally drawn shapes with exact masks.

Nothing is downloaded: every split is drawn with numpy and OpenCV from a seed in
a few seconds on a CPU, and every image comes with the ground-truth mask of the
pixels that carry its class evidence, so an explanation map can be scored
against it (pointing game, energy inside the mask, IoU).

The dataset is built so that only the class objects tell the classes apart:

* Colour carries no class information. The background colour, its gradient and
  noise, the colour of each object and of every distractor are drawn from the
  same distributions for every class; objects and distractors only have to
  contrast with the background so that they are visible.
* Clutter is shared by all classes: thin line segments, hollow outlines (rings,
  square and triangle outlines) and speckle noise. None is filled, so none can
  be mistaken for a class object, and none is in the mask. Clutter is kept a
  few pixels away from the objects, so an object's silhouette is never extended
  by a line that happens to share its colour.
* About a quarter of the images hold two or three non-overlapping instances of
  their class (the "multiple subjects" case of the paper).
* ``disk`` and ``disk_sticker`` differ only by a small square patch of a
  contrasting colour (4-5 px at 64x64, the paper's "apple with a sticker"): a
  map that is coarser than the sticker cannot show what decides the class.
  Each image also comes with an evidence mask: the sticker pixels of a
  ``disk_sticker`` image (the part of the object that decides its class), all
  zero for the other classes, so a map can be scored on the sticker alone.

Object sizes scale with ``image_size``; at the default 64x64 they are 14-28 px
across, larger than ResNet50's 2x2 last feature map cells (32 px) can resolve
when two or three of them share an image.

Build the picture of docs/manual.md (docs/samples.png) with::

    python -m kerascam.data.synthetic --figure docs/samples.png
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import pathlib
import time
import zipfile

import cv2
import numpy as np

from kerascam.io import atomic_file

logger = logging.getLogger(__name__)

# Bump whenever the drawing or the set of arrays changes, so that stale caches
# are not reused. 3: the "evidence" array.
FORMAT_VERSION = 3

CLASS_NAMES: tuple[str, ...] = ("disk", "square", "triangle", "cross", "disk_sticker")
SPLITS: tuple[str, ...] = ("train", "validation")

# Radius of the circle around each shape, as a fraction of its nominal size.
# Placement keeps these circles apart, so instances never touch. The factors
# follow from the polygons in `_polygon`: square side 0.8, triangle side 1.15
# (so that all classes have roughly the same area), cross arms 1 x 1/3.
_BOUNDING_RADIUS = {
    "disk": 0.5,
    "disk_sticker": 0.5,
    "square": 0.8 / math.sqrt(2.0),
    "triangle": 1.15 / math.sqrt(3.0),
    "cross": math.hypot(0.5, 1.0 / 6.0),
}

# In the instance layer, instance k is drawn with value k (1, 2, 3) and its
# sticker, if any, with value _STICKER + k.
_STICKER = 128

# Backgrounds are made in chunks: vectorised, but without holding float copies
# of a whole split in memory.
_CHUNK = 256


@dataclasses.dataclass(frozen=True)
class ShapesConfig:
    """Everything that determines the shapes dataset; equal configs give equal bytes.

    Attributes:
        image_size: Height and width of the square images, at least 32.
        train_examples: Number of examples in the "train" split.
        validation_examples: Number of examples in the "validation" split.
        classes: Class names, a subset of `CLASS_NAMES` in any order; the label
            of an example is the index of its class in this tuple.
        multi_instance_fraction: Fraction of the images that hold two or three
            instances of their class instead of one.
        seed: Seed of the generator; each split uses its own stream.
        object_size_fraction: Range of the nominal object size (disk diameter,
            cross arm length) as a fraction of `image_size`; 14-28 px at 64x64.
        sticker_size_fraction: Range of the sticker's side as a fraction of
            `image_size`; 4-5 px at 64x64.
        lines_per_image: Inclusive range of the number of line segments.
        outlines_per_image: Inclusive range of the number of hollow outlines.
        speckle_fraction: Fraction of the pixels turned into speckles of random
            colour.
        background_gradient: Largest brightness change of the background's
            linear gradient from its centre to an edge, in 8-bit levels.
        background_noise: Standard deviation of the background's Gaussian
            noise, in 8-bit levels.
        background_range: Range [low, high) of each channel of the background
            colour. Dark by default, with ``foreground_range`` bright: objects
            and clutter are lighter than their background in every class. A
            fixed contrast polarity lets a CNN trained from scratch find the
            shapes in a few epochs; hue and brightness still say nothing about
            the class, and the clutter is as bright as the objects.
        foreground_range: Range [low, high) of each channel of object, sticker
            and clutter colours.
        min_contrast: Smallest Euclidean RGB distance of an object's or a
            distractor's colour from the background colour (and of a sticker's
            colour from its disk).
    """

    image_size: int = 64
    train_examples: int = 6000
    validation_examples: int = 1000
    classes: tuple[str, ...] = CLASS_NAMES
    multi_instance_fraction: float = 0.25
    seed: int = 0
    object_size_fraction: tuple[float, float] = (0.22, 0.44)
    sticker_size_fraction: tuple[float, float] = (0.0625, 0.078)
    lines_per_image: tuple[int, int] = (1, 3)
    outlines_per_image: tuple[int, int] = (1, 2)
    speckle_fraction: float = 0.01
    background_gradient: float = 24.0
    background_noise: float = 4.0
    min_contrast: float = 96.0
    background_range: tuple[int, int] = (0, 96)
    foreground_range: tuple[int, int] = (112, 256)

    def __post_init__(self):
        # Lists are accepted for convenience but stored as tuples, which keeps
        # the config hashable and its cache key stable.
        for name in ("classes", "object_size_fraction", "sticker_size_fraction",
                     "lines_per_image", "outlines_per_image", "background_range", "foreground_range"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _check_config(self)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def num_examples(self, split: str) -> int:
        """Returns the number of examples of `split` ("train" or "validation")."""
        _check_split(split)
        return self.train_examples if split == "train" else self.validation_examples


def _check_split(split) -> int:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'validation'. Received: split={split!r}")
    return SPLITS.index(split)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_range(name, value, low, integer):
    if len(value) != 2 or not all(_is_int(v) if integer else isinstance(v, (int, float)) for v in value):
        kind = "integers" if integer else "numbers"
        raise ValueError(f"{name} must be a (min, max) pair of {kind}. Received: {name}={value!r}")
    if not low <= value[0] <= value[1]:
        raise ValueError(f"{name} must satisfy {low} <= min <= max. Received: {name}={value!r}")


def _check_config(config: ShapesConfig) -> None:
    if not _is_int(config.image_size) or config.image_size < 32:
        raise ValueError(f"image_size must be an integer >= 32. Received: image_size={config.image_size!r}")
    for name in ("train_examples", "validation_examples"):
        value = getattr(config, name)
        if not _is_int(value) or value <= 0:
            raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    if not config.classes:
        raise ValueError(f"classes must name at least one class. Received: classes={config.classes!r}")
    for name in config.classes:
        if name not in CLASS_NAMES:
            raise ValueError(f"Unknown class name {name!r}; known classes are {CLASS_NAMES}. "
                             f"Received: classes={config.classes!r}")
    if len(set(config.classes)) != len(config.classes):
        raise ValueError(f"classes must not repeat a name. Received: classes={config.classes!r}")
    if not 0.0 <= config.multi_instance_fraction <= 1.0:
        raise ValueError("multi_instance_fraction must be in [0, 1]. "
                         f"Received: multi_instance_fraction={config.multi_instance_fraction!r}")
    if not _is_int(config.seed) or config.seed < 0:
        raise ValueError(f"seed must be a non-negative integer. Received: seed={config.seed!r}")
    _check_range("object_size_fraction", config.object_size_fraction, 0.05, integer=False)
    if config.object_size_fraction[1] > 0.5:
        # A larger object could not be placed inside the image with a margin.
        raise ValueError("object_size_fraction must not exceed 0.5. "
                         f"Received: object_size_fraction={config.object_size_fraction!r}")
    _check_range("sticker_size_fraction", config.sticker_size_fraction, 0.0, integer=False)
    if config.sticker_size_fraction[1] > config.object_size_fraction[0] / 2:
        raise ValueError("sticker_size_fraction must stay below half the smallest object size. "
                         f"Received: sticker_size_fraction={config.sticker_size_fraction!r}")
    _check_range("lines_per_image", config.lines_per_image, 0, integer=True)
    _check_range("outlines_per_image", config.outlines_per_image, 0, integer=True)
    if not 0.0 <= config.speckle_fraction <= 0.2:
        raise ValueError("speckle_fraction must be in [0, 0.2]. "
                         f"Received: speckle_fraction={config.speckle_fraction!r}")
    for name in ("background_gradient", "background_noise", "min_contrast"):
        value = getattr(config, name)
        if not 0.0 <= value <= 128.0:
            raise ValueError(f"{name} must be in [0, 128]. Received: {name}={value!r}")


@dataclasses.dataclass(frozen=True)
class _Geometry:
    """Pixel sizes derived once per config, so the per-image loop stays lean."""

    size: int
    object_size: tuple[float, float]
    sticker_size: tuple[int, int]
    thickness: int  # of lines and outlines
    gap: int  # empty pixels between instances, and between objects and clutter
    keep_out: np.ndarray  # dilation kernel for the clutter-free zone

    @classmethod
    def from_config(cls, config: ShapesConfig) -> _Geometry:
        size = config.image_size
        scale = size / 64.0
        gap = max(2, round(2 * scale))
        sticker_lo = max(2, round(config.sticker_size_fraction[0] * size))
        sticker_hi = max(sticker_lo, round(config.sticker_size_fraction[1] * size))
        return cls(
            size=size,
            object_size=(config.object_size_fraction[0] * size, config.object_size_fraction[1] * size),
            sticker_size=(sticker_lo, sticker_hi),
            thickness=max(1, round(scale)),
            gap=gap,
            keep_out=np.ones((2 * gap + 1, 2 * gap + 1), np.uint8),
        )


def _polygon(shape: str, size: float, angle: float) -> np.ndarray:
    """Vertices (x, y) of a polygonal class shape centred on the origin."""
    if shape == "square":
        half = 0.4 * size
        points = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    elif shape == "triangle":
        radius = _BOUNDING_RADIUS["triangle"] * size
        corners = np.deg2rad([-90.0, 30.0, 150.0])
        points = radius * np.stack([np.cos(corners), np.sin(corners)], axis=1)
    elif shape == "cross":
        arm, width = 0.5 * size, size / 6.0
        points = np.array([
            [-width, -arm], [width, -arm], [width, -width], [arm, -width], [arm, width], [width, width],
            [width, arm], [-width, arm], [-width, width], [-arm, width], [-arm, -width], [-width, -width],
        ])
    else:
        raise ValueError(f"No polygon for shape {shape!r}")
    cos, sin = math.cos(angle), math.sin(angle)
    return points @ np.array([[cos, sin], [-sin, cos]])


def _contrasting_colour(rng: np.random.Generator, avoid, levels=(0, 256)) -> tuple[int, int, int]:
    """Draws a uniform RGB colour at least a given distance from others.

    Args:
        rng: Generator to draw from.
        avoid: Pairs (colour, minimum distance).

    Returns:
        The first of a batch of candidates that keeps every distance, or the
        candidate that comes closest when none does (rare; keeps it bounded).
    """
    candidates = rng.integers(levels[0], levels[1], size=(16, 3))
    margin = np.min(
        [np.linalg.norm(candidates - np.asarray(colour), axis=1) - distance for colour, distance in avoid],
        axis=0,
    )
    passing = np.flatnonzero(margin >= 0)
    best = passing[0] if passing.size else int(np.argmax(margin))
    return tuple(int(c) for c in candidates[best])


def _backgrounds(rng: np.random.Generator, base_colours: np.ndarray, config: ShapesConfig) -> np.ndarray:
    """Flat colours plus a linear brightness gradient in a random direction and low noise."""
    count, size = len(base_colours), config.image_size
    coords = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    angle = rng.uniform(0.0, 2.0 * np.pi, size=count).astype(np.float32)
    amplitude = rng.uniform(0.0, config.background_gradient, size=count).astype(np.float32)
    ramp = (np.cos(angle)[:, None, None] * coords[None, None, :]
            + np.sin(angle)[:, None, None] * coords[None, :, None]) * amplitude[:, None, None]
    pixels = base_colours[:, None, None, :].astype(np.float32) + ramp[..., None]
    if config.background_noise > 0:
        pixels += config.background_noise * rng.standard_normal((count, size, size, 3), dtype=np.float32)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _place_instances(rng: np.random.Generator, shape: str, count: int, geometry: _Geometry):
    """Random centres and sizes for `count` instances whose bounding circles keep apart.

    Several instances are drawn from the lower half of the size range so that
    three of them fit; if they still do not fit, sizes shrink and placement
    starts over. Always the same rng calls for the same inputs: deterministic.
    """
    low, high = geometry.object_size
    if count > 1:
        high = low + 0.5 * (high - low)
    sizes = rng.uniform(low, high, size=count)
    factor = _BOUNDING_RADIUS[shape]
    for _ in range(50):
        radii = factor * sizes
        centres = []
        for radius in radii:
            lowest, highest = radius + 1.0, geometry.size - 2.0 - radius
            for _ in range(100):
                centre = rng.uniform(lowest, highest, size=2)
                if all(np.hypot(*(centre - c)) > radius + r + geometry.gap for c, r in zip(centres, radii)):
                    centres.append(centre)
                    break
            else:
                break
        if len(centres) == count:
            return centres, sizes
        sizes = sizes * 0.9
    raise RuntimeError(f"Could not place {count} instances of {shape!r} in {geometry.size}x{geometry.size} px")


def _draw_instances(layer: np.ndarray, rng: np.random.Generator, shape: str, count: int,
                    geometry: _Geometry) -> None:
    """Draws instances 1..count (their stickers as `_STICKER` + k) into the uint8 layer.

    The image is later painted from this layer, so image and mask come from
    the very same cv2 rasterisation and agree pixel for pixel.
    """
    centres, sizes = _place_instances(rng, shape, count, geometry)
    for value, (centre, size) in enumerate(zip(centres, sizes), start=1):
        if shape in ("disk", "disk_sticker"):
            radius = max(1, round(size / 2))
            centre_px = (round(centre[0]), round(centre[1]))
            cv2.circle(layer, centre_px, radius, value, thickness=-1, lineType=cv2.LINE_8)
            if shape == "disk_sticker":
                side = int(rng.integers(geometry.sticker_size[0], geometry.sticker_size[1] + 1))
                # Keep the whole patch at least one pixel inside the disk, so
                # the disk's outline is the same as a plain disk's.
                reach = max(0.0, radius - side / math.sqrt(2.0) - 1.0)
                direction = rng.uniform(0.0, 2.0 * np.pi)
                distance = reach * math.sqrt(rng.uniform())
                x0 = round(centre_px[0] + distance * math.cos(direction) - (side - 1) / 2)
                y0 = round(centre_px[1] + distance * math.sin(direction) - (side - 1) / 2)
                cv2.rectangle(layer, (x0, y0), (x0 + side - 1, y0 + side - 1), _STICKER + value,
                              thickness=-1, lineType=cv2.LINE_8)
        else:
            points = _polygon(shape, size, rng.uniform(0.0, 2.0 * np.pi)) + centre
            cv2.fillPoly(layer, [np.rint(points).astype(np.int32)], value, lineType=cv2.LINE_8)


def _draw_clutter(image: np.ndarray, rng: np.random.Generator, background_colour, config: ShapesConfig,
                  geometry: _Geometry) -> None:
    """Draws line segments, hollow outlines and speckles in place; the same for every class."""
    size, thickness = geometry.size, geometry.thickness
    contrast = [(background_colour, config.min_contrast)]
    for _ in range(rng.integers(config.lines_per_image[0], config.lines_per_image[1] + 1)):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, size, size=4))
        cv2.line(image, (x0, y0), (x1, y1), _contrasting_colour(rng, contrast, config.foreground_range), thickness,
                 lineType=cv2.LINE_8)
    for _ in range(rng.integers(config.outlines_per_image[0], config.outlines_per_image[1] + 1)):
        kind = ("disk", "square", "triangle")[rng.integers(3)]
        outline_size = rng.uniform(*geometry.object_size)
        centre = rng.uniform(0.0, size, size=2)
        colour = _contrasting_colour(rng, contrast, config.foreground_range)
        if kind == "disk":
            cv2.circle(image, (round(centre[0]), round(centre[1])), max(2, round(outline_size / 2)), colour,
                       thickness, lineType=cv2.LINE_8)
        else:
            points = _polygon(kind, outline_size, rng.uniform(0.0, 2.0 * np.pi)) + centre
            cv2.polylines(image, [np.rint(points).astype(np.int32)], True, colour, thickness,
                          lineType=cv2.LINE_8)
    speckles = round(config.speckle_fraction * size * size)
    if speckles:
        rows, cols = rng.integers(0, size, size=(2, speckles))
        image[rows, cols] = rng.integers(0, 256, size=(speckles, 3), dtype=np.uint8)


def _sticker_pixels(layer: np.ndarray) -> np.ndarray:
    """The evidence mask of one image: 1 on every sticker pixel of the instance layer.

    Stickers are drawn last into the layer and painted last into the image,
    instances never overlap and clutter is kept away from objects, so these
    are exactly the sticker pixels that are visible in the final image. Only
    the layer is read; no random stream is touched.
    """
    return (layer > _STICKER).view(np.uint8)


def _has_clutter(config: ShapesConfig) -> bool:
    return config.lines_per_image[1] > 0 or config.outlines_per_image[1] > 0 or config.speckle_fraction > 0


def generate(config: ShapesConfig, split: str) -> dict[str, np.ndarray]:
    """Draws one split of the shapes dataset.

    Four independent streams are derived from (seed, split): labels, background,
    objects and clutter. Because the objects have their own stream, turning the
    clutter off leaves every object, colour and mask unchanged, which the tests
    use to prove that clutter never enters a mask.

    Args:
        config: The dataset's `ShapesConfig`.
        split: "train" or "validation".

    Returns:
        A dict with "image" (uint8, (N, H, W, 3), RGB), "label" (int64, (N,),
        index into `config.classes`), "mask" (uint8, (N, H, W), 1 on the
        class objects, sticker included, 0 elsewhere) and "evidence" (uint8,
        (N, H, W), 1 on the sticker pixels of ``disk_sticker`` images, the
        pixels that decide their class; all 0 for every other class).

    Raises:
        ValueError: If `split` is not "train" or "validation".
    """
    split_index = _check_split(split)
    count, size = config.num_examples(split), config.image_size
    geometry = _Geometry.from_config(config)
    root = np.random.SeedSequence(config.seed, spawn_key=(split_index,))
    label_rng, background_rng, object_rng, clutter_rng = (np.random.default_rng(s) for s in root.spawn(4))

    # Balanced up to one per class, then shuffled.
    labels = np.arange(count, dtype=np.int64) % config.num_classes
    label_rng.shuffle(labels)
    instances = np.ones(count, dtype=np.int64)
    multi = label_rng.permutation(count)[: round(config.multi_instance_fraction * count)]
    instances[multi] = label_rng.integers(2, 4, size=multi.size)

    base_colours = background_rng.integers(*config.background_range, size=(count, 3))
    images = np.empty((count, size, size, 3), np.uint8)
    masks = np.empty((count, size, size), np.uint8)
    evidence = np.zeros((count, size, size), np.uint8)
    layer = np.empty((size, size), np.uint8)
    clutter = _has_clutter(config)
    for start in range(0, count, _CHUNK):
        stop = min(start + _CHUNK, count)
        images[start:stop] = _backgrounds(background_rng, base_colours[start:stop], config)
        for index in range(start, stop):
            image, shape = images[index], config.classes[labels[index]]
            background_colour = base_colours[index]
            layer.fill(0)
            _draw_instances(layer, object_rng, shape, int(instances[index]), geometry)
            objects = layer > 0
            if clutter:
                # Draw clutter on a copy and keep it only outside a margin
                # around the objects: distractors may pass behind an object
                # but never touch it.
                cluttered = image.copy()
                _draw_clutter(cluttered, clutter_rng, background_colour, config, geometry)
                near_objects = cv2.dilate(objects.view(np.uint8), geometry.keep_out).astype(bool)
                cluttered[near_objects] = image[near_objects]
                image[...] = cluttered
            for value in range(1, int(instances[index]) + 1):
                colour = _contrasting_colour(object_rng, [(background_colour, config.min_contrast)],
                                             config.foreground_range)
                image[layer == value] = colour
                if shape == "disk_sticker":
                    # The sticker must stand out from its disk and must not
                    # look like a hole that shows the background.
                    image[layer == _STICKER + value] = _contrasting_colour(
                        object_rng, [(colour, config.min_contrast), (background_colour, config.min_contrast / 2)])
            masks[index] = objects
            if shape == "disk_sticker":
                evidence[index] = _sticker_pixels(layer)
    return {"image": images, "label": labels, "mask": masks, "evidence": evidence}


def default_cache_dir() -> pathlib.Path:
    """Returns $KERASCAM_CACHE if set, else ~/.cache/kerascam."""
    return pathlib.Path(os.environ.get("KERASCAM_CACHE") or pathlib.Path.home() / ".cache" / "kerascam")


def cache_key(config: ShapesConfig) -> str:
    """A short hash of the config and `FORMAT_VERSION`: the cache file's identity."""
    fields = dataclasses.asdict(config)
    payload = json.dumps({"format_version": FORMAT_VERSION, **fields}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cache_path(config: ShapesConfig, split: str, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Where `load` keeps `split` of `config`."""
    _check_split(split)
    directory = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return directory / f"shapes-{split}-{cache_key(config)}.npz"


def _read_cache(path: pathlib.Path, config: ShapesConfig, split: str) -> dict[str, np.ndarray]:
    """Reads a cache file, checking it holds exactly what `generate` would return."""
    count, size = config.num_examples(split), config.image_size
    expected = {
        "image": ((count, size, size, 3), np.uint8),
        "label": ((count,), np.int64),
        "mask": ((count, size, size), np.uint8),
        "evidence": ((count, size, size), np.uint8),
    }
    with np.load(path, allow_pickle=False) as archive:
        missing = sorted(set(expected) - set(archive.files))
        if missing:
            # A file of an older format (before "evidence") under a current name.
            raise ValueError(f"it lacks {', '.join(missing)}")
        data = {name: archive[name] for name in expected}
    for name, (shape, dtype) in expected.items():
        if data[name].shape != shape or data[name].dtype != dtype:
            raise ValueError(f"{name} has shape {data[name].shape} and dtype {data[name].dtype}, "
                             f"expected {shape} and {np.dtype(dtype)}")
    return data


def load(config: ShapesConfig, split: str, cache_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Returns `split` of the shapes dataset, generating it once and caching it.

    The cache is an uncompressed .npz (it loads in well under a second) named by
    the split and a hash of the config and `FORMAT_VERSION`. A file that cannot
    be read, that lacks one of the arrays or that holds arrays of the wrong
    shape is regenerated.

    Args:
        config: The dataset's `ShapesConfig`.
        split: "train" or "validation".
        cache_dir: Folder of the cache; defaults to $KERASCAM_CACHE, or
            ~/.cache/kerascam when that is unset.

    Returns:
        The dict of `generate`: "image", "label", "mask" and "evidence".
    """
    path = cache_path(config, split, cache_dir)
    if path.exists():
        try:
            return _read_cache(path, config, split)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            logger.warning("Regenerating the unreadable cache file %s (%s)", path, error)
    data = generate(config, split)
    with atomic_file(path, "wb") as file:
        np.savez(file, **data)
    return data


def save_samples_figure(path: str | os.PathLike, config: ShapesConfig = ShapesConfig(), per_class: int = 3) -> None:
    """Writes a PNG grid of samples: one row per class, each image beside its mask.

    Each row shows one multi-instance example when the class has one among the
    drawn samples, so the picture shows every feature of the dataset.

    Args:
        path: Where to write the PNG (written atomically).
        config: The dataset's `ShapesConfig`; samples come from a small
            "validation" split drawn with its settings.
        per_class: Number of samples per class, at least 1.
    """
    if not _is_int(per_class) or per_class < 1:
        raise ValueError(f"per_class must be a positive integer. Received: per_class={per_class!r}")
    # Imported here: only the figure needs matplotlib, and the object-oriented
    # Agg canvas leaves pyplot's global backend alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sample_config = dataclasses.replace(config, validation_examples=max(8, 8 * per_class) * config.num_classes)
    data = generate(sample_config, "validation")
    rows = []
    for label in range(config.num_classes):
        indices = np.flatnonzero(data["label"] == label)
        instances = [cv2.connectedComponents(data["mask"][i], connectivity=8)[0] - 1 for i in indices]
        multi = [i for i, n in zip(indices, instances) if n > 1][:1]
        single = [i for i in indices if i not in multi][: per_class - len(multi)]
        rows.append(sorted(single + multi))

    figure = Figure(figsize=(2 * per_class * 1.1, config.num_classes * 1.25), dpi=100)
    FigureCanvasAgg(figure)
    grid = figure.subplots(config.num_classes, 2 * per_class, squeeze=False)
    for label, indices in enumerate(rows):
        for column, index in enumerate(indices):
            image_axes, mask_axes = grid[label, 2 * column], grid[label, 2 * column + 1]
            image_axes.imshow(data["image"][index], interpolation="nearest")
            mask_axes.imshow(data["mask"][index], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            image_axes.set_title(config.classes[label], fontsize=8)
            mask_axes.set_title("mask", fontsize=8)
        for axes in grid[label]:
            axes.set_axis_off()
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.08, hspace=0.35)
    with atomic_file(path, "wb") as file:
        figure.savefig(file, format="png")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Build the shapes dataset or its README picture.")
    parser.add_argument("--figure", help="write a PNG grid of samples and masks to this path")
    parser.add_argument("--per-class", type=int, default=3, help="samples per class in the figure")
    parser.add_argument("--image-size", type=int, default=ShapesConfig.image_size)
    parser.add_argument("--seed", type=int, default=ShapesConfig.seed)
    parser.add_argument("--cache-dir", help="cache folder (default: $KERASCAM_CACHE or ~/.cache/kerascam)")
    args = parser.parse_args(argv)
    config = ShapesConfig(image_size=args.image_size, seed=args.seed)
    if args.figure:
        save_samples_figure(args.figure, config, per_class=args.per_class)
        print(f"Wrote {args.figure}")
        return
    for split in SPLITS:
        start = time.perf_counter()
        data = load(config, split, args.cache_dir)
        print(f"{split}: {len(data['label'])} examples in {time.perf_counter() - start:.1f} s, "
              f"cached at {cache_path(config, split, args.cache_dir)}")


if __name__ == "__main__":
    main()
