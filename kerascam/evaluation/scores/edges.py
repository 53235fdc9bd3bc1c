"""Does the map show the image's edges? A data-only sanity check.

The Spearman rank correlation between each map and the Sobel gradient
magnitude of its image (`kerascam.evaluation.baselines.edge_maps`). Adebayo
et al. 2018 ("Sanity Checks for Saliency Maps") found that some saliency
methods return an edge detector's output whatever the model; a U-Net's skip
connections could, in principle, carry the image's edges straight to the
last layer. A high correlation alone does not make a map wrong (objects have
edges), but read it beside the randomization check and the ``edges``
baseline, whose own correlation is 1.
"""

import numpy as np
import scipy.stats

from kerascam import metrics
from kerascam.evaluation.baselines import edge_maps
from kerascam.evaluation.scorer import Field, Scorer, register


def rank_correlation(a, b):
    """Spearman's rank correlation of each pair of maps (ties get average ranks).

    Args:
        a, b: arrays (N, H, W) of the same shape.

    Returns:
        float64 (N,): NaN where either map is constant or not finite.
    """
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"maps to correlate must have the same shape. Received: {a.shape} and {b.shape}")
    out = np.full(len(a), np.nan)
    for i, (x, y) in enumerate(zip(a, b)):
        if np.isfinite(x).all() and np.isfinite(y).all() and np.ptp(x) > 0 and np.ptp(y) > 0:
            rx, ry = scipy.stats.rankdata(x), scipy.stats.rankdata(y)
            out[i] = np.corrcoef(rx, ry)[0, 1]
    return out


@register
class EdgeCorrelation(Scorer):
    name = "edge_correlation"
    description = "Spearman correlation of the map with the image's Sobel edges"
    fields = (
        Field("edge_spearman", "Spearman correlation of the map with the image's Sobel edge map "
                               "(1: the map is the image's edges)", percent=False),
    )

    def score(self, batch, one):
        values = rank_correlation(one.maps, edge_maps(batch.images))
        return {"edge_spearman": np.where(one.status == metrics.OK, values, np.nan)}
