"""The embedded ``markers`` testbed: the class is a small marker among equal decoys.

On the embedded ``shapes`` data the class object is the one filled,
high-contrast thing in the image, so a map of the image's own edges already
puts more mass on it than a CAM does: a mask-overlap score there rewards
contrast, not evidence (Adebayo et al. 2018 compared saliency maps with an
edge detector; XAI-TRIS, Clark et al. 2024, found many methods no better than
one). Here every image holds the same things, and only a small part that can
be told apart by its class decides the class:

* Three filled disks (``objects_per_image``) of the same size, colour and
  contrast distribution, drawn apart on a dark background with a gradient and
  noise, as in ``shapes``.
* Each disk carries one small marker of one of four kinds, drawn on a grid of
  cells: ``bar`` (three cells in a line), ``tee``, ``ell`` and ``ess`` (the
  T, L and S tetrominoes), each randomly mirrored. On exactly one disk the
  marker stands upright (taller than wide); on every other disk (the decoys)
  it lies on its side (the same pattern turned a quarter), with a kind drawn
  uniformly, so decoys carry the class's own kind as often as any other.
* The class is the kind of the upright marker. The rule holds under the
  horizontal flips of training (a mirrored upright marker is upright and of
  the same kind) and under vertical flips.

Why no map that ignores the class can find the evidence: the upright and the
lying markers differ only by a quarter turn, sizes, colours, contrasts and
positions are drawn the same way for both, and the disk that carries the
upright one is chosen uniformly. Each marker lies at least a pixel inside its
flat-coloured disk, so the Sobel edge magnitude on a marker is the same for
either orientation (the Sobel pair is exchanged by a quarter turn), and a
noise map treats every pixel alike: in expectation such a map puts exactly
1 / ``objects_per_image`` of its mass on the markers on the evidence, which
`kerascam.evaluation.scores.decoys` measures.

Some evidence is faint or small, so that resolution matters and scores do not
saturate: each marker independently has 1-pixel cells (a 3x1 or 3x2 px
marker) with probability ``small_marker_fraction`` (else 3-pixel cells at
48x48, 27-36 px), and a colour only 24-40 RGB levels from its disk with
probability ``faint_marker_fraction`` (else at least ``min_contrast``); a
tenth each by default, chosen so that the models learn it at 48x48 within
a CPU budget (`kerascam.configs.markers`): with 2-pixel cells and a quarter
small and a quarter faint, the U-Net was still at chance after 2.5 epochs
(26.8 % after the demo's 4), where with these it leaves chance by then
(``benchmarks/recipe_curve.py --data`` tries a design).

Every image is drawn from its own seeded stream (seed, split, index), so any
image can be drawn again with one part left out: the validation split carries
``interventions``, the image re-rendered without each of its parts in turn,
from which `kerascam.evaluation.scores.intervention` measures what each part
does to a model's logit (FunnyBirds, Hesse et al. ICCV 2023: ground truth by
removing parts).

Features: ``image`` (uint8 HxWx3), ``label`` (int64), ``mask`` (the disk that
carries the evidence, marker included), ``evidence`` (the upright marker's
pixels), and for the validation split ``parts`` (uint8 HxW, see
`part_names`) and ``interventions`` (uint8 (P, H, W, 3), P = 2 x
``objects_per_image``: image p-1 is the image drawn without part p).

Build the picture with::

    python -m kerascam.data.markers --figure markers.png
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import pathlib
import time
import zipfile

import cv2
import numpy as np

from kerascam.data import synthetic
from kerascam.io import atomic_file

# Bump whenever the drawing or the set of arrays changes, so stale caches are not reused.
FORMAT_VERSION = 2

CLASS_NAMES: tuple[str, ...] = ("bar", "tee", "ell", "ess")
SPLITS = synthetic.SPLITS

# Cells (row, column) of each kind standing upright: three rows tall, one or
# two columns wide. Lying markers are these transposed.
KIND_CELLS = {
    "bar": ((0, 0), (1, 0), (2, 0)),
    "tee": ((0, 0), (1, 0), (2, 0), (1, 1)),
    "ell": ((0, 0), (1, 0), (2, 0), (2, 1)),
    "ess": ((0, 0), (1, 0), (1, 1), (2, 1)),
}

# Values of the ``parts`` map: 0 is the background.
EVIDENCE_PART = 1  # the upright marker
CARRIER_PART = 2  # the disk that carries it, its marker's pixels excluded
# Decoy k (1-based) has its marker at 2k+1 and its disk at 2k+2.

# Colour distance of a faint marker from its disk (RGB levels).
_FAINT_CONTRAST = (24.0, 40.0)


@dataclasses.dataclass(frozen=True)
class MarkersConfig:
    """Everything that determines the markers dataset; equal configs give equal bytes.

    Attributes:
        image_size: Height and width of the square images, at least 32.
        train_examples: Number of examples in the "train" split.
        validation_examples: Number of examples in the "validation" split.
        objects_per_image: Disks per image: one carries the evidence, the
            others are decoys; at least 2.
        seed: Seed of the generator; each split and image has its own stream.
        radius_fraction: Range of the disks' radius as a fraction of
            `image_size`; 6-9 px at 48x48, raised to the smallest disk
            that holds the largest marker (8-9 px with 3-pixel cells).
        cell_size: Side in pixels of a marker's cells, unless the marker is
            small (1 px); None for 3 px at 48x48, scaled with `image_size`
            (2 px at 32x32, 4 px at 64x64).
        small_marker_fraction: Probability that a marker has 1-pixel cells.
        faint_marker_fraction: Probability that a marker's colour is only
            24-40 levels from its disk's.
        background_gradient, background_noise, background_range,
        foreground_range, min_contrast: As in
            `kerascam.data.synthetic.ShapesConfig` (disks and markers are
            bright on a dark background; ``min_contrast`` is also the
            smallest distance of a marker that is not faint from its disk).
    """

    image_size: int = 48
    train_examples: int = 6000
    validation_examples: int = 1000
    objects_per_image: int = 3
    seed: int = 0
    radius_fraction: tuple[float, float] = (0.125, 0.1875)
    cell_size: int | None = None
    small_marker_fraction: float = 0.1
    faint_marker_fraction: float = 0.1
    background_gradient: float = 24.0
    background_noise: float = 4.0
    background_range: tuple[int, int] = (0, 96)
    foreground_range: tuple[int, int] = (112, 256)
    min_contrast: float = 96.0

    def __post_init__(self):
        for name in ("radius_fraction", "background_range", "foreground_range"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _check_config(self)

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASS_NAMES

    @property
    def num_classes(self) -> int:
        return len(CLASS_NAMES)

    @property
    def num_parts(self) -> int:
        """P: a marker and a disk per object."""
        return 2 * self.objects_per_image

    def num_examples(self, split: str) -> int:
        """Returns the number of examples of `split` ("train" or "validation")."""
        synthetic._check_split(split)
        return self.train_examples if split == "train" else self.validation_examples


def _check_config(config: MarkersConfig) -> None:
    if not synthetic._is_int(config.image_size) or config.image_size < 32:
        raise ValueError(f"image_size must be an integer >= 32. Received: image_size={config.image_size!r}")
    for name in ("train_examples", "validation_examples"):
        value = getattr(config, name)
        if not synthetic._is_int(value) or value <= 0:
            raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    if not synthetic._is_int(config.objects_per_image) or not 2 <= config.objects_per_image <= 4:
        raise ValueError("objects_per_image must be an integer from 2 to 4. "
                         f"Received: objects_per_image={config.objects_per_image!r}")
    if not synthetic._is_int(config.seed) or config.seed < 0:
        raise ValueError(f"seed must be a non-negative integer. Received: seed={config.seed!r}")
    synthetic._check_range("radius_fraction", config.radius_fraction, 0.1, integer=False)
    if config.radius_fraction[1] > 0.2:
        raise ValueError(f"radius_fraction must not exceed 0.2 (the disks must fit apart). "
                         f"Received: radius_fraction={config.radius_fraction!r}")
    if config.cell_size is not None and (not synthetic._is_int(config.cell_size) or config.cell_size < 1):
        raise ValueError(f"cell_size must be a positive integer or None. Received: cell_size={config.cell_size!r}")
    for name in ("small_marker_fraction", "faint_marker_fraction"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1]. Received: {name}={getattr(config, name)!r}")


def part_names(objects_per_image: int = 3) -> tuple[str, ...]:
    """Names of the parts 1..P of the ``parts`` map, in order.

    ``("evidence", "carrier", "decoy1_marker", "decoy1_disk", ...)``: the
    upright marker, the rest of the disk that carries it, then each decoy's
    marker and the rest of its disk.
    """
    names = ["evidence", "carrier"]
    for k in range(1, objects_per_image):
        names += [f"decoy{k}_marker", f"decoy{k}_disk"]
    return tuple(names)


@dataclasses.dataclass(frozen=True)
class Marker:
    """One marker: which pattern, how it is turned, where and in which colour."""

    kind: str
    upright: bool
    cells: tuple  # (row, column) of each cell as drawn (mirrored, turned)
    cell_size: int
    top_left: tuple  # (x, y) of the marker's box in the image
    colour: tuple


@dataclasses.dataclass(frozen=True)
class Disk:
    centre: tuple  # (x, y), integers
    radius: int
    colour: tuple
    marker: Marker


@dataclasses.dataclass(frozen=True)
class Scene:
    """One image before it is drawn: everything `render` needs, and nothing random."""

    background: np.ndarray  # (H, W, 3) uint8
    disks: tuple  # disks[0] carries the evidence; the rest are decoys


def marker_cells(kind: str, upright: bool, mirror_rows: bool, mirror_columns: bool) -> tuple:
    """Cells of a marker: the kind's upright cells, mirrored, then transposed if it lies."""
    cells = np.array(KIND_CELLS[kind])
    if mirror_rows:
        cells[:, 0] = cells[:, 0].max() - cells[:, 0]
    if mirror_columns:
        cells[:, 1] = cells[:, 1].max() - cells[:, 1]
    if not upright:
        cells = cells[:, ::-1]
    return tuple(map(tuple, cells.tolist()))


