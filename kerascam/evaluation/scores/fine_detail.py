"""Fine detail: does the map find the sticker? (the paper's Fig. 2 claim, measured)

In the embedded shapes data, ``disk_sticker`` differs from ``disk`` only by a
3-4 px patch, so the pixels that decide the class are the sticker's, which
the data marks as the image's evidence mask. For the images that have one:

* ``sticker_ratio``: the share of the map's mass on the sticker divided by
  the sticker's share of the image (`kerascam.metrics.evidence_ratio`): 1 is
  no preference, a uniform map's value; above 1 the map prefers the sticker;
* ``sticker_hit``: whether the map's maximum lies on the sticker
  (`kerascam.metrics.evidence_hit`, the pointing game's tie rule).

Images without evidence (every other class) are not scored.
"""

import numpy as np

from kerascam import metrics
from kerascam.evaluation.scorer import Field, Scorer, register


@register
class FineDetail(Scorer):
    name = "sticker"
    description = "the map's preference for the sticker of disk_sticker images"
    fields = (
        Field("sticker_ratio", "sticker: share of the map's mass on the sticker / the sticker's share of the "
                               "image (1: no preference)", percent=False, paired=True),
        Field("sticker_hit", "sticker: the map's maximum on the sticker", digits=0),
    )
    needs = ("evidence",)

    def score(self, batch, one):
        ratio = metrics.evidence_ratio(one.maps, batch.evidence)
        hits, status = metrics.evidence_hit(one.maps, batch.evidence)
        hits = np.where(status == metrics.OK, hits, np.nan)
        # Images without a sticker have nothing to score: None, not undefined.
        empty = status == metrics.EMPTY
        return {"sticker_ratio": [None if e else r for e, r in zip(empty, ratio)],
                "sticker_hit": [None if e else h for e, h in zip(empty, hits)]}

    def chance(self, batch):
        has_evidence = batch.evidence.reshape(len(batch.ids), -1).any(axis=1)
        return {"sticker_ratio": np.where(has_evidence, 1.0, np.nan)}
