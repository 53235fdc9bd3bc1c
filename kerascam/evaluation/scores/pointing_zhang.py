"""The pointing game as Zhang et al. (2018) define it, for the object and the sticker.

Zhang et al., "Top-down Neural Attention by Excitation Backprop" (IJCV
2018): the map's single maximum is a hit when it lies within 15 px of the
ground truth at their 224 px inputs; here 15 px scaled by the image's
shorter side (`kerascam.metrics.zhang_tolerance`: 3.2 px at 48, 4.3 at 64).
Tied maxima: one is drawn at random, seeded by a fixed seed and the map
itself (`kerascam.metrics.random_argmax`), so a coarse map's plateau counts
as often as its share of the mask says, neither always (raster-order argmax
on a plateau corner) nor never (the strict rule of `pointing_game`, which
asks every tied maximum to lie inside the mask). Chosen over the plateau's
centroid because the tied maxima need not form one plateau: the centroid of
two separate peaks can lie on neither.

* ``pointing_hit_zhang``: against the ground-truth mask of the class objects,
  beside the strict ``pointing_hit`` (`ground_truth`);
* ``sticker_hit_zhang``: against the evidence mask (the sticker of
  ``disk_sticker`` images), beside the strict ``sticker_hit`` (`sticker`);
  images without a sticker are not scored.

Chance (the tables' chance row): a map that knows nothing hits with the
probability that a random pixel lies within the tolerance of the mask.
"""

import numpy as np

from kerascam import metrics
from kerascam.evaluation.scorer import Field, Scorer, register


def _hits(maps, mask):
    """Hits as floats: NaN for undefined maps, None where the mask is empty."""
    hits, status = metrics.tolerant_pointing_game(maps, mask)
    return [None if s == metrics.EMPTY else (float(h) if s == metrics.OK else np.nan) for h, s in zip(hits, status)]


@register
class ZhangPointingGame(Scorer):
    name = "pointing_zhang"
    description = "pointing game as Zhang et al. 2018: one maximum, 15 px at 224 of tolerance, ties at random"
    fields = (
        Field("pointing_hit_zhang", "pointing game (Zhang et al.: one maximum, within 15 px at 224 of the "
                                    "ground-truth mask, ties drawn at random)", digits=0),
        Field("sticker_hit_zhang", "sticker pointing game (Zhang et al.: one maximum, within 15 px at 224 of "
                                   "the sticker, ties drawn at random)", digits=0),
    )
    needs = ("ground_truth",)

    def settings(self):
        return {"pointing_tolerance": f"{metrics.ZHANG_TOLERANCE_PX:g} px at {metrics.ZHANG_IMAGE_SIZE}",
                "pointing_tie_seed": metrics.TIE_SEED}

    def score(self, batch, one):
        values = {"pointing_hit_zhang": _hits(one.maps, batch.masks)}
        if batch.evidence is None:
            values["sticker_hit_zhang"] = [None] * len(batch.ids)
        else:
            values["sticker_hit_zhang"] = _hits(one.maps, batch.evidence)
        return values

    def chance(self, batch):
        chance = {"pointing_hit_zhang": metrics.tolerant_pointing_chance(batch.masks > 0)}
        if batch.evidence is not None:
            chance["sticker_hit_zhang"] = metrics.tolerant_pointing_chance(batch.evidence > 0)
        return chance
