"""The experiment: explain every trained model with every method and score the maps.

* `evaluate(EvalConfig(...))` runs it (``evaluate.py`` is its command line);
* scores are `Scorer`s in one registry, `SCORERS`, one file each under
  ``kerascam/evaluation/scores/``: the paper's s against the ResNet50 +
  GradCAM++ reference, s against the ground truth and the pointing game,
  the fine-detail (sticker) score, the evidence among decoys and the
  agreement with part interventions (the embedded ``markers`` data), the
  correlation with the image's edges, faithfulness by deletion and
  insertion, and the model-parameter randomization check;
* the table's columns are the CAM methods, their fused variants and maps
  that know nothing of the model (`kerascam.evaluation.maps`).
"""

from kerascam.evaluation import scores  # noqa: F401  (registers the scorers)
from kerascam.evaluation.config import EvalConfig
from kerascam.evaluation.experiment import check_num_classes, evaluate, find_models
from kerascam.evaluation.maps import available_columns, explain_batch
from kerascam.evaluation.parts import merge_shards
from kerascam.evaluation.scorer import SCORERS, Field, Scorer, available_scores, register
from kerascam.evaluation.tables import markdown

__all__ = [
    "EvalConfig",
    "Field",
    "SCORERS",
    "Scorer",
    "available_columns",
    "available_scores",
    "check_num_classes",
    "evaluate",
    "explain_batch",
    "find_models",
    "markdown",
    "merge_shards",
    "register",
]
