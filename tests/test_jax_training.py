"""train.py under Keras' JAX backend in a process where TensorFlow cannot be imported (issue #25, items 3 and 5).

Two child processes (``tests/helpers_jax.py``), each started once for the
module: one trains the smoke U-Net straight through, interrupted by SIGTERM
mid-epoch and resumed, and up to a target accuracy; the other runs on two
CPU devices (``XLA_FLAGS``), data parallel, and meets the one-line errors of
what JAX cannot do. A third child, under JAX with TensorFlow importable
(``helpers_jax.run_under_jax``), trains from an image folder through tf.data.
This process (TensorFlow's backend) then checks what they wrote: the resumed
weights equal the straight ones, the ``.keras`` file loads here and predicts
what it predicted under JAX.
"""

import csv
import json
import os

import numpy as np
import pytest

from helpers_jax import run_under_jax, run_without_tensorflow

# Two epochs of three steps, a checkpoint every two steps of an epoch and at its end:
# global steps 2, 3, 5, 6.
# SIGTERM after global step 4 stops the run at epoch 2, step 1 (mid-epoch).
ARGS = ["--model", "unet", "--preset", "smoke", "--epochs", "2", "--steps-per-epoch", "3",
        "--checkpoint-every", "2", "--quiet"]
IMAGES_SEED = 7

# The child's steps: each run_cli call's exit code and stderr, as JSON on stdout.
_ONE_DEVICE = """
import json, os, sys
import numpy as np
from kerascam.cli import run_cli, train_main

workdir, args = sys.argv[1], json.loads(sys.argv[2])
results = {}

def train(name, extra=(), signals=None):
    if signals:
        os.environ["KERASCAM_TEST_SIGNALS"] = signals
    import contextlib, io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run_cli(train_main, [*args, "--workdir", os.path.join(workdir, name), *extra], "train.py")
    os.environ.pop("KERASCAM_TEST_SIGNALS", None)
    results.setdefault(name, []).append([code, err.getvalue()])

train("straight")
train("resumed", signals="4:SIGTERM")
train("resumed")
train("target", ["--target-accuracy", "0.01", "--cam-summaries", "2"])
# What the model predicts under JAX, for this process' parent to compare under TensorFlow.
from kerascam.export import load_keras
images = np.random.default_rng(%d).integers(0, 256, (4, 32, 32, 3)).astype("float32")
model = load_keras(os.path.join(workdir, "resumed", "unet", "model.keras"))
np.save(os.path.join(workdir, "jax_predictions.npy"), np.asarray(model.predict(images, verbose=0)))
results["tensorflow_loaded"] = "tensorflow" in sys.modules
print(json.dumps(results))
""" % IMAGES_SEED

_TWO_DEVICES = """
import contextlib, io, json, os, sys
from kerascam.cli import run_cli, train_main

workdir, args = sys.argv[1], json.loads(sys.argv[2])
results = {}
cases = {
    "mirrored": ["--strategy", "mirrored"],
    "odd_batch": ["--batch-size", "7"],
    "float16": ["--mixed-precision", "mixed_float16"],
    "folder": ["--dataset", "folder:" + workdir],
    "tensorflow_run": [],
    "parallel": [],
}
# A run folder of the TensorFlow path (its checkpoint state file): never taken for a fresh start.
os.makedirs(os.path.join(workdir, "tensorflow_run", "unet", "checkpoints"))
open(os.path.join(workdir, "tensorflow_run", "unet", "checkpoints", "checkpoint"), "w").close()
for name, extra in cases.items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run_cli(train_main, [*args, "--workdir", os.path.join(workdir, name), *extra], "train.py")
    results[name] = [code, err.getvalue()]
import jax
results["devices"] = len(jax.local_devices())
print(json.dumps(results))
"""

# Where TensorFlow is installed, tf.data feeds JAX training (folders, ImageNet):
# the batches come to the JAX train step as NumPy arrays.
_TF_DATA = """
import contextlib, io, json, os, sys
import keras
from kerascam.cli import run_cli, train_main

workdir, args = sys.argv[1], json.loads(sys.argv[2])
err = io.StringIO()
with contextlib.redirect_stderr(err):
    code = run_cli(train_main, [*args, "--workdir", os.path.join(workdir, "runs")], "train.py")
print(json.dumps({"code": code, "stderr": err.getvalue(), "backend": keras.backend.backend(),
                  "tensorflow_loaded": "tensorflow" in sys.modules}))
"""

