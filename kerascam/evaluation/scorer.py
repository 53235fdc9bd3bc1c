"""The seam every score goes through: `Scorer`, its `Field`s and one registry.

A score is one file under ``kerascam/evaluation/scores/`` holding a small
numeric core (a function of maps, masks or a model that a test can check by
hand) and a `Scorer` subclass registered with `register`. The experiment
(`kerascam.evaluation.experiment`) never names a score: records, the tables
(Markdown, CSV, JSON), the paired U-Net - ablated comparison, resuming and
shards all loop over `SCORERS` and the fields each scorer declares.

What a scorer declares:

* ``fields``: the record fields it writes, each a `Field` that says how it is
  aggregated (``"mean"``: mean with a 95 % Student-t interval, or a Wilson
  interval for a 0/1 field, a rate; ``"info"``: a string kept in the records only) and whether it enters the paired
  comparison.
* ``needs``: the data it needs beside the map: ``"ground_truth"`` (masks of
  the class objects), ``"evidence"`` (the pixels that decide the class),
  ``"parts"`` (the map of the parts of each image: the evidence, the object
  carrying it and the decoys; embedded ``markers`` only),
  ``"interventions"`` (each image re-drawn without each of its parts, from
  the dataset's generator; ``markers`` only), ``"reference"`` (the ResNet50
  + GradCAM++ maps of the paper's score) or ``"model"`` (forward passes or
  explanations of other models). A run whose
  data lacks what a scorer needs says so in one line, and that scorer's
  fields stay empty.
* ``max_images``: costly scorers score only the first images of the split
  (by index); the others get empty fields. The setting enters the table.

What it does, per batch:

* ``begin_batch(batch, explained)``: once per batch, before any model x
  method is scored, with every model x method's maps of that batch (e.g. the
  reference masks are made here).
* ``score(batch, one)``: one model x method: a dict field -> per-image values
  (NaN where undefined) and, optionally, an ``extra`` (curves, sums) that is
  saved with the results and handed back to ``summarize``.
* ``chance(batch)``: what a uniform map would score, per image, for the
  fields where that is known (the tables' chance row).
* ``summarize(extras)``, ``markdown(summary, models, methods)`` and
  ``figures(summary, folder, models, methods)``: the table sections and
  figures built from the saved extras of all batches.

A map whose status is not "ok" (all zero, constant, non-finite) is never
scored: the experiment blanks every numeric field of such a record, for
every scorer, and the tables count it apart.
"""

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

NEEDS = ("ground_truth", "evidence", "parts", "interventions", "reference", "model")


@dataclasses.dataclass(frozen=True)
class Field:
    """One record field written by a scorer.

    Attributes:
        name: Column name in ``records.csv`` and key in ``table.json``.
        description: Heading of its table in ``table.md``.
        kind: ``"mean"`` (mean with 95 % CI per model x method; a 0/1 field
            gives a rate) or ``"info"`` (a string kept in the records only).
        digits: Decimals kept in the records; ``0`` writes an integer (0/1).
        paired: Enters the paired U-Net - ablated U-Net comparison.
        percent: Shown as a percentage in ``table.md`` (else as a number).
    """

    name: str
    description: str
    kind: str = "mean"
    digits: int = 6
    paired: bool = False
    percent: bool = True

    def format(self, value):
        """The record's value: None where the image is not scored (it has
        nothing to score, e.g. no sticker, or lies past ``max_images``), ""
        where the score is undefined (NaN), else the number as text (an int
        for ``digits=0``). Both are written as an empty cell in
        ``records.csv``; only "" counts as undefined in the tables."""
        if value is None:
            return None
        if self.kind == "info":
            return str(value)
        if not np.isfinite(value):
            return ""
        if self.digits == 0:
            return int(value)
        return f"{float(value):.{self.digits}f}"


class Batch(NamedTuple):
    """One batch of the split, shared by every scorer.

    Attributes:
        ids: int64 (n,), the images' indices in the split.
        images: (n, H, W, 3) raw RGB pixels as the models take them.
        labels: int64 (n,).
        masks: (n, H, W) ground-truth masks of the class objects, or None.
        evidence: (n, H, W) pixels that decide the class (the sticker), or None.
        parts: (n, H, W) uint8 map of numbered parts (0: none), or None
            (`kerascam.data.markers.part_names`).
        interventions: (n, P, H, W, 3): image i drawn again without its part
            p + 1, or None.
    """

    ids: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    masks: Optional[np.ndarray] = None
    evidence: Optional[np.ndarray] = None
    parts: Optional[np.ndarray] = None
    interventions: Optional[np.ndarray] = None

    def take(self, rows):
        """The batch restricted to ``rows`` (indices or a boolean array)."""
        return Batch(*(None if value is None else value[rows] for value in self))


