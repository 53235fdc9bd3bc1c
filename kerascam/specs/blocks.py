"""How each model family's layers group into named blocks, for the randomization score.

Adebayo et al. 2018 ("Sanity Checks for Saliency Maps", NeurIPS) re-initialize
a network block by block from the logits down. A ``BlockLayout`` says, from the
layer names alone, which block a layer belongs to and where that block comes in
the cascade; ``kerascam.specs`` gives each model its layout and
``kerascam.evaluation.randomize_weights`` walks it. Kept free of Keras so that
the model registry imports without a backend.
"""

import dataclasses
import re
from typing import Callable, Optional


@dataclasses.dataclass(frozen=True)
class BlockLayout:
    """A family's block rule.

    Attributes:
        step: layer name -> ``(block name, sort key)`` (the cascade goes in
            ascending key, from the logits down), or None when the layer is
            not of this layout.
        complete: the set of block names -> whether every block of the layout
            is there.
        halves: optional, ``{block name: [layer names]}`` -> ``{"encoder":
            [...], "decoder": [...]}`` for an encoder-decoder (the U-Nets).
    """

    step: Callable
    complete: Callable
    halves: Optional[Callable] = None


def _levels(steps, prefix):
    return sorted(int(s[len(prefix):]) for s in steps if re.fullmatch(prefix + r"\d+", s))


def _unet_step(name):
    if name == "predictions":
        return "predictions", (0, 0)
    if name.startswith("bottleneck_"):
        return "bottleneck", (2, 0)
    match = re.match(r"(dec|enc)(\d+)_", name)
    if match is None:
        return None
    level = int(match.group(2))
    # The decoder is walked from its last level (dec1) back; the encoder from the deepest.
    return (f"dec{level}", (1, level)) if match.group(1) == "dec" else (f"enc{level}", (3, -level))


def _unet_complete(steps):
    enc, dec = _levels(steps, "enc"), _levels(steps, "dec")
    return "bottleneck" in steps and enc and enc == dec == list(range(1, len(enc) + 1))


def _unet_halves(blocks):
    # The encoder is the contracting path with the bottleneck (what the skips carry and
    # what feeds the first up-convolution); the head is in neither half.
    if not any(name.startswith("dec") for name in blocks):
        return None
    encoder = [layer for name, layers in blocks.items() if name.startswith("enc") or name == "bottleneck"
               for layer in layers]
    decoder = [layer for name, layers in blocks.items() if name.startswith("dec") for layer in layers]
    return {"encoder": encoder, "decoder": decoder}


def _resnet_step(name):
    if name == "predictions":
        return "predictions", (0, 0)
    match = re.match(r"conv(\d+)_", name)
    return None if match is None else (f"conv{match.group(1)}", (1, -int(match.group(1))))


def _resnet_complete(steps):
    return _levels(steps, "conv") == [1, 2, 3, 4, 5]


def _vgg_step(name):
    if name == "predictions":
        return "predictions", (0, 0)
    match = re.fullmatch(r"fc(\d+)", name)
    if match:
        return name, (1, -int(match.group(1)))
    match = re.match(r"block(\d+)_", name)
    return None if match is None else (f"block{match.group(1)}", (2, -int(match.group(1))))


def _vgg_complete(steps):
    return _levels(steps, "block") == [1, 2, 3, 4, 5]


# U-Nets: predictions, dec1 ... dec4, bottleneck, enc4 ... enc1.
UNET = BlockLayout(_unet_step, _unet_complete, _unet_halves)
# ResNet50: predictions, conv5 ... conv1.
RESNET = BlockLayout(_resnet_step, _resnet_complete)
# VGG16: predictions, fc2, fc1, block5 ... block1.
VGG = BlockLayout(_vgg_step, _vgg_complete)
