"""The grid pointing game: a class-sensitive score whose chance level is exact.

Böhle et al. 2021 ("Convolutional Dynamic Alignment Networks", CVPR), Rao
et al. 2022 ("Towards Better Understanding Attribution Methods", CVPR) and
Arias-Duart et al. 2022 ("Focus!", AAAI) build 2x2 mosaics of images of four
different classes, explain one cell's class on the mosaic and ask how much
of the map lands in that cell. A map that knows nothing of the class (the
image's edges, noise, a uniform map, a randomized model) is the same map
whichever of the four classes is explained, so over the four its shares sum
to 1: chance is 0.25, unlike the localization scores, whose chance level is
the mask's share of the image and which an edge map can beat. Here one
class is explained per mosaic (that of the image the mosaic is built for,
in a cell drawn at random), so 0.25 is the expectation over mosaics: exact
for a uniform map on every mosaic, and exact on average for any class-blind
map when each image of a mosaic is equally likely to be the explained one,
i.e. when the classes are balanced (the shapes data are, by construction).

How the mosaics are made here (`plan_mosaics`, `make_mosaic`), the same for
every model so that the models are compared on the same inputs:

* one mosaic per scored image (the target): its cell (one of four) and three
  companions of three other classes (one image each, drawn from the same
  batch, true labels) are drawn with a generator seeded by ``SEED`` and the
  target's index in the split; an image whose batch holds fewer than four
  classes is undefined (NaN). The companions depend on the batch, so the
  mosaics change with ``batch_size`` and sharding (both enter the saved
  parts' identity);
* the mosaic has the model's input size: each image is downscaled to half
  its height and width (``cv2.INTER_AREA``, the box average) and the four
  fill the quadrants. A model whose head needs a fixed input size (VGG16's
  flatten) then runs unchanged, and all models see the same pixels; a
  mosaic of full-size images (2H x 2W) would not run on any saved model
  here without rebuilding it, as all four are saved with a fixed input
  shape (None, H, W, 3). The
  cost: objects are half their trained size (at 48 px the sticker becomes
  1.5-2 px), so the score is read as a comparison between models and
  methods on equal terms, not as their accuracy on the full-size images;
* the target's true class is explained on the mosaic.

Per image (`grid_scores`): ``grid_share``, the share of the map's mass
(the map as every score sees it, at the input size and min-max normalised,
`kerascam.cams`) in the target's cell, and ``grid_hit``, whether the target's
cell holds the most mass (ties between cells broken at random with a fixed
seed, `kerascam.metrics.random_argmax`). Chance is 0.25 for both (the
tables' chance row, what a uniform map scores).

The randomized model: the same two fields for the same mosaics and classes
explained by a fully re-initialized copy of the model
(`kerascam.evaluation.randomize_weights.RandomizedCopy.randomize_all`,
every layer drawn again from its initializer), with the same method, as the
``*_randomized`` fields beside the trained model's. A randomized model knows
no class, so these must sit at 0.25 within their CI; so must the ``edges``
and ``noise`` columns.
"""

import cv2
import numpy as np

from kerascam import metrics
from kerascam.evaluation.baselines import BASELINES
from kerascam.evaluation.scorer import Field, Scorer, register

SEED = 0
GRID = 2  # cells per side
CELLS = GRID * GRID
CHANCE = 1.0 / CELLS


