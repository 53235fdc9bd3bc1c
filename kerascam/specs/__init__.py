"""One spec per model: everything kerascam knows about a model, in one registry.

``SPECS`` maps a model's name to its ``ModelSpec``; the CLI's choices
(``MODEL_NAMES``), ``build_model``, the CAM and fusion layers, the training
order of a process pool, the checkpoint interval, the preset recipes and
precision, the randomization score's blocks and the benchmarks' model lists
all read it. Adding a model is one ``register(ModelSpec(...))`` (see
docs/architecture.md, "A model"). Free of Keras: the builders import their
family's module when called, so that ``kerascam.configs`` stays light.
"""

import dataclasses
import re
from types import MappingProxyType
from typing import Callable, Mapping, Optional

from kerascam.specs import blocks


def _frozen(mapping):
    return MappingProxyType(dict(mapping))


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What kerascam knows about one model.

    Attributes:
        name: the model's name (``--model``), also the built model's ``name``.
        family: ``"unet"`` or ``"application"`` (keras.applications' layer
            names); the benchmarks that list the applications first sort by it.
        build: ``build(image_size, num_classes, *, weights, **options)`` ->
            a functional ``keras.Model`` named ``name`` from raw RGB pixels
            (0-255) to logits; ``options`` are ``build_model``'s
            (``unet_filters``, ``batch_norm``, ``vgg_batch_norm``), each
            builder taking those it needs.
        check_image_size: ``check_image_size(image_size)`` raises ValueError
            for a side the model cannot take.
        target_layers: CAM target layer candidates, in order: the first one
            the model has is its target.
        fusion_layers: ``fusion_layers(layer names)`` -> the layers to fuse,
            shallow to deep (None for a level the model lacks), or None when
            the model has no declared set.
        randomization_blocks: its ``kerascam.specs.blocks.BlockLayout`` for the
            randomization score, or None (full randomization only).
        recipes: per preset, the ``TrainConfig`` fields it overrides
            (``{"demo": {"epochs": 4, "learning_rate": 2e-3}}``).
        precision: per preset, its ``--mixed-precision`` default where the
            preset picks one by model (``{"demo": "auto"}``).
        images_per_second: expected training speed per dataset, at the side
            in ``kerascam.training.checkpoints.RATE_SIDES`` (where it was
            measured: see there).
    """

    name: str
    family: str
    build: Callable
    check_image_size: Callable
    target_layers: tuple = ()
    fusion_layers: Optional[Callable] = None
    randomization_blocks: Optional[blocks.BlockLayout] = None
    recipes: Mapping = dataclasses.field(default_factory=dict)
    precision: Mapping = dataclasses.field(default_factory=dict)
    images_per_second: Mapping = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        # Read-only copies, so that a spec stays what it was registered as.
        object.__setattr__(self, "recipes", _frozen({k: _frozen(v) for k, v in self.recipes.items()}))
        object.__setattr__(self, "precision", _frozen(self.precision))
        object.__setattr__(self, "images_per_second", _frozen(self.images_per_second))


SPECS = {}


def register(spec):
    """Adds ``spec`` to ``SPECS`` (after the models already there); returns it."""
    if spec.name in SPECS:
        raise ValueError(f"A model named {spec.name!r} is already registered")
    SPECS[spec.name] = spec
    return spec


def get_spec(name):
    """The spec of model ``name``; ValueError in one line for an unknown name."""
    if name not in SPECS:
        raise ValueError(f"Unknown model {name!r}. Choose one of: {', '.join(SPECS)}")
    return SPECS[name]


def applications_first(names):
    """``names`` with the keras.applications models first, each group in registry order."""
    return tuple(sorted(names, key=lambda name: SPECS[name].family != "application"))


def first_present(levels):
    """A ``fusion_layers`` rule from fixed levels, each a tuple of candidates (the first one present)."""
    def fusion_layers(names):
        return [next((candidate for candidate in level if candidate in names), None) for level in levels]
    return fusion_layers


# ---------------------------------------------------------------------------
# The paper's four models
# ---------------------------------------------------------------------------


def _no_imagenet(name, weights):
    if weights == "imagenet":
        raise ValueError(f"There are no ImageNet weights for {name}. Received: weights='imagenet'")


def _unet_builder(name):
    def build(image_size, num_classes, *, weights=None, unet_filters=64, batch_norm=True, **_):
        from kerascam.models import unet

        _no_imagenet(name, weights)
        model = unet.build_unet(image_size, num_classes, base_filters=unet_filters, batch_norm=batch_norm,
                                skip_connections=(name == "unet"))
        if weights is not None:
            model.load_weights(weights)
        return model
    return build


def _unet_check_image_size(image_size):
    from kerascam.models import unet

    unet.check_image_size(image_size)


_UNET_DECODER_OUTPUT = re.compile(r"dec(\d+)_relu2")


def _unet_fusion_layers(names):
    # The last activation of every decoder level, deepest (dec4, 1/8) to dec1 (full resolution).
    levels = sorted((int(match.group(1)) for match in map(_UNET_DECODER_OUTPUT.fullmatch, names) if match),
                    reverse=True)
    return [f"dec{level}_relu2" for level in levels]


def _resnet50_build(image_size, num_classes, *, weights=None, **_):
    from kerascam.models import applications

    return applications.build_application("resnet50", image_size, num_classes, weights=weights)


def _vgg16_build(image_size, num_classes, *, weights=None, vgg_batch_norm=False, **_):
    from kerascam.models import applications

    if not vgg_batch_norm:
        return applications.build_application("vgg16", image_size, num_classes, weights=weights)
    model = applications.build_vgg16_bn(image_size, num_classes)
    if weights == "imagenet":
        raise ValueError("There are no ImageNet weights for VGG16 with batch norm. Received: weights='imagenet'")
    if weights is not None:
        model.load_weights(weights)
    return model


def _application_size_check(name):
    def check_image_size(image_size):
        from kerascam.models import applications

        applications.check_image_size(name, image_size)
    return check_image_size


# Demo recipes: the shortest tried that cleared 95 % on three seeds (configs.demo).
# Markers recipes (configs.markers): the U-Nets and VGG16 6 epochs of 24,000
# images (on 12 epochs of 6,000 the U-Net ended at 71 % on one seed of three,
# the twin learned on one seed of three, VGG16 memorised them), the U-Nets at
# 2e-3; ResNet50 8 epochs of 24,000 (the one schedule tried on which it
# learned; 12 of 6,000, 3 of 24,000 and 3 of 24,000 at 96x96 stayed at
# chance). What each reaches is in docs/results.md, "The markers testbed".
# Speeds: "shapes" at 48x48 on this project's 2-core CPU, "imagenet2012" at 224x224
# on one H200 (where they come from: kerascam.training.checkpoints).
# The U-Net and its twin share one markers recipe, so that their maps are
# compared after the same training.
_UNETS_ON_MARKERS = {"epochs": 6, "learning_rate": 2e-3, "train_examples": 24000}
register(ModelSpec(
    name="unet", family="unet", build=_unet_builder("unet"), check_image_size=_unet_check_image_size,
    target_layers=("dec1_relu2",), fusion_layers=_unet_fusion_layers, randomization_blocks=blocks.UNET,
    recipes={"demo": {"epochs": 4, "learning_rate": 2e-3}, "markers": dict(_UNETS_ON_MARKERS)},
    images_per_second={"shapes": 204, "imagenet2012": 1300},
))
register(ModelSpec(
    name="unet_ablated", family="unet", build=_unet_builder("unet_ablated"), check_image_size=_unet_check_image_size,
    target_layers=("dec1_relu2",), fusion_layers=_unet_fusion_layers, randomization_blocks=blocks.UNET,
    recipes={"demo": {"epochs": 5, "learning_rate": 2e-3}, "markers": dict(_UNETS_ON_MARKERS)},
    # Not measured on shapes: the U-Net's rate.
    images_per_second={"shapes": 204, "imagenet2012": 1200},
))
register(ModelSpec(
    name="resnet50", family="application", build=_resnet50_build, check_image_size=_application_size_check("resnet50"),
    target_layers=("conv5_block3_out",),
    # The output of each of the four stages (strides 4, 8, 16, 32).
    fusion_layers=first_present((("conv2_block3_out",), ("conv3_block4_out",), ("conv4_block6_out",),
                                 ("conv5_block3_out",))),
    randomization_blocks=blocks.RESNET,
    recipes={"demo": {"epochs": 6}, "markers": {"epochs": 8, "train_examples": 24000}},
    precision={"demo": "auto", "markers": "auto"},
    images_per_second={"shapes": 67, "imagenet2012": 3000},
))
register(ModelSpec(
    name="vgg16", family="application", build=_vgg16_build, check_image_size=_application_size_check("vgg16"),
    # With batch norm, block5_conv3's activation comes after its BN layer.
    target_layers=("block5_relu3", "block5_conv3"),
    # The activation of the last convolution of each of the five blocks (strides 1
    # to 16), before the block's pooling: the last is block5_conv3, the target; the
    # paper's own VGG16 demo takes the pooled outputs, which would end at 1/32,
    # coarser than the target. keras.applications' convolutions apply their ReLU
    # themselves; with batch norm, the ReLU is its own layer after the BN.
    fusion_layers=first_present(tuple(
        (f"block{block}_relu{convs}", f"block{block}_conv{convs}")
        for block, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
    )),
    randomization_blocks=blocks.VGG,
    # Without batch normalization it does not survive ImageNet's 0.1 (configs.imagenet).
    recipes={"demo": {"vgg_batch_norm": True, "learning_rate": 1e-4, "epochs": 4},
             "markers": {"vgg_batch_norm": True, "learning_rate": 1e-4, "epochs": 6, "train_examples": 24000},
             "imagenet": {"learning_rate": 0.01}},
    precision={"demo": "auto", "markers": "auto"},
    images_per_second={"shapes": 39, "imagenet2012": 2000},
))

# The paper's four, in registry order (the CLI's, training --model all's and most benchmarks').
MODEL_NAMES = tuple(SPECS)