# Compiled programs are cached on disk across the runs of a child (each run
# builds its model anew, so jax.jit's in-memory cache cannot serve them), and
# compiled with XLA's cheap CPU settings: the tests are about behaviour, and
# compiling the U-Net's step dominates their time.
_FAST_COMPILES = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    "XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
}


def _run(code, workdir, env, args=ARGS, run=run_without_tensorflow):
    env = {**_FAST_COMPILES, "JAX_COMPILATION_CACHE_DIR": os.path.join(workdir, "jax-cache"), **env,
           "XLA_FLAGS": " ".join(filter(None, (_FAST_COMPILES["XLA_FLAGS"], env.get("XLA_FLAGS"))))}
    result = run(code, [workdir, json.dumps(args)], timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("jax-one-device"))
    return workdir, _run(_ONE_DEVICE, workdir, {})


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("jax-two-devices"))
    return workdir, _run(_TWO_DEVICES, workdir, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})


@pytest.fixture(scope="module")
def tf_data_run(tmp_path_factory):
    """The smoke U-Net trained under JAX for one epoch of two steps from a folder of 2 x 8 images, via tf.data."""
    from helpers_ilsvrc import solid_image, write_image_folder

    workdir = str(tmp_path_factory.mktemp("jax-tf-data"))
    rng = np.random.default_rng(0)
    # Dark "a" and bright "b" images of their own sizes (random-resized-cropped to 32x32).
    write_image_folder(os.path.join(workdir, "data"), {
        split: {name: [solid_image(int(rng.integers(34, 48)), int(rng.integers(34, 48)), level + i)
                       for i in range(count)] for name, level in (("a", 40), ("b", 200))}
        for split, count in (("train", 8), ("validation", 2))
    })
    args = ["--model", "unet", "--preset", "smoke", "--dataset", f"folder:{os.path.join(workdir, 'data')}", "--quiet"]
    return workdir, _run(_TF_DATA, workdir, {}, args=args, run=run_under_jax)


def _model_weights(path):
    from kerascam.export import load_keras

    return load_keras(path).get_weights()


def _history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _run_json(run_dir):
    with open(os.path.join(run_dir, "run.json")) as f:
        return json.load(f)


def test_interrupted_then_resumed_equals_straight_through(one_device):
    workdir, results = one_device
    assert not results["tensorflow_loaded"]
    assert [code for code, _ in results["straight"]] == [0]
    (interrupted, interrupted_err), (resumed, _) = results["resumed"]
    assert (interrupted, resumed) == (143, 0)
    assert interrupted_err.strip() == "unet: interrupted at epoch 2 step 1; the same command resumes"
    straight_dir, resumed_dir = os.path.join(workdir, "straight", "unet"), os.path.join(workdir, "resumed", "unet")
    for a, b in zip(_model_weights(os.path.join(straight_dir, "model.keras")),
                    _model_weights(os.path.join(resumed_dir, "model.keras")), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # The epoch split by the signal has the same row: its sums were saved with the checkpoint.
    straight_rows, resumed_rows = _history(straight_dir), _history(resumed_dir)
    assert [r["epoch"] for r in resumed_rows] == ["0", "1"]
    for a, b in zip(straight_rows, resumed_rows, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-6), key
    # Checkpoints at global steps 2, 3 (epoch end), 4 (the signal's), 5 (step 2 of
    # epoch 2) and 6; the newest three kept.
    names = sorted(os.listdir(os.path.join(resumed_dir, "checkpoints")))
    assert names == [f"ckpt-{n}.{suffix}" for n in (4, 5, 6) for suffix in ("json", "optimizer.npz", "weights.h5")]
    with open(os.path.join(resumed_dir, "checkpoints", "ckpt-4.json")) as f:
        position = json.load(f)["scalars"]
    assert (position["epoch"], position["step"]) == (1, 1)


def test_run_json_says_jax_and_why_there_is_no_saved_model(one_device):
    workdir, _ = one_device
    summary = _run_json(os.path.join(workdir, "resumed", "unet"))
    assert summary["backend"] == "jax" and summary["replicas"] == 1
    assert summary["epochs_completed"] == 2 and "jax" in summary["versions"]
    assert "TensorFlow backend" in summary["saved_model_skipped"]
    assert not os.path.exists(os.path.join(workdir, "resumed", "unet", "saved_model"))


def test_the_jax_trained_model_loads_under_tensorflow_and_predicts_the_same(one_device):
    import keras

    from kerascam.export import load_keras

    assert keras.backend.backend() == "tensorflow"
    workdir, _ = one_device
    images = np.random.default_rng(IMAGES_SEED).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    model = load_keras(os.path.join(workdir, "resumed", "unet", "model.keras"))
    expected = np.load(os.path.join(workdir, "jax_predictions.npy"))
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, rtol=0, atol=1e-5)