def rule_label(scene: Scene, omit=()) -> int:
    """The generator's rule: the class is the kind of the one upright marker.

    Args:
        scene: A `Scene`.
        omit: Part values left out (see `render`).

    Returns:
        The index of the upright marker's kind in `CLASS_NAMES`, or -1 when
        no marker (or more than one) stands upright: the image has no class.
    """
    upright = [d.marker.kind for i, d in enumerate(scene.disks) if d.marker.upright and 2 * i + 1 not in omit]
    return CLASS_NAMES.index(upright[0]) if len(upright) == 1 else -1


def _split_index(split):
    return synthetic._check_split(split)


def _image_rng(config: MarkersConfig, split: str, index: int) -> np.random.Generator:
    # One stream per image: any image can be drawn again alone.
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(_split_index(split), int(index))))


def labels(config: MarkersConfig, split: str) -> np.ndarray:
    """The labels of `split`: balanced up to one per class, then shuffled."""
    count = config.num_examples(split)
    values = np.arange(count, dtype=np.int64) % len(CLASS_NAMES)
    np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(_split_index(split), 2**31))).shuffle(values)
    return values


def _place_disks(rng, count, size, radius_range):
    """Integer centres and radii of `count` disks at least 3 px apart, inside the image."""
    low, high = radius_range
    for _ in range(100):
        radii = rng.integers(low, high + 1, size=count)
        centres = []
        for radius in radii:
            for _ in range(50):
                centre = rng.integers(radius + 1, size - radius - 1, size=2)
                if all(np.hypot(*(centre - c)) > radius + r + 3 for c, r in zip(centres, radii)):
                    centres.append(centre)
                    break
            else:
                break
        if len(centres) == count:
            return [tuple(int(v) for v in c) for c in centres], [int(r) for r in radii]
        high = max(low, high - 1)
    raise RuntimeError(f"Could not place {count} disks in {size}x{size} px")


