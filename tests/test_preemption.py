"""Training that survives preemption: step checkpoints, signals, a full disk, a target accuracy.

The runs are interrupted at exact steps through ``KERASCAM_TEST_SIGNALS``
(the loop sends itself the signal after that global step), never by timing.
Each interrupted run is resumed and compared with one uninterrupted run of
the same config (``straight``, trained once for the module).
"""

import csv
import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT
from kerascam import configs
from kerascam.cli import run_cli, train_main
from kerascam.training import TrainingError, train

# One epoch of five steps, a checkpoint every two: global steps 2, 4 and 5
# (the epoch's end). One epoch keeps the tests cheap; the resume across epoch
# ends is test_training.py's test_killed_run_resumes_from_its_checkpoint.
# Without the SavedModel export (half of a run's time here), which these tests are not about.
CONFIG = dataclasses.replace(configs.smoke(), model="unet", epochs=1, steps_per_epoch=5, checkpoint_every=2,
                             saved_model=False)
CLI = ["--model", "unet", "--preset", "smoke", "--epochs", "1", "--steps-per-epoch", "5", "--checkpoint-every", "2",
       "--no-saved-model", "--quiet"]


def _weights(run_dir):
    from kerascam.export import load_keras

    return load_keras(os.path.join(run_dir, "model.keras")).get_weights()


