"""Progressive resizing: low-resolution epochs through a twin that shares the model's layers."""

import dataclasses
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerascam import configs, progressive
from kerascam.cli import run_cli, train_main
from kerascam.models import build_model
from kerascam.training import TrainingInterrupted, train

# Three epochs of two steps, the first two at 16x16 (the smoke images are 32x32);
# no SavedModel, which these tests are not about.
CONFIG = dataclasses.replace(
    configs.smoke(), model="unet", epochs=3, steps_per_epoch=2, low_resolution_epochs=2, low_resolution_size=16,
    saved_model=False,
)


@pytest.mark.parametrize("name", ["unet", "resnet50"])
def test_the_twin_shares_every_variable_and_computes_the_model_at_its_size(name):
    small, big = (16, 32) if name == "unet" else (32, 48)
    keras.utils.set_random_seed(0)
    model = build_model(name, big, 5, unet_filters=4)
    twin = progressive.resized_twin(model, small)
    assert twin.input_shape == (None, small, small, 3)
    assert [id(v) for v in twin.weights] == [id(v) for v in model.weights]
    # The twin is the same network: a model built at the small size with the same weights agrees.
    reference = build_model(name, small, 5, unet_filters=4)
    reference.set_weights(model.get_weights())
    images = np.random.default_rng(0).uniform(0, 255, (2, small, small, 3)).astype("float32")
    np.testing.assert_allclose(twin(images).numpy(), reference(images).numpy(), rtol=1e-4, atol=1e-4)
    # Training the twin trains the model.
    before = [v.numpy() for v in model.trainable_variables]
    optimizer = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(twin(images, training=True) ** 2)
    optimizer.apply_gradients(zip(tape.gradient(loss, twin.trainable_variables), twin.trainable_variables))
    unchanged = [v.path for v, b in zip(model.trainable_variables, before) if np.array_equal(v.numpy(), b)]
    assert unchanged == []


def test_a_flatten_whose_length_changes_is_refused_in_one_line():
    model = build_model("vgg16", 64, 5)  # block5 pools 64 -> 2x2, 32 -> 1x1: fc1 would get 512 instead of 2048
    with pytest.raises(ValueError, match=r"^vgg16 cannot train at 32x32 with its layers built at 64x64") as info:
        progressive.resized_twin(model, 32)
    assert "\n" not in str(info.value)
    progressive.resized_twin(model, 48)  # 64 and 48 both pool to 2x2 ("same" pools): allowed


def test_downscale_averages_and_keeps_the_other_features():
    images = np.zeros((2, 32, 32, 3), np.uint8)
    images[0] = 200
    images[1, :, :16] = 100  # left half 100, right half 0
    batches = tf.data.Dataset.from_tensors({"image": images, "label": np.array([3, 4])})
    (batch,) = list(progressive.downscale(batches, 16))
    small = batch["image"].numpy()
    assert small.shape == (2, 16, 16, 3) and small.dtype == np.float32
    np.testing.assert_allclose(small[0], 200.0, atol=1e-3)
    np.testing.assert_allclose(small[1, :, :7], 100.0, atol=1e-3)
    np.testing.assert_allclose(small[1, :, 9:], 0.0, atol=1e-3)
    assert abs(small[1].mean() - 50.0) < 0.5
    assert batch["label"].numpy().tolist() == [3, 4]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"low_resolution_epochs": 3}, r"must lie in \[0, epochs\)"),
        ({"low_resolution_size": 32}, "smaller than image_size 32"),
        ({"low_resolution_size": None}, "smaller than image_size 32"),
        ({"low_resolution_size": 24}, "low_resolution_size 24: .*multiple of 16"),
    ],
)
def test_settings_a_run_cannot_use_are_refused(tmp_path, fields, message):
    with pytest.raises(ValueError, match=message):
        train(dataclasses.replace(CONFIG, **fields), tmp_path, verbose=0)
    assert not (tmp_path / "unet").exists()


def test_bad_flags_are_one_line_and_exit_2(tmp_path, capsys):
    argv = ["--model", "unet", "--preset", "smoke", "--epochs", "2", "--low-res-epochs", "2", "--low-res-size", "16",
            "--workdir", str(tmp_path)]
    assert run_cli(train_main, argv, "train.py") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train.py: error: unet: low_resolution_epochs must lie in [0, epochs)")
    assert "\n" not in err


def _weights(run_dir):
    from kerascam.export import load_keras

    return load_keras(os.path.join(run_dir, "model.keras")).get_weights()


def _trainable_variables(prefix):
    """A checkpoint's trainable variables by name (the optimizer tracks the model's)."""
    reader = tf.train.load_checkpoint(str(prefix))
    names = [name for name, _ in tf.train.list_variables(str(prefix))
             if name.startswith("optimizer/_trainable_variables/")]
    return {name: reader.get_tensor(name) for name in names}


def test_low_resolution_epochs_train_at_their_size_and_resume_across_the_switch(tmp_path, monkeypatch, capsys):
    straight = train(CONFIG, tmp_path / "straight", verbose=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if " epoch " in line]
    assert [line.split(":")[0] for line in lines] == [
        "unet epoch 1/3 (16x16 images)", "unet epoch 2/3 (16x16 images)", "unet epoch 3/3"
    ]
    assert straight["epochs_completed"] == 3

    # Interrupted in the middle of the second low-resolution epoch (global step 3), then resumed.
    monkeypatch.setenv("KERASCAM_TEST_SIGNALS", "3:SIGTERM")
    with pytest.raises(TrainingInterrupted):
        train(CONFIG, tmp_path / "resumed", verbose=0)
    monkeypatch.delenv("KERASCAM_TEST_SIGNALS")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    # The low-resolution steps train the model itself: the one 16x16 step
    # between the epoch-end checkpoint (step 2) and the interrupt's (step 3)
    # moved every trainable variable.
    checkpoints = tmp_path / "resumed" / "unet" / "checkpoints"
    before, after = _trainable_variables(checkpoints / "ckpt-2"), _trainable_variables(checkpoints / "ckpt-3")
    assert before.keys() == after.keys() and len(before) > 10
    assert [name for name in before if np.array_equal(before[name], after[name])] == []

    train(CONFIG, tmp_path / "resumed", verbose=0)
    for a, b in zip(_weights(tmp_path / "resumed" / "unet"), _weights(tmp_path / "straight" / "unet"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_recipe_curve_reports_each_check_at_its_side(tmp_path):
    import importlib.util
    import json

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("recipe_curve", os.path.join(ROOT, "benchmarks", "recipe_curve.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "curve.json"
    module.main(["unet", "--preset", "smoke", "--set", "epochs=2", "--set", "low_resolution_epochs=1",
                 "--set", "low_resolution_size=16", "--checks", "2", "--json", str(out)])
    curve = json.loads(out.read_text())["curve"]
    assert [(p["epoch"], p["side"]) for p in curve] == [(0.5, 16), (1.0, 16), (1.5, 32), (2.0, 32)]
    assert all(0 <= p["val_accuracy"] <= 1 and p["loss"] > 0 for p in curve)
    seconds = [p["train_cpu_seconds"] for p in curve]
    assert seconds == sorted(seconds) and seconds[0] > 0
