import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, run_python
from kerascam import configs
from kerascam.data import load_split, pipeline
from kerascam.training import TrainingError, train

SMOKE = configs.smoke()


def read_history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke U-Net trained for its one epoch, the start of several tests: each takes a copy."""
    path = tmp_path_factory.mktemp("smoke-run")
    train(dataclasses.replace(SMOKE, model="unet"), path, verbose=0)
    return path


def copy_of(run, tmp_path):
    """A workdir of the test's own holding a copy of ``run``'s models (checkpoints name their files relatively)."""
    import shutil

    shutil.copytree(run, tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_a_few_steps_lower_the_loss(tmp_path):
    config = dataclasses.replace(
        SMOKE, model="unet", epochs=8, steps_per_epoch=None, train_examples=16, batch_size=8,
        learning_rate=1e-2, augment=False, saved_model=False,
    )
    summary = train(config, tmp_path, verbose=0)
    rows = read_history(tmp_path / "unet")
    losses = [float(r["loss"]) for r in rows]
    assert [int(r["epoch"]) for r in rows] == list(range(8))
    assert losses[-1] < 0.9 * losses[0], losses
    assert summary["epochs_completed"] == 8
    saved = json.loads((tmp_path / "unet" / "run.json").read_text())
    assert saved["val_accuracy"] == summary["val_accuracy"]
    assert saved["config"]["learning_rate"] == 1e-2
    assert saved["wall_seconds"] > 0
    assert saved["backend"] == "tensorflow" and "tensorflow" in saved["versions"]
    # The SavedModel: test_keras_file_and_saved_model_reload_in_a_fresh_process.
    for name in ("model.keras", "checkpoints/checkpoint", "logs"):
        assert (tmp_path / "unet" / name).exists(), name


def test_non_finite_loss_stops_and_keeps_the_checkpoint(smoke_run, tmp_path):
    good = dataclasses.replace(SMOKE, model="unet", epochs=1)
    copy_of(smoke_run, tmp_path)
    checkpoint = tf.train.latest_checkpoint(str(tmp_path / "unet" / "checkpoints"))
    bad = dataclasses.replace(good, epochs=2, learning_rate=1e30)
    with pytest.raises(TrainingError, match="loss became (nan|inf)"):
        train(bad, tmp_path, verbose=0)
    assert tf.train.latest_checkpoint(str(tmp_path / "unet" / "checkpoints")) == checkpoint


def test_incompatible_workdir_is_refused(smoke_run, tmp_path):
    copy_of(smoke_run, tmp_path)
    with pytest.raises(TrainingError, match="image_size 32 -> 64"):
        train(dataclasses.replace(SMOKE, model="unet", image_size=64), tmp_path, verbose=0)


def test_no_saved_model_writes_model_keras_only_and_drops_an_export_of_other_weights(smoke_run, tmp_path):
    from kerascam.cli import run_cli, train_main
    from kerascam.export import load_keras
    from kerascam.training.record import SAVED_MODEL_NOT_ASKED

    copy_of(smoke_run, tmp_path)
    run_dir = tmp_path / "unet"
    assert (run_dir / "saved_model" / "saved_model.pb").exists()
    before = load_keras(str(run_dir / "model.keras")).get_weights()
    # The finished run again: nothing to train, and its SavedModel holds these
    # weights: kept, even with its files dated before the checkpoints (a copy that
    # reset the times), since the weights decide and not the times.
    for path in (run_dir / "saved_model").rglob("*"):
        os.utime(path, (0, 0))
    assert run_cli(train_main, ["--model", "unet", "--preset", "smoke", "--no-saved-model", "--quiet",
                                "--workdir", str(tmp_path)], "train.py") == 0
    assert (run_dir / "saved_model" / "saved_model.pb").exists()
    # One more epoch on the smoke run: its SavedModel would hold the first epoch's weights.
    assert run_cli(train_main, ["--model", "unet", "--preset", "smoke", "--epochs", "2", "--no-saved-model", "--quiet",
                                "--workdir", str(tmp_path)], "train.py") == 0
    after = load_keras(str(run_dir / "model.keras")).get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))  # trained on, re-exported
    assert not (run_dir / "saved_model").exists()
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["epochs_completed"] == 2 and summary["config"]["saved_model"] is False
    assert summary["saved_model_skipped"] == SAVED_MODEL_NOT_ASKED
    assert "saved_model_skipped" not in json.loads((smoke_run / "unet" / "run.json").read_text())


def test_without_tensorflow_an_export_older_than_the_newest_checkpoint_is_stale(tmp_path, monkeypatch):
    """Where the export's variables cannot be read (no TensorFlow), file times decide."""
    from kerascam import export
    from kerascam.training import record

    monkeypatch.setattr(export, "saved_model_holds", lambda model, path: None)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt-1.index").write_bytes(b"")
    saved = tmp_path / "saved_model"
    assert not record._stale_export(None, str(saved), str(tmp_path))  # no export: nothing to remove
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"")
    os.utime(saved / "saved_model.pb", (1000, 1000))
    os.utime(tmp_path / "checkpoints" / "ckpt-1.index", (2000, 2000))
    assert record._stale_export(None, str(saved), str(tmp_path))
    os.utime(saved / "saved_model.pb", (3000, 3000))
    assert not record._stale_export(None, str(saved), str(tmp_path))
    monkeypatch.setattr(export, "saved_model_holds", lambda model, path: False)  # readable: the weights decide
    assert record._stale_export(None, str(saved), str(tmp_path))


