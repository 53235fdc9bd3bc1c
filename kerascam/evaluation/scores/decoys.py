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
* ``decoy_object_share``: the same for whole disks: the map's mass on the
  disk that carries the evidence (its marker included) divided by its mass
  on all disks. A coarse map can find the right disk without resolving the
  marker; chance as above.
* ``decoy_first``: the marker with the highest mean map value is the
  evidence (a tie for the highest is a miss). Chance: 1 / N, what a map that
  picks a marker at random scores. I.i.d. noise is not such a map image by
  image: the mean over few pixels spreads more, so a 3-4 px marker among
  27-36 px ones is first more often (0.26-0.44 per image for three
  markers); it averages 1 / N because the generator draws the evidence's
  and the decoys' sizes alike (``benchmarks/decoy_chance.py`` computes the
  exact chance of a set of images: 0.333-0.335 on data seeds 0-2).

Markers are the odd values of the ``parts`` map (1: the evidence; 3, 5, ...:
the decoys'), and value 2k is the rest of the disk of marker 2k - 1.
"""

import numpy as np

from kerascam.evaluation.scorer import Field, Scorer, register


def marker_values(parts):
    """Per image, the part values of its markers present, evidence (1) first."""
    return [[v for v in np.unique(p) if v % 2 == 1] for p in np.asarray(parts)]


def evidence_among_markers(maps, parts):
    """The share of the markers' (and the disks') mass on the evidence, and whether it is the brightest marker.

    Args:
        maps: (n, H, W) non-negative maps.
        parts: (n, H, W) parts maps: 1 on the evidence marker, 3, 5, ... on
            the decoy markers, 2, 4, 6, ... on the rest of their disks, 0
            elsewhere.

    Returns:
        ``(share, object_share, first)``, float arrays (n,): ``share`` is
        the evidence marker's part of the map's mass on all markers and
        ``object_share`` the carrier disk's part of its mass on all disks
        (NaN where there is no such mass); ``first`` is 1.0 where the
        evidence has the strictly highest mean value of all markers, else
        0.0. All three NaN for an image without an evidence marker.
    """
    maps = np.asarray(maps, dtype=np.float64)
    parts = np.asarray(parts)
    if maps.shape != parts.shape or maps.ndim != 3:
        raise ValueError(f"maps and parts must be (n, H, W) of one shape. Received: {maps.shape} and {parts.shape}")
    share, object_share, first = (np.full(len(maps), np.nan) for _ in range(3))
    for i, values in enumerate(marker_values(parts)):
        if not values or values[0] != 1:
            continue
        masses = np.array([maps[i][parts[i] == v].sum() for v in values])
        bodies = np.array([maps[i][parts[i] == v + 1].sum() for v in values])
        means = masses / np.array([np.count_nonzero(parts[i] == v) for v in values])
        objects = masses + bodies
        share[i] = masses[0] / masses.sum() if masses.sum() > 0 else np.nan
        object_share[i] = objects[0] / objects.sum() if objects.sum() > 0 else np.nan
        first[i] = float(len(values) == 1 or means[0] > means[1:].max())
    return share, object_share, first


@register
class DecoyScore(Scorer):
    name = "decoys"
    description = "the map's preference for the evidence marker over the decoys' markers (markers data)"
    fields = (
        Field("decoy_share", "decoys: share of the map's mass on the markers that lies on the evidence "
                             "(chance: 1 / markers)", paired=True),
        Field("decoy_object_share", "decoys: share of the map's mass on the disks that lies on the disk carrying "
                                    "the evidence (chance: 1 / disks)", paired=True),
        Field("decoy_first", "decoys: the evidence is the marker of highest mean map value", digits=0),
    )
    needs = ("parts",)

    def score(self, batch, one):
        share, object_share, first = evidence_among_markers(one.maps, batch.parts)
        # Images without an evidence marker have nothing to score.
        scored = ~np.isnan(first)
        return {"decoy_share": [s if k else None for s, k in zip(share, scored)],
                "decoy_object_share": [s if k else None for s, k in zip(object_share, scored)],
                "decoy_first": [f if k else None for f, k in zip(first, scored)]}

    def chance(self, batch):
        uniform = np.ones(batch.parts.shape, np.float32)
        share, object_share, first = evidence_among_markers(uniform, batch.parts)
        markers = np.array([len(v) for v in marker_values(batch.parts)], np.float64)
        return {"decoy_share": share, "decoy_object_share": object_share,
                "decoy_first": np.where(np.isnan(first), np.nan, 1.0 / np.maximum(markers, 1))}