def _history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _latest(run_dir):
    return os.path.basename(tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")) or "")


def _assert_same_run(run_dir, straight_dir):
    for a, b in zip(_weights(run_dir), _weights(straight_dir), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # The resumed epoch's sums came back from the checkpoint: same history row.
    for resumed, reference in zip(_history(run_dir), _history(straight_dir), strict=True):
        for key in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy"):
            assert float(resumed[key]) == pytest.approx(float(reference[key]), rel=1e-4, abs=1e-6), key


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run; with a target accuracy it never reaches and CAM summaries.

    Neither changes the weights (both only run the model in inference): the
    interrupted runs below, which have neither, must end the same.
    """
    calls = []
    summaries = types.ModuleType("kerascam.summaries")
    summaries.write_cam_summaries = lambda writer, model, images, step, **kw: calls.append((writer, images, step, kw))
    workdir = tmp_path_factory.mktemp("straight")
    config = dataclasses.replace(CONFIG, target_accuracy=1.0, cam_summaries=3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "kerascam.summaries", summaries)
        summary = train(config, workdir, verbose=0)
    return types.SimpleNamespace(run_dir=workdir / "unet", config=config, summary=summary, cam_calls=calls)


def _env(**variables):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(variables)
    return env


def test_sigkill_mid_epoch_resumes_at_the_step_after_its_last_checkpoint(tmp_path, straight, capsys):
    killed = subprocess.run([sys.executable, "train.py", *CLI, "--workdir", str(tmp_path)], cwd=ROOT,
                            env=_env(KERASCAM_TEST_SIGNALS="3:SIGKILL"), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _latest(tmp_path / "unet") == "ckpt-2"
    train(CONFIG, tmp_path, verbose=1)
    assert "(epoch 1 step 2, mid-epoch)" in capsys.readouterr().out  # the third step comes next
    _assert_same_run(tmp_path / "unet", straight.run_dir)


def test_sigterm_saves_and_exits_143_a_full_disk_keeps_the_last_checkpoint_and_both_resume(
    tmp_path, straight, monkeypatch, capsys
):
    handler = signal.getsignal(signal.SIGTERM)
    monkeypatch.setenv("KERASCAM_TEST_SIGNALS", "3:SIGTERM")  # between the checkpoints 2 and 4
    assert run_cli(train_main, [*CLI, "--workdir", str(tmp_path)], "train.py") == 143
    assert capsys.readouterr().err.strip() == "unet: interrupted at epoch 1 step 3; the same command resumes"
    assert signal.getsignal(signal.SIGTERM) is handler  # the run's handler is gone with it
    assert _latest(tmp_path / "unet") == "ckpt-3"
    assert not (tmp_path / "unet" / "model.keras").exists()
    monkeypatch.delenv("KERASCAM_TEST_SIGNALS")

    # Resumed, it fills the disk while writing checkpoint 4: TensorFlow wrote
    # part of the data when the write failed.
    real_write = tf.train.Checkpoint._write

    def write_part_then_fill_the_disk(self, prefix, *args, **kwargs):
        if not prefix.endswith("ckpt-4"):
            return real_write(self, prefix, *args, **kwargs)
        with open(prefix + ".data-00000-of-00001", "wb") as f:
            f.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), prefix + ".data-00000-of-00001")

    monkeypatch.setattr(tf.train.Checkpoint, "_write", write_part_then_fill_the_disk)
    assert run_cli(train_main, [*CLI, "--workdir", str(tmp_path)], "train.py") == 1
    checkpoints = tmp_path / "unet" / "checkpoints"
    assert capsys.readouterr().err.strip() == (
        f"train.py: error: no space left on device while writing checkpoint {checkpoints / 'ckpt-4'}; "
        "free space and run the same command to resume (--debug shows the traceback)"
    )
    assert _latest(tmp_path / "unet") == "ckpt-3"  # still the newest, whole: the resume below loads it
    assert not list(checkpoints.glob("ckpt-4*"))  # the partial files are gone
    monkeypatch.setattr(tf.train.Checkpoint, "_write", real_write)  # space freed
    assert run_cli(train_main, [*CLI, "--workdir", str(tmp_path)], "train.py") == 0
    _assert_same_run(tmp_path / "unet", straight.run_dir)


SECOND_SIGNAL = r"""
import os, signal, sys, time
from kerascam.training import StopRequest
with StopRequest() as request:
    request.install()
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    print("first:", request.signum, flush=True)  # noted, the run goes on to save
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    time.sleep(60)  # stands for a long TensorFlow call, which a Python handler would wait for
    print("still running", flush=True)
"""


def test_a_second_signal_ends_the_process_at_once():
    result = subprocess.run([sys.executable, "-c", SECOND_SIGNAL, "SIGTERM"], cwd=ROOT, env=_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGTERM  # what the shell shows as 143, like the first signal's saved exit
    assert result.stdout.strip() == f"first: {int(signal.SIGTERM)}"


def test_sigint_is_caught_like_sigterm_and_its_code_is_130():
    from kerascam.training import StopRequest, TrainingInterrupted

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with StopRequest() as request:
        request.install()
        os.kill(os.getpid(), signal.SIGINT)
        assert request.signum == signal.SIGINT
        # The next signal of either kind meets the default action: the process ends.
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert TrainingInterrupted("x", 128 + request.signum).exit_code == 130


def _checkpoint_arrays(checkpoint_prefix):
    reader = tf.train.load_checkpoint(checkpoint_prefix)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(checkpoint_prefix)}


def test_target_accuracy_stops_at_the_first_check_and_exports_that_checkpoint(tmp_path, monkeypatch, capsys):
    # A target that the first check (a quarter of the first epoch: step 1) meets.
    config = dataclasses.replace(CONFIG, checkpoint_every=0, target_accuracy=1e-6)
    summary = train(config, tmp_path, verbose=0)
    run_dir = tmp_path / "unet"
    assert summary["stopped_early"] is True
    stop = summary["stopped_at"]
    assert (stop["epoch"], stop["step"], stop["global_step"]) == (1, 1, 1)
    assert stop["val_accuracy"] >= 1e-6 and summary["val_accuracy"] == pytest.approx(stop["val_accuracy"])
    assert json.loads((run_dir / "run.json").read_text())["stopped_at"] == stop
    assert _latest(run_dir) == "ckpt-1"
    saved = _checkpoint_arrays(str(run_dir / "checkpoints" / "ckpt-1"))
    assert saved["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"] == 1  # one step trained
    weights = [a for a in saved.values() if isinstance(a, np.ndarray) and a.ndim > 0]
    for weight in _weights(run_dir):
        assert any(a.shape == weight.shape and np.array_equal(a, weight) for a in weights)
    assert [r["epoch"] for r in _history(run_dir)] == ["0"]  # the partial epoch's row

    # Started again, it trains no further; and a full disk during its
    # export is one line, the model exported before staying whole.
    from kerascam import export

    exported = (run_dir / "model.keras").read_bytes()

    def fill_the_disk(model, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(export, "save_keras", fill_the_disk)
    with pytest.raises(TrainingError, match=r"^no space left on device while writing \S+model.keras; free space"):
        train(config, tmp_path, verbose=1)
    assert "not training further" in capsys.readouterr().out
    assert (run_dir / "model.keras").read_bytes() == exported
    assert _latest(run_dir) == "ckpt-1" and len(_history(run_dir)) == 1


def test_a_target_never_reached_trains_every_step_and_cam_summaries_are_written(straight):
    summary = straight.summary
    assert summary["stopped_early"] is False and summary["stopped_at"] is None
    assert summary["epochs_completed"] == 1 and summary["val_accuracy"] < 1.0
    assert _latest(straight.run_dir) == "ckpt-5"

    [(writer, images, step, kw)] = straight.cam_calls  # once per epoch, step = epoch + 1
    from kerascam.data import load_split

    first = next(iter(load_split(straight.config, "validation").examples.batch(3)))
    assert step == 1 and images.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(images, first["image"].numpy())
    np.testing.assert_array_equal(kw["labels"], first["label"].numpy())
    assert kw["class_names"] == summary["class_names"] and isinstance(writer, tf.summary.SummaryWriter)


@pytest.mark.parametrize("value", ["0", "1.5", "nan"])
def test_target_accuracy_outside_0_1_is_one_line_and_exit_2(tmp_path, value, capsys):
    assert run_cli(train_main, ["--target-accuracy", value, "--workdir", str(tmp_path)], "train.py") == 2
    err = capsys.readouterr().err.strip()
    assert err == f"train.py: error: --target-accuracy must lie in (0, 1], got {float(value)}"
    with pytest.raises(ValueError, match="target_accuracy must lie in"):
        train(dataclasses.replace(CONFIG, target_accuracy=float(value)), tmp_path, verbose=0)


@pytest.mark.parametrize("model", ["unet", "unet_ablated", "resnet50", "vgg16"])
def test_default_checkpoint_interval_is_ten_minutes_at_the_expected_rate(model):
    from kerascam import training

    config = configs.get_preset("imagenet").for_model(model)
    side, rates = training.EXPECTED_IMAGES_PER_SECOND["imagenet2012"]
    every = training.default_checkpoint_every(config)
    seconds = every * config.batch_size / rates[model]
    assert abs(seconds - training.CHECKPOINT_SECONDS) <= config.batch_size / rates[model], (every, seconds)
    # Half the side: a quarter of the pixels, steps four times as fast, four times as many between checkpoints.
    quarter = training.default_checkpoint_every(dataclasses.replace(config, image_size=side // 2))
    assert abs(quarter - 4 * every) <= 2, (quarter, every)
    # The demo's epochs (30 s to 2.6 min on 2 cores) are shorter than the interval: epoch ends only.
    demo = configs.get_preset("demo").for_model(model)
    assert training.default_checkpoint_every(demo) > demo.train_examples // demo.batch_size