def _faint_colour(rng, body):
    """A colour 24-40 RGB levels from `body` (the closest to 32 if none of a batch is)."""
    candidates = np.clip(np.asarray(body) + rng.integers(-40, 41, size=(32, 3)), 0, 255)
    distance = np.linalg.norm(candidates - np.asarray(body), axis=1)
    passing = np.flatnonzero((distance >= _FAINT_CONTRAST[0]) & (distance <= _FAINT_CONTRAST[1]))
    best = passing[0] if passing.size else int(np.argmin(np.abs(distance - 32.0)))
    return tuple(int(c) for c in candidates[best])


def _normal_cell(config):
    """The cell side of a marker that is not small: 3 px at 48x48, scaled with the image (at least 2)."""
    if config.cell_size is not None:
        return config.cell_size
    return max(2, round(3 * config.image_size / 48))


def _smallest_radius(config):
    """The smallest disk that holds the largest marker with a pixel of disk around it.

    The box of the largest marker, 3 x 2 cells, lies with its corners within
    radius - 1.5 of the centre (see `_draw_marker`); at an integer place its
    farthest corner is 3 / 2 cells + 0.5 px and 1 cell + 0.5 px away.
    """
    cell = _normal_cell(config)
    return math.ceil(math.hypot(1.5 * cell + 0.5, cell + 0.5) + 1.5)


