"""Training presets as plain data.

``python train.py --model unet`` uses ``demo``; ``--preset imagenet`` the
ILSVRC2012 recipe; the tests use ``smoke``. Each preset overrides a few fields
of ``TrainConfig``; command-line flags override the preset; ``for_model``
applies the preset's per-model settings last but one (flags win).
"""

import dataclasses
from typing import Optional

from kerascam.data.images import MAX_PIXELS


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved in ``run.json``).

    Attributes:
        model: One of ``kerascam.models.MODEL_NAMES``.
        dataset: ``"shapes"`` (the embedded dataset, no download),
            ``"imagenet2012"`` or ``"folder:PATH"`` (see ``kerascam.data``).
        data_dir: tensorflow-datasets' data folder (ImageNet's TFRecords).
        manual_dir: Folder holding ILSVRC2012_img_train.tar and
            ILSVRC2012_img_val.tar (default: TFDS' ``data_dir/downloads/manual``).
        image_size: Side of the square input.
        batch_size: Global batch size (split over the replicas).
        epochs: Passes over the training split.
        steps_per_epoch: Optional cap on the steps of one epoch.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9, Nesterov).
        learning_rate: Peak learning rate for ``reference_batch_size``
            images; the run uses ``effective_learning_rate``, scaled to the
            global ``batch_size`` by ``lr_scaling``.
        reference_batch_size: The batch size ``learning_rate`` was tuned for.
        lr_scaling: How the learning rate follows the global batch:
            ``"linear"`` (lr x batch / reference, Goyal et al. 2017: the SGD
            rule), ``"sqrt"`` (lr x sqrt(batch / reference), Hoffer et al.
            2017; for Adam) or ``"none"``.
        warmup_epochs: Linear warm-up before the cosine decay.
        weight_decay: Decoupled weight decay (0 disables it).
        label_smoothing: Label smoothing of the cross-entropy.
        unet_filters: U-Net filters at the first level (paper: 64).
        batch_norm: Batch normalization in the U-Nets.
        vgg_batch_norm: VGG16 with batch normalization (see
            ``kerascam.models.applications.build_vgg16_bn``).
        augment: Random horizontal flips of the training images.
        train_examples / validation_examples: Size of the embedded dataset.
        seed: Seeds the weights, the data order and the augmentation.
        weights: Initial weights: None, ``"imagenet"`` or a weights file.
        strategy: ``"auto"``, ``"default"``, ``"mirrored"`` or
            ``"multiworker"``.
        mixed_precision: None (float32), ``"mixed_float16"`` (GPUs; with
            dynamic loss scaling) or ``"mixed_bfloat16"`` (GPUs from Ampere
            on, TPUs, CPUs with AVX512-BF16 or AMX). Variables stay float32
            and the exported model is float32. Always a resolved value:
            ``train.py --mixed-precision auto`` (the default of the presets
            named in ``DEFAULT_MIXED_PRECISION``) picks one with
            ``kerascam.precision.resolve_mixed_precision`` before the config
            is built, so ``config.json`` and ``run.json`` record what ran.
        jit: Compile the forward and backward pass with XLA.
        low_resolution_epochs: The first this many epochs train on images
            downscaled to ``low_resolution_size`` (progressive resizing, see
            ``kerascam.progressive``); 0: every epoch at ``image_size``.
        low_resolution_size: The side of those epochs' images.
        max_pixels: ``folder:`` images of more pixels (width x height, read
            from their header) are skipped without being decoded, like
            unreadable files; 0 for no limit. Default: Pillow's limit,
            ``kerascam.data.images.MAX_PIXELS`` (89,478,485).
        checkpoint_every: Steps between checkpoints within an epoch (an
            epoch's end always writes one); 0: only at epoch ends; None: about
            every 10 minutes at the preset's expected speed (see
            ``kerascam.training.default_checkpoint_every``).
        target_accuracy: Stop at the first validation check (every quarter
            epoch) whose accuracy is at least this, in (0, 1]; None: off.
        cam_summaries: CAM overlays of this many fixed validation images
            written to TensorBoard after every epoch (0: none).
        saved_model: Export ``saved_model/`` beside ``model.keras`` (False:
            ``model.keras`` only; ``kerascam.export.export_saved_model``
            writes it later). Not an architecture field: a run may resume
            with either.
        model_overrides: Per-model field overrides, e.g. a smaller learning
            rate for VGG16, which has no batch normalization.
    """

    model: str = "unet"
    dataset: str = "shapes"
    data_dir: Optional[str] = None
    manual_dir: Optional[str] = None
    image_size: int = 64
    batch_size: int = 32
    epochs: int = 4
    steps_per_epoch: Optional[int] = None
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    reference_batch_size: int = 32
    lr_scaling: str = "sqrt"
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    unet_filters: int = 16
    batch_norm: bool = True
    vgg_batch_norm: bool = False
    augment: bool = True
    train_examples: int = 6000
    validation_examples: int = 1000
    seed: int = 0
    weights: Optional[str] = None
    strategy: str = "auto"
    mixed_precision: Optional[str] = None
    jit: bool = False
    low_resolution_epochs: int = 0
    low_resolution_size: Optional[int] = None
    max_pixels: int = MAX_PIXELS
    checkpoint_every: Optional[int] = None
    target_accuracy: Optional[float] = None
    cam_summaries: int = 0
    saved_model: bool = True
    model_overrides: dict = dataclasses.field(default_factory=dict)

    def for_model(self, model, **flags):
        """This config for ``model``: per-model overrides, then ``flags``."""
        fields = dict(self.model_overrides.get(model, {}))
        fields.update({k: v for k, v in flags.items() if v is not None})
        return dataclasses.replace(self, model=model, **fields)

    @property
    def effective_learning_rate(self):
        """``learning_rate`` scaled from ``reference_batch_size`` to ``batch_size``."""
        ratio = self.batch_size / self.reference_batch_size
        if self.lr_scaling == "linear":
            return self.learning_rate * ratio
        if self.lr_scaling == "sqrt":
            return self.learning_rate * ratio ** 0.5
        if self.lr_scaling == "none":
            return self.learning_rate
        raise ValueError(f"Unknown lr_scaling {self.lr_scaling!r}. Choose one of: {', '.join(LR_SCALINGS)}")

    def to_dict(self):
        return dataclasses.asdict(self)


def model_recipes(preset):
    """``{model: {field: value}}``: the ``TrainConfig`` fields each registered model's spec sets under ``preset``."""
    from kerascam.specs import SPECS

    return {name: dict(spec.recipes[preset]) for name, spec in SPECS.items() if preset in spec.recipes}