def test_target_accuracy_stops_at_the_first_check_and_cam_summaries_are_left_out(one_device):
    workdir, results = one_device
    assert [code for code, _ in results["target"]] == [0]
    summary = _run_json(os.path.join(workdir, "target", "unet"))
    # Three steps an epoch: checks after steps 1, 2 and 3; any accuracy >= 0.01 stops at the first.
    assert summary["stopped_early"] and summary["stopped_at"]["global_step"] == 1
    assert summary["epochs_completed"] == 0
    # The demo preset's TensorBoard overlays are TensorFlow's: left out, and said so.
    assert "TensorFlow" in summary["cam_summaries_skipped"]


def test_data_parallel_over_two_devices_trains_as_one(one_device, two_devices):
    workdir, results = two_devices
    assert results["devices"] == 2 and results["parallel"][0] == 0
    summary = _run_json(os.path.join(workdir, "parallel", "unet"))
    assert summary["replicas"] == 2
    # The same global batch split over two devices: the same mean gradient (batch norm over the global batch).
    straight = os.path.join(one_device[0], "straight", "unet", "model.keras")
    for a, b in zip(_model_weights(straight), _model_weights(os.path.join(workdir, "parallel", "unet", "model.keras")),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


@pytest.mark.parametrize("case, words", [
    ("mirrored", "--strategy mirrored is a tf.distribute strategy"),
    ("odd_batch", "the global batch 7 does not divide by the 2 local devices"),
    ("float16", "mixed_float16 (with loss scaling) trains on Keras' TensorFlow backend"),
    ("folder", "--dataset folder:PATH (tf.data decoding) needs TensorFlow, which is not installed"),
])
def test_what_jax_cannot_do_is_one_line_and_exit_2(two_devices, case, words):
    workdir, results = two_devices
    code, err = results[case]
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("train.py: error: ") and words in err
    assert not os.path.exists(os.path.join(workdir, case, "unet", "checkpoints"))


def test_a_run_of_one_backend_is_not_resumed_by_the_other(one_device, two_devices):
    from kerascam.training import TrainingError
    from kerascam.training.checkpoints import restore_latest

    code, err = two_devices[1]["tensorflow_run"]
    assert code == 1 and err.count("\n") == 1
    assert "holds TensorFlow checkpoints; resume that run with KERAS_BACKEND=tensorflow" in err
    jax_checkpoints = os.path.join(one_device[0], "resumed", "unet", "checkpoints")
    with pytest.raises(TrainingError, match="holds checkpoints of Keras' JAX backend"):
        restore_latest(None, jax_checkpoints)


def test_tf_data_from_a_folder_feeds_jax_training_where_tensorflow_is_installed(tf_data_run):
    from kerascam.export import load_keras

    workdir, result = tf_data_run
    assert (result["code"], result["stderr"]) == (0, "")
    assert result["backend"] == "jax" and result["tensorflow_loaded"]  # the folder is read by tf.data
    run_dir = os.path.join(workdir, "runs", "unet")
    summary = _run_json(run_dir)
    assert summary["backend"] == "jax" and summary["epochs_completed"] == 1
    assert summary["class_names"] == ["a", "b"] and summary["skipped_files"] == []
    # The smoke preset's epoch: 2 steps of 8 of the 16 images; the checkpoint at its end is step 2.
    checkpoints = os.path.join(run_dir, "checkpoints")
    assert sorted(os.listdir(checkpoints)) == [f"ckpt-2.{suffix}" for suffix in ("json", "optimizer.npz", "weights.h5")]
    with open(os.path.join(checkpoints, "ckpt-2.json")) as f:
        names = json.load(f)["optimizer_variables"]
    with np.load(os.path.join(checkpoints, "ckpt-2.optimizer.npz")) as optimizer:
        assert int(optimizer[f"arr_{names.index('iteration')}"]) == 2
    (row,) = _history(run_dir)
    assert all(np.isfinite(float(row[key])) for key in ("loss", "val_loss"))
    assert 0 < float(row["loss"]) < 10
    # The exported model loads here (TensorFlow) and holds the weights of step 2, which trained them.
    import keras

    model = load_keras(os.path.join(run_dir, "model.keras"))
    assert model.output_shape == (None, 2)
    step_2 = keras.models.clone_model(model)
    step_2.load_weights(os.path.join(checkpoints, "ckpt-2.weights.h5"))
    for trained, saved in zip(model.get_weights(), step_2.get_weights(), strict=True):
        np.testing.assert_array_equal(trained, saved)