def test_training_batches_are_fixed_by_seed_and_epoch():
    examples = load_split(SMOKE, "train").examples
    first = lambda **kw: next(iter(pipeline.training_batches(examples, 8, **kw)))  # noqa: E731
    a, b = first(epoch=0, seed=1), first(epoch=0, seed=1)
    np.testing.assert_array_equal(a["image"], b["image"])
    c = first(epoch=1, seed=1)
    assert not np.array_equal(a["label"], c["label"]) or not np.array_equal(a["image"], c["image"])


def test_random_flip_eager_equals_dataset_map():
    example = {"image": tf.cast(tf.reshape(tf.range(2 * 3 * 3), (2, 3, 3)), tf.uint8), "mask": tf.eye(2, 3, dtype=tf.uint8)}
    seeds = [tf.constant([s, 0], tf.int64) for s in range(8)]
    eager = [pipeline.random_flip(example, s) for s in seeds]
    mapped = list(tf.data.Dataset.from_tensor_slices(tf.stack(seeds)).map(lambda s: pipeline.random_flip(example, s)))
    flipped = 0
    for e, m in zip(eager, mapped):
        np.testing.assert_array_equal(e["image"], m["image"])
        np.testing.assert_array_equal(e["mask"], m["mask"])
        is_flipped = np.array_equal(e["image"], example["image"].numpy()[:, ::-1])
        assert is_flipped == np.array_equal(e["mask"], example["mask"].numpy()[:, ::-1])
        flipped += is_flipped
    assert 0 < flipped < 8  # both outcomes occur


TRAIN_CMD = ["train.py", "--model", "unet", "--preset", "smoke", "--epochs", "3", "--steps-per-epoch", "3",
             "--no-saved-model"]


def _final_weights(run_dir):
    from kerascam.export import load_keras

    return load_keras(os.path.join(run_dir, "model.keras")).get_weights()