def model_precisions(preset):
    """``{model: request, "default": "none"}`` from the specs that pick a precision under ``preset``."""
    from kerascam.specs import SPECS

    return {**{name: spec.precision[preset] for name, spec in SPECS.items() if preset in spec.precision},
            "default": "none"}


LR_SCALINGS = ("linear", "sqrt", "none")
MIXED_PRECISION_POLICIES = ("mixed_float16", "mixed_bfloat16")


def demo():
    """The default: the embedded shapes dataset at 48x48, minutes on a laptop CPU.

    The budget (all four models in minutes on 2 CPU cores) sets the
    sizes: 48x48 images, 6,000 per epoch; the U-Net (a quarter of the paper's
    width, 16 filters at the first level) trains 4 epochs at 2e-3, the ablated
    U-Net 5 at 2e-3, ResNet50 6 and VGG16 4 (each schedule decays to zero over
    its own epochs). These are the shortest recipes tried that cleared 95 % on
    three seeds; the accuracies and times they reach are in
    ``docs/results.md`` and the recipes tried in ``benchmarks/README.md``
    (``recipe_curve.py``). VGG16 gets batch
    normalization: the plain
    keras.applications VGG16 stayed at chance (loss log 5) for every setting
    tried here within the budget (Glorot or He initialization, Adam 3e-5 to
    5e-4, SGD 0.01), and with batch normalization it needs 1e-4 (at 1e-3 it
    stayed at chance for 3 epochs). VGG16 and ResNet50 train in bfloat16 where the hardware
    has it (``DEFAULT_MIXED_PRECISION``).
    """
    return TrainConfig(
        image_size=48,
        epochs=5,
        # GradCAM++ overlays of 4 validation images in TensorBoard after every
        # epoch: a few seconds per model, to watch where it learns to look.
        cam_summaries=4,
        # Each model's recipe is in its spec (kerascam.specs, recipes["demo"]).
        model_overrides=model_recipes("demo"),
    )


def imagenet():
    """ILSVRC2012 at 224x224, 1000 classes: the paper's setting.

    SGD with Nesterov momentum 0.9, peak learning rate 0.1 per 256 images,
    scaled linearly to the global batch (Goyal et al. 2017: 0.4 for a batch
    of 1024), 5 epochs of linear warm-up,
    then cosine decay to zero; weight decay 1e-4; label smoothing 0.1; 90
    epochs. U-Nets at the paper's width (64 filters). VGG16 starts at 0.01 per
    256 images, since without batch normalization it does not survive 0.1.
    """
    return TrainConfig(
        dataset="imagenet2012",
        image_size=224,
        batch_size=256,
        epochs=90,
        optimizer="sgd",
        learning_rate=0.1,
        reference_batch_size=256,
        lr_scaling="linear",
        warmup_epochs=5,
        weight_decay=1e-4,
        label_smoothing=0.1,
        unet_filters=64,
        model_overrides=model_recipes("imagenet"),
    )


