"""train.py --jobs: the order the models start in."""

import dataclasses

from kerascam import configs
from kerascam.models import MODEL_NAMES
from kerascam.training.jobs import training_order


def test_the_slowest_models_start_first_and_a_new_model_is_not_refused():
    preset = configs.smoke()
    run_configs = [preset.for_model(name) for name in MODEL_NAMES]
    order = [c.model for c in training_order(run_configs)]
    assert order == ["vgg16", "resnet50", "unet", "unet_ablated"]  # 39, 67, 204, 204 images/s; ties: registry order
    # A model with no measured speed (here a renamed U-Net) counts as slow as
    # the slowest: it starts early, after vgg16 that comes before it in the list.
    new = dataclasses.replace(run_configs[0], model="convnext_tiny")
    order = [c.model for c in training_order([*run_configs, new])]
    assert order == ["vgg16", "convnext_tiny", "resnet50", "unet", "unet_ablated"]