def _draw_marker(rng, config, kind, upright, centre, radius, body, background_colour):
    """A marker of `kind` at a random place whose every pixel and neighbour lies in the disk."""
    cell = 1 if rng.uniform() < config.small_marker_fraction else _normal_cell(config)
    cells = marker_cells(kind, upright, bool(rng.integers(2)), bool(rng.integers(2)))
    rows = 1 + max(r for r, _ in cells)
    columns = 1 + max(c for _, c in cells)
    height, width = rows * cell, columns * cell
    # Every box pixel within radius - 1.5 of the centre: its 8 neighbours
    # (at most sqrt(2) further) are then inside the disk, so the edges on a
    # marker do not depend on where in the disk it is, nor on its turn.
    reach = radius - 1.5
    for _ in range(200):
        x0 = int(rng.integers(centre[0] - radius, centre[0] + radius - width + 2))
        y0 = int(rng.integers(centre[1] - radius, centre[1] + radius - height + 2))
        corners = [(x0, y0), (x0 + width - 1, y0), (x0, y0 + height - 1), (x0 + width - 1, y0 + height - 1)]
        if all(math.hypot(x - centre[0], y - centre[1]) <= reach for x, y in corners):
            break
    else:
        raise RuntimeError(f"Could not place a {width}x{height} px marker in a disk of radius {radius}")
    if rng.uniform() < config.faint_marker_fraction:
        colour = _faint_colour(rng, body)
    else:
        colour = synthetic._contrasting_colour(
            rng, [(body, config.min_contrast), (background_colour, config.min_contrast / 2)])
    return Marker(kind, upright, cells, cell, (x0, y0), colour)