def cell_slices(height, width):
    """The four cells of a (height, width) mosaic, in raster order: top-left,
    top-right, bottom-left, bottom-right, as ``(rows, cols)`` slices (the
    lower and right cells take the odd pixel of an odd side)."""
    rows = (slice(0, height // 2), slice(height // 2, height))
    cols = (slice(0, width // 2), slice(width // 2, width))
    return [(r, c) for r in rows for c in cols]


def make_mosaic(images, height, width):
    """Four images downscaled into the four cells of one (height, width) mosaic.

    Args:
        images: four arrays (h, w, 3) in raster order of the cells.
        height, width: the mosaic's size (the model's input size).

    Returns:
        An array (height, width, 3) of the images' dtype.
    """
    if len(images) != CELLS:
        raise ValueError(f"a 2x2 mosaic takes {CELLS} images. Received: {len(images)}")
    mosaic = np.empty((height, width, images[0].shape[-1]), dtype=images[0].dtype)
    for image, (rows, cols) in zip(images, cell_slices(height, width)):
        size = (cols.stop - cols.start, rows.stop - rows.start)  # cv2 takes (width, height)
        resized = cv2.resize(np.asarray(image), size, interpolation=cv2.INTER_AREA)
        mosaic[rows, cols] = resized.reshape(mosaic[rows, cols].shape)
    return mosaic


def plan_mosaics(ids, labels, seed=SEED):
    """Which images fill each target's mosaic, and where the target sits.

    Args:
        ids: int (n,), the images' indices in the split (seed the draws).
        labels: int (n,), their true classes.
        seed: base seed. Defaults to `SEED`.

    Returns:
        A list of n entries: None where the batch holds fewer than four
        classes, else ``(cell, rows)``: the target's cell (0-3) and the four
        batch rows in cell order (the target at ``rows[cell]``), four
        different classes.
    """
    ids, labels = np.asarray(ids), np.asarray(labels)
    plans = []
    for row, (image_id, label) in enumerate(zip(ids, labels)):
        others = np.unique(labels[labels != label])
        if len(others) < CELLS - 1:
            plans.append(None)
            continue
        rng = np.random.default_rng([int(seed), int(image_id)])
        classes = rng.choice(others, size=CELLS - 1, replace=False)
        companions = [int(rng.choice(np.flatnonzero(labels == c))) for c in classes]
        cell = int(rng.integers(CELLS))
        plans.append((cell, companions[:cell] + [row] + companions[cell:]))
    return plans


def cell_masses(maps):
    """The positive mass of each map in each cell: float64 (N, 4), raster order."""
    maps = np.asarray(maps, dtype=np.float64)
    positive = np.maximum(maps, 0.0)
    return np.stack([positive[:, r, c].sum(axis=(1, 2)) for r, c in cell_slices(*maps.shape[1:])], axis=1)


def grid_scores(maps, cells, seed=SEED):
    """The grid pointing game of maps explaining the class of cell ``cells``.

    Args:
        maps: (N, H, W) maps of the mosaics.
        cells: int (N,), the explained class's cell (0-3, raster order).
        seed: seed of the tie draw between cells of equal mass.

    Returns:
        ``(share, hit)``, float64 (N,) each: the share of the map's positive
        mass in the cell (0.25 for a uniform map, 1 for a map that lies in
        the cell), and 1.0 if that cell holds the most mass (ties between
        cells broken at random, `kerascam.metrics.random_argmax`), else 0.0.
        NaN where the map has no positive mass or a non-finite value.
    """
    masses = cell_masses(maps)
    cells = np.asarray(cells, dtype=np.int64)
    total = masses.sum(axis=1)
    share = np.full(len(masses), np.nan)
    hit = np.full(len(masses), np.nan)
    for i, (mass, cell) in enumerate(zip(masses, cells)):
        if not (np.isfinite(total[i]) and total[i] > 0):
            continue
        share[i] = mass[cell] / total[i]
        hit[i] = float(metrics.random_argmax(mass, seed) == cell)
    return share, hit


@register
class GridPointingGame(Scorer):
    """The grid pointing game on 2x2 mosaics (module docstring), trained and randomized model."""

    name = "grid_pointing"
    description = "grid pointing game: the explained class's cell of a 2x2 mosaic of four classes"
    fields = (
        Field("grid_share", "grid pointing game: share of the map's mass in the explained class's cell of a 2x2 "
                            "mosaic of four classes (chance 25 %)", paired=True),
        Field("grid_hit", "grid pointing game: the explained class's cell holds the most mass (chance 25 %)",
              digits=0),
        Field("grid_share_randomized", "grid pointing game, fully randomized model: share of the map's mass in "
                                       "the explained class's cell (must sit at chance, 25 %)"),
        Field("grid_hit_randomized", "grid pointing game, fully randomized model: the explained class's cell "
                                     "holds the most mass (must sit at chance, 25 %)", digits=0),
    )
    needs = ("model",)
    max_images = 200

    def __init__(self, config):
        super().__init__(config)
        self.max_images = getattr(config, "grid_pointing_images", type(self).max_images)
        self._copies = {}  # id(model) -> (model, randomized copy or None)
        self._plans = {}

    def settings(self):
        return {**super().settings(), "grid_pointing_seed": SEED,
                "grid_pointing_mosaic": "2x2 at the input size, each image at half its side"}

    def begin_batch(self, batch, explained):
        # The mosaics of the batch, once for every model x method.
        height, width = batch.images.shape[1:3]
        self._plans = {}
        for image_id, plan in zip(batch.ids, plan_mosaics(batch.ids, batch.labels)):
            if plan is None or (self.max_images is not None and image_id >= self.max_images):
                continue
            cell, rows = plan
            self._plans[int(image_id)] = (cell, make_mosaic([batch.images[r] for r in rows], height, width))

    def _randomized(self, model):
        """A fully randomized copy of ``model`` (built once), or None when it cannot be cloned."""
        from kerascam.evaluation.randomize_weights import RandomizedCopy

        entry = self._copies.get(id(model))
        if entry is None or entry[0] is not model:
            try:
                copy = RandomizedCopy(model)
                copy.randomize_all()
            except ValueError as error:
                print(f"score {self.name!r}: no randomized {model.name!r} ({error})", flush=True)
                copy = None
            entry = (model, copy)
            self._copies[id(model)] = entry
        return entry[1]

    def _skip_reason(self, model):
        outputs = model.output_shape[-1]
        if outputs is not None and outputs < CELLS:
            return f"it has {outputs} classes and a 2x2 mosaic needs {CELLS} different ones"
        return None

    def score(self, batch, one):
        n = len(batch.ids)
        reason = self._skip_reason(one.model)
        if reason:
            if (self.name, one.model_name) not in _TOLD:
                _TOLD.add((self.name, one.model_name))
                print(f"score {self.name!r} skipped for {one.model_name!r}: {reason}", flush=True)
            return {f.name: [None] * n for f in self.fields}
        values = {f.name: np.full(n, np.nan) for f in self.fields}
        rows = [i for i, image_id in enumerate(batch.ids) if int(image_id) in self._plans]
        if not rows:
            return values
        cells = np.array([self._plans[int(batch.ids[i])][0] for i in rows])
        mosaics = np.stack([self._plans[int(batch.ids[i])][1] for i in rows])
        classes = np.asarray(batch.labels)[rows]
        maps, _, status = one.explain(one.model, mosaics, classes)
        ok = np.asarray(status) == metrics.OK
        share, hit = grid_scores(maps, cells)
        values["grid_share"][rows] = np.where(ok, share, np.nan)
        values["grid_hit"][rows] = np.where(ok, hit, np.nan)
        if one.method in BASELINES:
            # A model-free map is the same map for the randomized model.
            values["grid_share_randomized"][rows] = values["grid_share"][rows]
            values["grid_hit_randomized"][rows] = values["grid_hit"][rows]
            return values
        copy = self._randomized(one.model)
        if copy is None:
            values["grid_share_randomized"] = values["grid_hit_randomized"] = [None] * n
            return values
        maps, _, status = one.explain(copy.model, mosaics, classes)
        ok = np.asarray(status) == metrics.OK
        share, hit = grid_scores(maps, cells)
        values["grid_share_randomized"][rows] = np.where(ok, share, np.nan)
        values["grid_hit_randomized"][rows] = np.where(ok, hit, np.nan)
        return values

    def chance(self, batch):
        defined = np.array([int(i) in self._plans for i in batch.ids])
        level = np.where(defined, CHANCE, np.nan)
        return {f.name: level for f in self.fields}

    def markdown(self, summary, models, methods):
        if "grid_share" not in summary:
            return []
        return ["Grid pointing game: one 2x2 mosaic per image (the image and three of other classes from its "
                "batch, each downscaled to half its side so the mosaic has the input size), the image's true "
                "class explained; chance is exactly 25 % for any map that knows nothing of the class.", ""]


_TOLD = set()  # (score, model) pairs already told that the score is skipped for the model
