"""One file per score; importing this package registers them, in table order.

A new score is a file here with a `kerascam.evaluation.scorer.Scorer`
subclass decorated with ``@register``, plus its line below. What several
scores share lives beside this package, in ``kerascam/evaluation/``:
``perturbation.py`` (pixel order, ties, the perturbed forward pass),
``curves.py`` (mean curves and their table), ``baselines.py`` (the noise
map and scores minus its score), ``randomize_weights.py`` (re-initialized
copies of a model) and ``score_figures.py`` (the figures).
"""

from kerascam.evaluation.scores import reference  # noqa: F401  (the paper's Table I)
from kerascam.evaluation.scores import ground_truth  # noqa: F401
from kerascam.evaluation.scores import pointing_zhang  # noqa: F401
from kerascam.evaluation.scores import fine_detail  # noqa: F401
from kerascam.evaluation.scores import sticker_in_disk  # noqa: F401
from kerascam.evaluation.scores import decoys  # noqa: F401  (the markers data's parts)
from kerascam.evaluation.scores import edges  # noqa: F401
from kerascam.evaluation.scores import faithfulness  # noqa: F401  (needs forward passes)
from kerascam.evaluation.scores import road  # noqa: F401
from kerascam.evaluation.scores import grid_pointing  # noqa: F401  (needs explanations of mosaics)
from kerascam.evaluation.scores import intervention  # noqa: F401  (forward passes of re-drawn images)
from kerascam.evaluation.scores import randomization  # noqa: F401
