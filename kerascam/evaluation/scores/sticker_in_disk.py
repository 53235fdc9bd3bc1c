"""Sticker preference within its disk: does the map prefer the sticker to the rest of the disk?

``sticker_ratio`` (`fine_detail`) divides the map's share of mass on the
sticker by the sticker's share of the whole image, so a map that lights the
disk evenly and knows nothing of the sticker already scores 1 / (the disk's
share of the image), about 10 at 48 px. Here the reference is the disk that
carries the sticker (`kerascam.metrics.evidence_ratio_in_region`)::

    sticker_disk_ratio = (mass on the sticker / mass on its disk)
                         / (sticker pixels / disk pixels)

1 is no preference within the disk, whatever the map does elsewhere; above 1
the map is brighter on the sticker than on the rest of its disk. (The mean
on the sticker over the mean on the rest of the disk is r (1 - f) /
(1 - r f) for this ratio r and the sticker's share f of the disk.)

Its disk: the connected components (8-connected) of the ground-truth object
mask that hold a sticker pixel; a ``disk_sticker`` image with several disks
uses all the disks that carry one. Images without a sticker are not scored.
"""

import numpy as np
import scipy.ndimage

from kerascam import metrics
from kerascam.evaluation.scorer import Field, Scorer, register

_EIGHT_CONNECTED = np.ones((3, 3), bool)


def sticker_disks(masks, evidence):
    """The objects that carry evidence: bool (N, H, W), the components of
    each ground-truth mask that overlap the evidence mask."""
    masks = np.asarray(masks) > 0
    evidence = np.asarray(evidence) > 0
    disks = np.zeros(masks.shape, bool)
    for i, (mask, sticker) in enumerate(zip(masks, evidence)):
        if not sticker.any():
            continue
        components, _ = scipy.ndimage.label(mask | sticker, structure=_EIGHT_CONNECTED)
        carrying = np.unique(components[sticker])
        disks[i] = np.isin(components, carrying[carrying > 0])
    return disks


@register
class StickerInDisk(Scorer):
    name = "sticker_in_disk"
    description = "the map's preference for the sticker within its disk"
    fields = (
        Field("sticker_disk_ratio", "sticker within its disk: share of the disk's map mass on the sticker / the "
                                    "sticker's share of the disk (1: no preference)", percent=False, paired=True),
    )
    needs = ("ground_truth", "evidence")

    def score(self, batch, one):
        disks = sticker_disks(batch.masks, batch.evidence)
        ratio, status = metrics.evidence_ratio_in_region(one.maps, batch.evidence, disks, return_status=True)
        return {"sticker_disk_ratio": [None if s == metrics.EMPTY else r for r, s in zip(ratio, status)]}

    def chance(self, batch):
        has_evidence = batch.evidence.reshape(len(batch.ids), -1).any(axis=1)
        return {"sticker_disk_ratio": np.where(has_evidence, 1.0, np.nan)}
