"""The settings of one evaluation."""

import dataclasses
from typing import Optional, Sequence


@dataclasses.dataclass
class EvalConfig:
    """Settings of one evaluation (saved in ``table.json``).

    Attributes:
        workdir: Folder of the trained runs (``WORKDIR/MODEL/model.keras``).
        models: Models to explain; None for every trained model found.
        methods: The table's columns: CAM methods
            (``kerascam.cams.available_methods()``), fused variants
            (``"layercam-fused"``: the method at the model's default layer set)
            and maps that know nothing of the model (``"noise"``,
            ``"edges"``, `kerascam.evaluation.baselines`). None for all of
            them (`kerascam.evaluation.maps.available_columns()`).
        scores: Scores to compute (``kerascam.evaluation.available_scores()``);
            None for all of them.
        num_images: Images of the split to explain (from its start).
        split: Dataset split.
        dataset: Dataset; None for the one the models were trained on.
        batch_size: Images per step.
        max_N: ScoreCAM channels (Faster-ScoreCAM); None for all. Default 16
            on every model, so one method runs everywhere: the demo U-Nets
            have 16 channels at their target layer, and all 2048 of
            ResNet50's would cost far more (docs/manual.md, "One ScoreCAM
            on every model"). Tables name it
            ``ScoreCAM.display_name(max_N)``: "Faster-ScoreCAM(16)".
        mask_threshold: Threshold of the normalised reference map.
        sweep_thresholds: Further thresholds reported in a sweep table.
        class_index: ``"predicted"`` or ``"true"``: which class is explained.
        num_figures: Images shown in the overview figure.
        boxes_dir: ImageNet: folder of the validation box XMLs, whose boxes
            become the ground-truth masks.
        max_pixels: ``folder:`` datasets: images of more pixels are skipped
            without being decoded; 0 for no limit; None for the limit the
            models were trained with (``TrainConfig.max_pixels``).
        backend: ``"kerascam"`` (the compiled engine) or ``"tf-keras-vis"``
            (the reference implementation); they give the same maps.
        shard, num_shards: This run explains the images whose index i (in
            the first ``num_images``) has ``i % num_shards == shard``; each
            shard saves its results, and once all exist the tables are built
            from them (the same tables as one unsharded run).
        chunk: Batches per saved part of the results; a killed run resumes
            after its last saved part.
        faithfulness_images: Deletion and insertion score the first this many
            images (each costs 2 (K + 1) forward passes per model x method).
        faithfulness_steps: K, the steps of the deletion and insertion curves.
        tie_draws: Deletion, insertion and ROAD break ties of the map at
            random (seeded by the image); a step that cuts a plateau of equal
            values is averaged over this many draws of the tie-break.
        road_images: ROAD scores the first this many images (each costs a
            sparse solve and a forward pass per fraction and order).
        randomization_images: The randomization check scores the first this
            many images (each costs one explanation per cascade step,
            independent block and U-Net half).
        grid_pointing_images: The grid pointing game scores the first this
            many images (each costs two explanations of a mosaic per model x
            method: the trained and the fully randomized model).

    The image counts' defaults fit ``evaluate.py --cam all`` in the budget
    measured in docs/results.md (``benchmarks/score_cost.py`` measures the
    cost per image of each score).
    """

    workdir: str = "runs"
    models: Optional[Sequence[str]] = None
    methods: Optional[Sequence[str]] = None
    scores: Optional[Sequence[str]] = None
    num_images: int = 200
    split: str = "validation"
    dataset: Optional[str] = None
    batch_size: int = 25
    max_N: Optional[int] = 16
    mask_threshold: float = 0.5
    sweep_thresholds: Sequence[float] = (0.3, 0.5, 0.7)
    class_index: str = "predicted"
    num_figures: int = 6
    boxes_dir: Optional[str] = None
    max_pixels: Optional[int] = None
    backend: str = "kerascam"
    shard: int = 0
    num_shards: int = 1
    chunk: int = 10
    faithfulness_images: int = 50
    faithfulness_steps: int = 16
    tie_draws: int = 3
    road_images: int = 100
    randomization_images: int = 25
    grid_pointing_images: int = 200