def draw_scene(config: MarkersConfig, split: str, index: int, label: int | None = None) -> Scene:
    """Draws image `index` of `split`: the same scene for the same arguments, always.

    Args:
        config: A `MarkersConfig`.
        split: "train" or "validation".
        index: The image's index in the split.
        label: Its class; default the split's label of that index.
    """
    if label is None:
        label = int(labels(config, split)[index])
    rng = _image_rng(config, split, index)
    size = config.image_size
    background_colour = rng.integers(*config.background_range, size=3)
    background = synthetic._backgrounds(rng, background_colour[None], config)[0]
    radius_range = tuple(max(_smallest_radius(config), round(f * size)) for f in config.radius_fraction)
    centres, radii = _place_disks(rng, config.objects_per_image, size, radius_range)
    disks = []
    for i, (centre, radius) in enumerate(zip(centres, radii)):
        # Disk 0 carries the evidence; where it lies is random like every
        # other disk's, so carrying it says nothing about place or size.
        kind = CLASS_NAMES[label] if i == 0 else CLASS_NAMES[rng.integers(len(CLASS_NAMES))]
        body = synthetic._contrasting_colour(rng, [(background_colour, config.min_contrast)], config.foreground_range)
        marker = _draw_marker(rng, config, kind, i == 0, centre, radius, body, background_colour)
        disks.append(Disk(centre, radius, body, marker))
    return Scene(background, tuple(disks))


def _marker_layer(marker: Marker, shape) -> np.ndarray:
    layer = np.zeros(shape, bool)
    x0, y0 = marker.top_left
    for row, column in marker.cells:
        top, left = y0 + row * marker.cell_size, x0 + column * marker.cell_size
        layer[top:top + marker.cell_size, left:left + marker.cell_size] = True
    return layer


def render(scene: Scene, omit=()) -> tuple[np.ndarray, np.ndarray]:
    """Paints a scene, leaving out the parts in `omit`.

    A left-out disk shows the background under it (its marker, unless also
    left out, stays); a left-out marker shows its disk (or the background).
    Nothing else changes: the background, every other part and every colour
    come from the scene, not from a random stream.

    Args:
        scene: A `Scene`.
        omit: Part values (`part_names`, 1-based) to leave out.

    Returns:
        The image (H, W, 3) uint8 and the ``parts`` map (H, W) uint8 of the
        full scene (0: background, p: part p).
    """
    image = scene.background.copy()
    parts = np.zeros(image.shape[:2], np.uint8)
    disk_layer = np.zeros(image.shape[:2], np.uint8)
    for i, disk in enumerate(scene.disks):
        disk_layer.fill(0)
        cv2.circle(disk_layer, disk.centre, disk.radius, 1, thickness=-1, lineType=cv2.LINE_8)
        marker = _marker_layer(disk.marker, image.shape[:2])
        body = disk_layer.astype(bool) & ~marker
        parts[body] = 2 * i + 2
        parts[marker] = 2 * i + 1
        if 2 * i + 2 not in omit:
            image[body] = disk.colour
            if 2 * i + 1 in omit:
                image[marker] = disk.colour
        if 2 * i + 1 not in omit:
            image[marker] = disk.marker.colour
    return image, parts


def generate(config: MarkersConfig, split: str) -> dict[str, np.ndarray]:
    """Draws one split of the markers dataset.

    Returns:
        A dict with "image", "label", "mask", "evidence" (see the module
        docstring) and, for "validation", "parts" and "interventions".
    """
    count, size, num_parts = config.num_examples(split), config.image_size, config.num_parts
    label_array = labels(config, split)
    images = np.empty((count, size, size, 3), np.uint8)
    parts = np.empty((count, size, size), np.uint8)
    with_interventions = split == "validation"
    interventions = np.empty((count, num_parts, size, size, 3), np.uint8) if with_interventions else None
    for index in range(count):
        scene = draw_scene(config, split, index, int(label_array[index]))
        images[index], parts[index] = render(scene)
        if with_interventions:
            for part in range(1, num_parts + 1):
                interventions[index, part - 1] = render(scene, omit=(part,))[0]
    data = {
        "image": images,
        "label": label_array,
        "mask": np.isin(parts, (EVIDENCE_PART, CARRIER_PART)).view(np.uint8),
        "evidence": (parts == EVIDENCE_PART).view(np.uint8),
    }
    if with_interventions:
        data.update(parts=parts, interventions=interventions)
    return data