class Explained(NamedTuple):
    """One model x method on one batch.

    Attributes:
        maps: float32 (n, H, W) in [0, 1].
        native: float32 (n, h, w), the raw maps.
        status: (n,) `kerascam.metrics.map_status` of the native maps.
        classes: int64 (n,), the class each map explains.
        model_name: The model's run name (``unet``, ...).
        model: The Keras model (logits out).
        method: The column: a CAM method, a fused variant or a baseline.
        explain: ``explain(model, images, classes) -> (maps, native, status)``:
            the same method with the same settings on another model (a
            randomized copy) or other images.
    """

    maps: np.ndarray
    native: np.ndarray
    status: np.ndarray
    classes: np.ndarray
    model_name: str
    model: Any
    method: str
    explain: Callable

    def take(self, rows):
        """The same, restricted to ``rows``."""
        return self._replace(maps=self.maps[rows], native=self.native[rows], status=self.status[rows],
                             classes=self.classes[rows])


class ScoreResult(NamedTuple):
    """What `Scorer.score` returns: per-image values and an optional extra."""

    values: dict
    extra: Any = None


class Scorer:
    """A score of explanation maps, registered by name (see the module docstring).

    Subclasses set ``name``, ``description``, ``fields``, ``needs`` and
    ``max_images`` (class attributes), and implement ``score``.
    """

    name: str = None
    description: str = ""
    fields: tuple = ()
    needs: tuple = ()
    max_images: Optional[int] = None

    def __init__(self, config):
        """Args: config: the run's `EvalConfig` (thresholds, image counts, ...)."""
        self.config = config

    def settings(self):
        """Settings that change this scorer's numbers: they enter the saved
        parts' identity (a run never resumes from parts made otherwise) and
        the table's settings line."""
        return {f"{self.name}_images": self.max_images} if self.max_images else {}

    def begin_batch(self, batch, explained):
        """Called once per batch with ``{(model, method): Explained}``, before `score`."""

    def score(self, batch, one):
        """Per-image values of every field for one model x method.

        Args:
            batch: the `Batch` (restricted to the first ``max_images``).
            one: the `Explained` model x method, restricted likewise.

        Returns:
            A `ScoreResult` (or a plain dict of field -> values). Values are
            arrays or lists of length n: NaN where the score is undefined
            (counted apart in the tables), None where the image has nothing
            to score (not counted at all).
        """
        raise NotImplementedError

    def chance(self, batch):
        """What a uniform map scores per image: ``{field: float array (n,)}``."""
        return {}

    def summarize(self, extras):
        """Table sections from the extras, in saved order.

        Args:
            extras: list of ``(model, method, extra)`` for every batch.

        Returns:
            A dict of top-level keys to add to ``table.json``.
        """
        return {}

    def markdown(self, summary, models, methods):
        """Lines of ``table.md`` for what `summarize` returned."""
        return []

    def figures(self, summary, folder, models, methods):
        """Writes figures of what `summarize` returned into ``folder``."""


SCORERS = {}


def register(cls):
    """Class decorator: adds a `Scorer` subclass to `SCORERS` under its name."""
    if not (isinstance(cls, type) and issubclass(cls, Scorer)) or not cls.name:
        raise TypeError(f"register takes a Scorer subclass with a name. Received: {cls!r}")
    unknown = set(cls.needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"scorer {cls.name!r} needs unknown data {sorted(unknown)}; valid: {NEEDS}")
    names = [f.name for s in SCORERS.values() if s is not cls and s.name != cls.name for f in s.fields]
    clash = {f.name for f in cls.fields} & set(names)
    if clash:
        raise ValueError(f"scorer {cls.name!r} declares fields that another scorer writes: {sorted(clash)}")
    SCORERS[cls.name] = cls
    return cls


def available_scores():
    """The registered score names, in registry order."""
    return list(SCORERS)


def get_scorers(names, config):
    """The scorers ``names`` (or every one for None / "all"), built with ``config``."""
    if names is None or names == "all" or list(names) == ["all"]:
        names = available_scores()
    unknown = [n for n in names if n not in SCORERS]
    if unknown:
        raise ValueError(f"unknown score {unknown[0]!r}; valid scores: {', '.join(available_scores())}")
    return [SCORERS[n](config) for n in SCORERS if n in names]
