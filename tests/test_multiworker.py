"""MultiWorkerMirroredStrategy for real: two worker processes on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_python

WORKER = r"""
import dataclasses, sys, numpy as np, kerascam
from kerascam import configs, training
from kerascam.training import steps
workdir, out, strategy_name = sys.argv[1:]
built = []
original = steps.build_model
steps.build_model = lambda *a, **k: built.append(original(*a, **k)) or built[-1]
config = dataclasses.replace(configs.smoke(), model="unet", batch_norm=False, epochs=2, steps_per_epoch=3)
strategy = training.make_strategy(strategy_name)
summary = training.train(config, workdir, strategy=strategy, verbose=0)
np.savez(out, *built[-1].get_weights(), replicas=summary["replicas"], chief=training.is_chief(strategy))
"""


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _weights(path):
    data = np.load(path)
    return [data[f"arr_{i}"] for i in range(len([k for k in data.files if k.startswith("arr_")]))], data


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The weights of the workers' run in one process, without a strategy: what both tests compare with.

    RESUMING_WORKER's: its checkpoints at every step and no SavedModel leave the weights as WORKER's.
    """
    path = tmp_path_factory.mktemp("single")
    result = run_python(["-c", RESUMING_WORKER, str(path / "runs"), str(path / "single.npz"), "default"], timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return _weights(path / "single.npz")[0]


def test_two_workers_train_in_step_and_match_one_process(tmp_path, single):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    workers = []
    for index in range(2):
        worker_env = dict(env, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        workers.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path / "multi"), str(tmp_path / f"worker{index}.npz"), "multiworker"],
            cwd=ROOT, env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    try:
        for worker in workers:
            _, stderr = worker.communicate(timeout=240)
            assert worker.returncode == 0, stderr[-3000:]
    finally:
        for worker in workers:
            worker.kill()

    w0, d0 = _weights(tmp_path / "worker0.npz")
    w1, d1 = _weights(tmp_path / "worker1.npz")
    assert int(d0["replicas"]) == 2 and bool(d0["chief"]) and not bool(d1["chief"])
    for a, b, c in zip(w0, w1, single, strict=True):
        np.testing.assert_array_equal(a, b)  # the workers stay in step
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-5)  # same global batch as one process
    # Only the chief wrote the run folder's files.
    run_dir = tmp_path / "multi" / "unet"
    assert (run_dir / "model.keras").exists() and (run_dir / "history.csv").exists()
    assert (run_dir / "saved_model" / "saved_model.pb").exists()  # exported under the strategy
    assert len((run_dir / "history.csv").read_text().strip().splitlines()) == 3


# A checkpoint at every step; verbose, to tell where it resumed; no SavedModel
# (the first test's chief writes one under this strategy). Checkpoints and
# exports leave the weights alone: the same single-process run is the reference.
RESUMING_WORKER = WORKER.replace(
    "epochs=2, steps_per_epoch=3)", "epochs=2, steps_per_epoch=3, checkpoint_every=1, saved_model=False)"
).replace("verbose=0", "verbose=1")
assert RESUMING_WORKER.count("checkpoint_every=1") == 1 and "verbose=1" in RESUMING_WORKER


def _start_workers(tmp_path, kill_worker_1_after_step=None):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        if index == 1 and kill_worker_1_after_step:
            env["KERASCAM_TEST_SIGNALS"] = f"{kill_worker_1_after_step}:SIGKILL"
        workers.append(subprocess.Popen(
            [sys.executable, "-c", RESUMING_WORKER, str(tmp_path / "multi"), str(tmp_path / f"worker{index}.npz"),
             "multiworker"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    return workers


def test_a_lost_worker_and_a_restart_of_both_end_like_an_uninterrupted_run(tmp_path, single):
    # Worker 1 dies (SIGKILL) right after global step 4 of 6, before the
    # checkpoint of that step; worker 0 then fails in its next collective.
    lost = _start_workers(tmp_path, kill_worker_1_after_step=4)
    try:
        for worker in lost:
            worker.communicate(timeout=240)
    finally:
        for worker in lost:
            worker.kill()
    assert lost[1].returncode == -9 and lost[0].returncode != 0
    assert tf_latest(tmp_path / "multi" / "unet") == "ckpt-3"

    restarted = _start_workers(tmp_path)
    try:
        outputs = [worker.communicate(timeout=240)[0] for worker in restarted]
    finally:
        for worker in restarted:
            worker.kill()
    for worker, output in zip(restarted, outputs):
        assert worker.returncode == 0, output[-3000:]
        assert "resuming from" in output and "ckpt-3 (epoch 1)" in output

    w0, _ = _weights(tmp_path / "worker0.npz")
    w1, _ = _weights(tmp_path / "worker1.npz")
    for a, b, c in zip(w0, w1, single, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-5)


def tf_latest(run_dir):
    import tensorflow as tf

    return os.path.basename(tf.train.latest_checkpoint(str(run_dir / "checkpoints")) or "")
