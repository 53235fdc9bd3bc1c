"""Scores against the dataset's ground-truth masks of the class objects.

* ``score_ground_truth``: the paper's s = sum(A * M) / sum(A) with M the
  ground-truth mask (the Score-CAM paper's energy-based pointing game;
  Quantus' relevance mass accuracy);
* ``pointing_hit``: whether the map's maximum lies inside the ground truth
  (every tied maximum must, `kerascam.metrics.pointing_game`).
"""

import numpy as np

from kerascam import metrics
from kerascam.evaluation.scorer import Field, Scorer, register


@register
class GroundTruthScore(Scorer):
    name = "ground_truth"
    description = "s against the ground-truth mask and the pointing game"
    fields = (
        Field("score_ground_truth", "s against the ground-truth mask (energy-based pointing game)", paired=True),
        Field("pointing_hit", "pointing game: the map's maximum inside the ground-truth mask", digits=0),
    )
    needs = ("ground_truth",)

    def score(self, batch, one):
        hits, status = metrics.pointing_game(one.maps, batch.masks)
        return {
            "score_ground_truth": metrics.localization_score(one.maps, batch.masks),
            "pointing_hit": np.where(status == metrics.OK, hits, np.nan),
        }

    def chance(self, batch):
        return {"score_ground_truth": (batch.masks > 0).reshape(len(batch.ids), -1).mean(axis=1)}