def test_killed_run_resumes_from_its_checkpoint(tmp_path, capsys):
    from kerascam.cli import run_cli, train_main

    killed, straight = tmp_path / "killed", tmp_path / "straight"
    process = subprocess.Popen(
        [sys.executable, *TRAIN_CMD, "--workdir", str(killed)], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    # TF writes the checkpoint's data and index first and then, atomically, the
    # "checkpoint" state file that names it: only then is epoch 1 committed. A
    # kill between the two leaves an uncommitted ckpt-3 that a resume rightly
    # ignores, so wait for the state file.
    state = killed / "unet" / "checkpoints" / "checkpoint"
    deadline = time.time() + 120
    while not state.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # mid-run, at whatever point it has reached
    process.wait()
    assert state.exists(), "the run never committed its first checkpoint"
    assert not (killed / "unet" / "model.keras").exists()

    # The same command resumes it (here in this process: the kill needed a child, the resume does not).
    assert run_cli(train_main, [*TRAIN_CMD[1:], "--workdir", str(killed)], "train.py") == 0
    out = capsys.readouterr().out
    assert "unet: resuming from" in out and "(epoch 0)" not in out, out
    assert [int(r["epoch"]) for r in read_history(killed / "unet")] == [0, 1, 2]

    # The run never interrupted, in this process (the config TRAIN_CMD gives):
    # same seed, same per-epoch data order and flips, so the same weights
    # (float round-off of threaded CPU kernels is the only difference allowed).
    train(dataclasses.replace(SMOKE, model="unet", epochs=3, steps_per_epoch=3, saved_model=False), straight, verbose=0)
    for a, b in zip(_final_weights(killed / "unet"), _final_weights(straight / "unet")):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


RELOAD = r"""
import sys, numpy as np, kerascam, tensorflow as tf
from kerascam.export import load_keras
run_dir, images_path, out = sys.argv[1:]
images = np.load(images_path)
keras_logits = load_keras(run_dir + "/model.keras")(images.astype("float32")).numpy()
sm = tf.saved_model.load(run_dir + "/saved_model")
float_logits = sm.serve(tf.constant(images, tf.float32))["logits"].numpy()
uint8_logits = sm.serve_uint8(tf.constant(images, tf.uint8))["logits"].numpy()
default = sm.signatures["serving_default"](images=tf.constant(images, tf.float32))
default_logits = default["logits"].numpy()
np.savez(out, keras=keras_logits, float=float_logits, uint8=uint8_logits, default=default_logits)
"""


def test_keras_file_and_saved_model_reload_in_a_fresh_process(smoke_run, tmp_path):
    copy_of(smoke_run, tmp_path)
    from kerascam.export import load_keras

    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("uint8")
    np.save(tmp_path / "images.npy", images)
    expected = load_keras(str(tmp_path / "unet" / "model.keras"))(images.astype("float32")).numpy()
    result = run_python(["-c", RELOAD, str(tmp_path / "unet"), str(tmp_path / "images.npy"), str(tmp_path / "out.npz")])
    assert result.returncode == 0, result.stderr
    logits = np.load(tmp_path / "out.npz")
    assert np.ptp(expected) > 0
    for key in ("keras", "float", "uint8", "default"):
        np.testing.assert_allclose(logits[key], expected, rtol=1e-5, atol=1e-5, err_msg=key)


MIRRORED = r"""
import dataclasses, sys, numpy as np, kerascam, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from kerascam import configs
from kerascam.export import load_keras
from kerascam.training import make_strategy, train
workdir = sys.argv[1]
# No batch norm: its statistics are per replica, which would make the two runs
# differ by design rather than by a bug.
config = dataclasses.replace(configs.smoke(), model="unet", batch_norm=False, epochs=2, steps_per_epoch=3, augment=True,
                             saved_model=False)
mirrored = make_strategy("mirrored", ["/cpu:0", "/cpu:1"])
a = train(config, workdir + "/mirrored", strategy=mirrored, verbose=0)
b = train(config, workdir + "/single", strategy=make_strategy("default"), verbose=0)
assert a["replicas"] == 2 and b["replicas"] == 1, (a["replicas"], b["replicas"])
wa = load_keras(workdir + "/mirrored/unet/model.keras").get_weights()
wb = load_keras(workdir + "/single/unet/model.keras").get_weights()
diff = max(float(np.max(np.abs(x - y))) for x, y in zip(wa, wb))
print("max weight difference", diff)
assert diff < 1e-4, diff
# It trained: train() seeds the initialization with config.seed, so the same
# seed rebuilds the starting weights, and they must have moved.
import keras
from kerascam.models import build_model
keras.utils.set_random_seed(config.seed)
initial = build_model("unet", config.image_size, 5, unet_filters=config.unet_filters, batch_norm=False).get_weights()
moved = max(float(np.max(np.abs(x - y))) for x, y in zip(wa, initial))
print("largest change from initialization", moved)
assert moved > 1e-3, moved
"""


def test_mirrored_strategy_on_two_logical_cpus_matches_one_device(tmp_path):
    result = run_python(["-c", MIRRORED, str(tmp_path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(read_history(tmp_path / "mirrored" / "unet")) == 2


def test_corrupted_checkpoint_is_an_error_not_a_fresh_start(smoke_run, tmp_path):
    config = dataclasses.replace(SMOKE, model="unet", epochs=1)
    copy_of(smoke_run, tmp_path)
    # Checkpoints are numbered by global step: the epoch's end is step 2.
    data_files = list((tmp_path / "unet" / "checkpoints").glob("ckpt-2.data-*"))
    assert data_files
    data_files[0].write_bytes(data_files[0].read_bytes()[:100])
    with pytest.raises(TrainingError, match="ckpt-2"):
        train(dataclasses.replace(config, epochs=2), tmp_path, verbose=0)
    # Nothing was overwritten: the history still holds the one finished epoch.
    assert len(read_history(tmp_path / "unet")) == 1


@pytest.mark.parametrize(
    "scaling, batch, expected", [("linear", 1024, 0.4), ("linear", 64, 0.025), ("sqrt", 1024, 0.2), ("none", 1024, 0.1)]
)
def test_learning_rate_follows_the_global_batch(scaling, batch, expected):
    from kerascam.training import make_optimizer

    config = dataclasses.replace(configs.imagenet(), lr_scaling=scaling, batch_size=batch, epochs=2, warmup_epochs=1)
    assert config.effective_learning_rate == pytest.approx(expected)
    optimizer = make_optimizer(config, steps_per_epoch=10)
    optimizer.iterations.assign(10)  # the end of the warm-up: the peak
    assert float(optimizer.learning_rate) == pytest.approx(expected, rel=1e-6)
    optimizer.iterations.assign(20)  # cosine decay to zero
    assert float(optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)


def test_the_demo_learning_rate_is_the_one_it_was_tuned_with():
    demo = configs.demo()
    assert demo.effective_learning_rate == demo.learning_rate == 1e-3
    assert dataclasses.replace(demo, batch_size=128).effective_learning_rate == pytest.approx(2e-3)
    # The U-Nets' recipes (benchmarks/recipe_curve.py, three seeds each).
    assert (demo.for_model("unet").epochs, demo.for_model("unet").effective_learning_rate) == (4, 2e-3)
    assert (demo.for_model("unet_ablated").epochs, demo.for_model("unet_ablated").effective_learning_rate) == (5, 2e-3)
    assert demo.for_model("unet", learning_rate=5e-4).effective_learning_rate == 5e-4  # a flag beats the recipe
    assert (demo.for_model("resnet50").epochs, demo.for_model("vgg16").epochs) == (6, 4)


def _checkpoint_arrays(run_dir):
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    arrays = (reader.get_tensor(name) for name, _ in tf.train.list_variables(str(run_dir / "checkpoints")))
    return [a for a in arrays if isinstance(a, np.ndarray)]  # (not the object graph)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_and_exports_a_float32_model(tmp_path, policy):
    import keras

    from kerascam.export import load_keras

    config = dataclasses.replace(
        SMOKE, model="unet", epochs=8, steps_per_epoch=None, train_examples=16, batch_size=8,
        learning_rate=1e-2, augment=False, mixed_precision=policy, saved_model=False,
    )
    train(config, tmp_path, verbose=0)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    losses = [float(r["loss"]) for r in read_history(tmp_path / "unet")]
    assert all(np.isfinite(losses)) and losses[-1] < 0.9 * losses[0], losses

    model = load_keras(str(tmp_path / "unet" / "model.keras"))
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    # The export carries the trained weights: each is a variable of the final checkpoint.
    saved = _checkpoint_arrays(tmp_path / "unet")
    for weight in model.get_weights():
        assert any(a.shape == weight.shape and np.array_equal(a, weight) for a in saved)
    with pytest.raises(TrainingError, match=f"mixed_precision '{policy}' -> None"):
        train(dataclasses.replace(config, mixed_precision=None, epochs=9), tmp_path, verbose=0)


def test_xla_gives_the_same_training_as_without(tmp_path):
    import keras

    from kerascam.models import build_model

    config = dataclasses.replace(SMOKE, model="unet", epochs=1, steps_per_epoch=3, optimizer="sgd", augment=False,
                                 saved_model=False)
    train(config, tmp_path / "eager", verbose=0)
    train(dataclasses.replace(config, jit=True), tmp_path / "xla", verbose=0)
    plain, compiled = _final_weights(tmp_path / "eager" / "unet"), _final_weights(tmp_path / "xla" / "unet")
    for a, b in zip(plain, compiled):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    keras.utils.set_random_seed(config.seed)  # the initialization both runs started from
    initial = build_model("unet", config.image_size, 5, unet_filters=config.unet_filters).get_weights()
    assert max(float(np.abs(a - b).max()) for a, b in zip(plain, initial)) > 1e-3  # training moved them


def test_a_full_disk_is_reported_before_the_first_step(tmp_path, monkeypatch):
    import collections
    import shutil

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**30, 10 * 2**30 - 2**20, 2**20))
    # 64 MiB of room plus 14 copies of the 122,849 float32 weights: four
    # checkpoints (three kept, one being written) of weights and Adam's two
    # slots, model.keras and the SavedModel.
    with pytest.raises(OSError, match=r"not enough free space in \S+unet: checkpoints and exports need about 7\d MiB, 1 MiB free"):
        train(dataclasses.replace(SMOKE, model="unet"), tmp_path, verbose=0)
    assert not (tmp_path / "unet" / "checkpoints").exists() and not (tmp_path / "unet" / "history.csv").exists()