def paper224():
    """The paper's geometry on the embedded data: 224x224 images, U-Nets at 64 filters.

        python train.py --model all --preset paper224 --workdir runs-paper224
        python evaluate.py --cam all --workdir runs-paper224 --num-images 100

    At 224x224 ResNet50's last block is 7x7, as in the paper (the demo's 48x48
    gives 2x2), and the U-Nets have the paper's width. The demo's recipe
    otherwise (batch 32, AdamW 1e-3, the same epochs per model, VGG16 with
    batch normalization at 1e-4) on 3,000 training and 300 validation images,
    sized for one GPU. What a train step costs in FLOPs
    (``benchmarks/train_speed.py``) and what the four runs cost on a GPU and
    on a CPU, estimated from measured step rates, are in
    ``benchmarks/README.md`` (``train_speed.py``, ``gpu_check.sh``,
    ``backend_speed.py``); the run itself has not been made on a GPU yet.
    """
    # The demo's recipe (epochs and per-model overrides included) at the paper's geometry.
    return dataclasses.replace(
        demo(), image_size=224, unet_filters=64, train_examples=3000, validation_examples=300
    )


def markers():
    """The markers testbed (``kerascam.data.markers``) at 48x48: what ``--dataset markers`` trains with.

        python train.py --model all --dataset markers --workdir runs_markers
        python evaluate.py --cam all --workdir runs_markers

    The class is one small upright marker among lying decoys on equal disks,
    1-2 % of the image, so a classifier with a global-average-pooling head
    sees almost nothing of it at first: the U-Nets sit at chance for about
    2.5 epochs before they find the markers, then climb; the demo's 4-6
    epochs stop on the plateau. So each model trains longer, most on more
    images, than on the demo: its recipe, and why, is in its spec
    (``recipes["markers"]``, kerascam/specs). What each model reaches on
    it, per seed, is in docs/results.md, "The markers testbed". At 48x48
    the U-Nets' maps are 48x48, VGG16's 3x3 and ResNet50's 2x2.
    """
    return dataclasses.replace(demo(), dataset="markers", model_overrides=model_recipes("markers"))


def smoke():
    """A few tiny steps: what the tests run."""
    return TrainConfig(
        image_size=32,
        batch_size=8,
        reference_batch_size=8,
        epochs=1,
        steps_per_epoch=2,
        unet_filters=4,
        train_examples=40,
        validation_examples=16,
    )


PRESETS = {"demo": demo, "imagenet": imagenet, "smoke": smoke, "paper224": paper224, "markers": markers}
# The preset train.py starts from when --preset is not given, by --dataset: a
# dataset that needs a recipe of its own names its preset here; the rest
# take the demo's.
DATASET_PRESETS = {"markers": "markers"}
# What train.py's --mixed-precision is when not given, per preset (resolved by
# kerascam.precision): one request for every model, or a dict of requests by
# model ("default" for the rest; the demo's come from the models' specs,
# precision["demo"]). "auto" trains in bfloat16 where the hardware
# has it. The demo takes it for its two costliest models, VGG16 and ResNet50,
# whose steps it makes cheaper on this project's AVX512-BF16 CPU at no loss of
# accuracy; the U-Nets stay float32, because bfloat16 left the ablated twin
# short and the twins must train alike. The measurements behind this are in
# benchmarks/README.md (train_speed.py, recipe_curve.py) and docs/manual.md
# ("Precision"). Smoke stays float32 so that the tests compare runs bit for bit.
DEFAULT_MIXED_PRECISION = {
    "demo": model_precisions("demo"),
    "imagenet": "none",
    "smoke": "none",
    "paper224": "auto",
    "markers": model_precisions("markers"),
}


def default_mixed_precision(preset, model):
    """What ``--mixed-precision`` is for ``model`` under ``preset`` when the flag is not given."""
    value = DEFAULT_MIXED_PRECISION.get(preset, "none")
    if isinstance(value, dict):
        return value.get(model, value.get("default", "none"))
    return value


def preset_for(preset=None, dataset=None):
    """The name of the preset train.py starts from.

    Args:
        preset: ``--preset``; when given, it is the answer.
        dataset: ``--dataset``; without ``preset``, a dataset named in
            ``DATASET_PRESETS`` picks its own (``markers`` -> ``"markers"``).

    Returns:
        ``preset``, else the dataset's preset, else ``"demo"``.
    """
    if preset is not None:
        return preset
    return DATASET_PRESETS.get(dataset, "demo")


def get_preset(name):
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}. Choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()
