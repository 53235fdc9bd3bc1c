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

from kerascam import metrics
from kerascam.evaluation.baselines import edge_maps
from kerascam.evaluation.scorer import Field, Scorer, register


@register
class EdgeCorrelation(Scorer):
    name = "edge_correlation"
    description = "Spearman correlation of the map with the image's Sobel edges"
    fields = (
        Field("edge_spearman", "Spearman correlation of the map with the image's Sobel edge map "
                               "(1: the map is the image's edges)", percent=False),
    )

    def begin_batch(self, batch, explained):
        # Once per batch, not once per model x method: the images are the same.
        self._ids, self._edges = batch.ids, edge_maps(batch.images)

    def score(self, batch, one):
        same = np.array_equal(batch.ids, self._ids)
        edges = self._edges if same else edge_maps(batch.images)
        values = [metrics.rank_correlation(a, b) if ok == metrics.OK else np.nan for a, b, ok in zip(one.maps, edges, one.status)]
        return {"edge_spearman": values}
