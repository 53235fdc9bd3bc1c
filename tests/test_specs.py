"""One spec per model (kerascam.specs): the registry is what the rest of the project reads."""

import keras
import numpy as np
import pytest

from kerascam import configs
from kerascam.models import SPECS, ModelSpec, build_model, check_image_size, fusion_layer_names, target_layer_name
from kerascam.specs import MODEL_NAMES, applications_first, first_present, register
from kerascam.training.checkpoints import EXPECTED_IMAGES_PER_SECOND
from kerascam.training.jobs import training_order


def _tiny_build(image_size, num_classes, *, weights=None, **_):
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="tiny_conv1")(inputs)
    x = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="tiny_conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="predictions")(x), name="tiny")


def _tiny_size(image_size):
    if image_size % 2:
        raise ValueError(f"image_size must be even. Received: image_size={image_size}")


TINY = ModelSpec(
    name="tiny", family="mine", build=_tiny_build, check_image_size=_tiny_size,
    target_layers=("tiny_conv2",), fusion_layers=first_present((("tiny_conv1",), ("tiny_conv2",))),
    recipes={"demo": {"epochs": 2}}, images_per_second={"shapes": 10},
)


def test_a_model_registered_only_in_the_registry_is_built_explained_ordered_and_fused(monkeypatch):
    monkeypatch.setitem(SPECS, "tiny", TINY)
    model = build_model("tiny", image_size=8, num_classes=3)
    assert model.name == "tiny" and model.output_shape == (None, 3)
    with pytest.raises(ValueError, match="must be even"):
        check_image_size("tiny", 7)
    assert target_layer_name(model) == "tiny_conv2"
    assert fusion_layer_names(model) == ["tiny_conv1", "tiny_conv2"]
    # 10 images/s: slower than VGG16's 39, so it starts first; the rest keep the known order.
    runs = [configs.smoke().for_model(name) for name in (*MODEL_NAMES, "tiny")]
    assert [run.model for run in training_order(runs)] == ["tiny", "vgg16", "resnet50", "unet", "unet_ablated"]
    assert configs.demo().for_model("tiny").epochs == 2
    assert applications_first((*MODEL_NAMES, "tiny")) == ("resnet50", "vgg16", "unet", "unet_ablated", "tiny")
    # Unregistered again, the name is unknown.
    monkeypatch.delitem(SPECS, "tiny")
    with pytest.raises(ValueError, match="Unknown model 'tiny'"):
        build_model("tiny", image_size=8)


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register(SPECS["unet"])
    with pytest.raises((TypeError, AttributeError)):
        SPECS["unet"].recipes["demo"]["epochs"] = 99  # a spec stays what it was registered as


def test_the_views_read_from_the_specs_are_the_values_they_replaced():
    # Typed out as they were before the registry: the orders, the recipes and the speeds.
    assert MODEL_NAMES == ("unet", "unet_ablated", "resnet50", "vgg16")
    assert applications_first(MODEL_NAMES) == ("resnet50", "vgg16", "unet", "unet_ablated")
    assert configs.demo().model_overrides == {
        "unet": {"epochs": 4, "learning_rate": 2e-3},
        "unet_ablated": {"epochs": 5, "learning_rate": 2e-3},
        "resnet50": {"epochs": 6},
        "vgg16": {"vgg_batch_norm": True, "learning_rate": 1e-4, "epochs": 4},
    }
    assert configs.imagenet().model_overrides == {"vgg16": {"learning_rate": 0.01}}
    assert configs.DEFAULT_MIXED_PRECISION["demo"] == {"vgg16": "auto", "resnet50": "auto", "default": "none"}
    assert EXPECTED_IMAGES_PER_SECOND == {
        "shapes": (48, {"unet": 204, "unet_ablated": 204, "resnet50": 67, "vgg16": 39}),
        "imagenet2012": (224, {"unet": 1300, "unet_ablated": 1200, "resnet50": 3000, "vgg16": 2000}),
    }
    assert np.isclose(configs.demo().for_model("vgg16").learning_rate, 1e-4)


def test_the_markers_dataset_trains_with_the_markers_recipe(monkeypatch, tmp_path):
    from kerascam import precision, training
    from kerascam.cli import run_cli, train_main

    # No --preset: --dataset markers picks its own; an explicit preset wins; the rest keep the demo's.
    assert configs.preset_for(None, "markers") == "markers"
    assert [configs.preset_for(None, name) for name in (None, "shapes", "folder:/data")] == ["demo"] * 3
    assert configs.preset_for("demo", "markers") == "demo"
    expected = {  # model: (dataset, side, epochs, learning rate, VGG16 batch norm, training images)
        "unet": ("markers", 48, 6, 2e-3, False, 24000),
        "unet_ablated": ("markers", 48, 6, 2e-3, False, 24000),
        "resnet50": ("markers", 48, 8, 1e-3, False, 24000),
        "vgg16": ("markers", 48, 6, 1e-4, True, 24000),
    }
    assert [configs.default_mixed_precision("markers", m) for m in MODEL_NAMES] == ["none", "none", "auto", "auto"]
    # The shapes default is untouched.
    assert (configs.demo().dataset, configs.demo().for_model("unet").epochs) == ("shapes", 4)

    def fake_train(config, workdir, verbose=1):
        trained.append(config)
        return {"model": config.model, "val_accuracy": 0.5, "epochs_completed": 1, "wall_seconds": 1.0,
                "parameters": 1}

    trained = []
    monkeypatch.setattr(precision, "cpu_bfloat16_flags", lambda: ())
    monkeypatch.setattr(precision, "gpu_compute_capabilities", lambda: [])
    monkeypatch.setattr(training, "train", fake_train)
    assert run_cli(train_main, ["--model", "all", "--dataset", "markers", "--jobs", "1", "--quiet",
                                "--workdir", str(tmp_path)], "train.py") == 0
    assert {c.model: (c.dataset, c.image_size, c.epochs, c.effective_learning_rate, c.vgg_batch_norm,
                      c.train_examples) for c in trained} == expected
    # A flag still beats the recipe.
    trained.clear()
    assert run_cli(train_main, ["--model", "unet", "--dataset", "markers", "--epochs", "3", "--quiet",
                                "--workdir", str(tmp_path)], "train.py") == 0
    assert [(c.dataset, c.epochs, c.learning_rate) for c in trained] == [("markers", 3, 2e-3)]
