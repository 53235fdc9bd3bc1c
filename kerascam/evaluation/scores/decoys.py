"""Evidence among decoys: does the map pick the marker that decides the class out of equal ones?

On the embedded ``markers`` data (`kerascam.data.markers`) every disk carries
a marker of the same size, colour and contrast distribution, and only the
upright one decides the class. A map that only reacts to contrast (the
image's edges), or to nothing (noise, a uniform map), cannot tell the markers
apart, so unlike the ``sticker`` ratio against the whole image, where edges
win, these scores put such maps at chance:

* ``decoy_share``: the map's mass on the evidence marker divided by its mass
  on all the markers (the evidence and every decoy's). A map blind to the
  class scores 1 / N in expectation (N markers, 3 by default); a uniform
  map scores the evidence's share of the markers' pixels (the chance row).
* ``decoy_first``: the marker with the highest mean map value is the
  evidence (a tie for the highest is a miss). Chance: 1 / N, what a map that
  picks a marker at random scores.

Markers are the odd values of the ``parts`` map (1: the evidence; 3, 5, ...:
the decoys').
"""

import numpy as np

from kerascam.evaluation.scorer import Field, Scorer, register


def marker_values(parts):
    """Per image, the part values of its markers present, evidence (1) first."""
    return [[v for v in np.unique(p) if v % 2 == 1] for p in np.asarray(parts)]


def evidence_among_markers(maps, parts):
    """The share of the markers' mass on the evidence, and whether it is the brightest marker.

    Args:
        maps: (n, H, W) non-negative maps.
        parts: (n, H, W) parts maps: 1 on the evidence marker, 3, 5, ... on
            the decoy markers, even values and 0 elsewhere.

    Returns:
        ``(share, first)``, float arrays (n,): ``share`` is NaN where the map
        has no mass on any marker; ``first`` is 1.0 where the evidence has
        the strictly highest mean value of all markers, else 0.0; both NaN
        for an image without an evidence marker.
    """
    maps = np.asarray(maps, dtype=np.float64)
    parts = np.asarray(parts)
    if maps.shape != parts.shape or maps.ndim != 3:
        raise ValueError(f"maps and parts must be (n, H, W) of one shape. Received: {maps.shape} and {parts.shape}")
    share = np.full(len(maps), np.nan)
    first = np.full(len(maps), np.nan)
    for i, values in enumerate(marker_values(parts)):
        if not values or values[0] != 1:
            continue
        masses = np.array([maps[i][parts[i] == v].sum() for v in values])
        means = masses / np.array([np.count_nonzero(parts[i] == v) for v in values])
        total = masses.sum()
        share[i] = masses[0] / total if total > 0 else np.nan
        first[i] = float(len(values) == 1 or means[0] > means[1:].max())
    return share, first


@register
class DecoyScore(Scorer):
    name = "decoys"
    description = "the map's preference for the evidence marker over the decoys' markers (markers data)"
    fields = (
        Field("decoy_share", "decoys: share of the map's mass on the markers that lies on the evidence "
                             "(chance: 1 / markers)", paired=True),
        Field("decoy_first", "decoys: the evidence is the marker of highest mean map value", digits=0),
    )
    needs = ("parts",)

    def score(self, batch, one):
        share, first = evidence_among_markers(one.maps, batch.parts)
        # Images without an evidence marker have nothing to score.
        return {"decoy_share": [None if np.isnan(f) else s for s, f in zip(share, first)],
                "decoy_first": [None if np.isnan(f) else f for f in first]}

    def chance(self, batch):
        uniform = np.ones(batch.parts.shape, np.float32)
        share, first = evidence_among_markers(uniform, batch.parts)
        markers = np.array([len(v) for v in marker_values(batch.parts)], np.float64)
        return {"decoy_share": share, "decoy_first": np.where(np.isnan(first), np.nan, 1.0 / np.maximum(markers, 1))}