def cache_key(config: MarkersConfig) -> str:
    """A short hash of the config and `FORMAT_VERSION`: the cache file's identity."""
    payload = json.dumps({"format_version": FORMAT_VERSION, **dataclasses.asdict(config)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cache_path(config: MarkersConfig, split: str, cache_dir=None) -> pathlib.Path:
    """Where `load` keeps `split` of `config`."""
    _split_index(split)
    directory = pathlib.Path(cache_dir) if cache_dir is not None else synthetic.default_cache_dir()
    return directory / f"markers-{split}-{cache_key(config)}.npz"


def _expected_arrays(config, split):
    count, size = config.num_examples(split), config.image_size
    expected = {
        "image": ((count, size, size, 3), np.uint8),
        "label": ((count,), np.int64),
        "mask": ((count, size, size), np.uint8),
        "evidence": ((count, size, size), np.uint8),
    }
    if split == "validation":
        expected["parts"] = ((count, size, size), np.uint8)
        expected["interventions"] = ((count, config.num_parts, size, size, 3), np.uint8)
    return expected


def load(config: MarkersConfig, split: str, cache_dir=None) -> dict[str, np.ndarray]:
    """Returns `split`, generating it once and caching it (as `kerascam.data.synthetic.load`)."""
    path = cache_path(config, split, cache_dir)
    expected = _expected_arrays(config, split)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as archive:
                data = {name: archive[name] for name in expected}
            if all(data[n].shape == s and data[n].dtype == d for n, (s, d) in expected.items()):
                return data
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass
    data = generate(config, split)
    with atomic_file(path, "wb") as file:
        np.savez(file, **data)
    return data


def save_samples_figure(path, config: MarkersConfig = MarkersConfig(), count: int = 8) -> None:
    """Writes a PNG: `count` validation images, each above its parts (evidence in red, carrier in blue)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = generate(dataclasses.replace(config, validation_examples=count), "validation")
    figure = Figure(figsize=(1.3 * count, 2.8), dpi=100)
    FigureCanvasAgg(figure)
    grid = figure.subplots(2, count, squeeze=False)
    for i in range(count):
        overlay = np.zeros(data["parts"][i].shape + (3,))
        overlay[data["parts"][i] >= 3] = (0.5, 0.5, 0.5)
        overlay[data["parts"][i] == CARRIER_PART] = (0.2, 0.4, 1.0)
        overlay[data["parts"][i] == EVIDENCE_PART] = (1.0, 0.1, 0.1)
        grid[0, i].imshow(data["image"][i], interpolation="nearest")
        grid[0, i].set_title(CLASS_NAMES[data["label"][i]], fontsize=8)
        grid[1, i].imshow(overlay, interpolation="nearest")
    for axes in grid.ravel():
        axes.set_axis_off()
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9, wspace=0.08, hspace=0.1)
    with atomic_file(path, "wb") as file:
        figure.savefig(file, format="png")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Build the markers dataset or a picture of it.")
    parser.add_argument("--figure", help="write a PNG of samples and their parts to this path")
    parser.add_argument("--image-size", type=int, default=MarkersConfig.image_size)
    parser.add_argument("--seed", type=int, default=MarkersConfig.seed)
    args = parser.parse_args(argv)
    config = MarkersConfig(image_size=args.image_size, seed=args.seed)
    if args.figure:
        save_samples_figure(args.figure, config)
        print(f"Wrote {args.figure}")
        return
    for split in SPLITS:
        start = time.perf_counter()
        data = load(config, split)
        print(f"{split}: {len(data['label'])} examples in {time.perf_counter() - start:.1f} s, "
              f"cached at {cache_path(config, split)}")


if __name__ == "__main__":
    main()
