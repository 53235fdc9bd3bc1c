import os
import subprocess
import sys

import pytest

import kerascam  # noqa: F401  (quiets TensorFlow before the tests import it)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The files that take longest (pytest --durations=0), started first. With
# --dist loadfile (setup.cfg) each file runs whole on one xdist worker, in
# the order collected; a long file collected late would run while the other
# worker sits idle. The rest keep their order.
LONGEST_FIRST = ("test_evaluation.py", "test_training.py", "test_multiworker.py", "test_preemption.py",
                 "test_progressive.py", "test_jax_training.py", "test_engine.py", "test_jax_cams.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Datasets built by the tests go to a temporary cache, never ~/.cache."""
    previous = os.environ.get("KERASCAM_CACHE")
    os.environ["KERASCAM_CACHE"] = str(tmp_path_factory.mktemp("kerascam-cache"))
    yield
    if previous is None:
        os.environ.pop("KERASCAM_CACHE", None)
    else:
        os.environ["KERASCAM_CACHE"] = previous


def run_python(args, timeout=300, **kwargs):
    """Runs a Python command in a fresh process from the repository root.

    The child gets the environment a user has: without the log level that
    importing kerascam set here, so it quiets TensorFlow itself.
    """
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, **kwargs
    )


def read_figure(path, min_side=50):
    """A PNG figure decoded, checked to be a real picture: at least ``min_side``
    pixels each way and not one flat colour (a blank canvas is a failed plot).
    """
    import cv2
    import numpy as np

    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert pixels is not None and pixels.dtype == np.uint8, path
    assert min(pixels.shape[:2]) >= min_side, (path, pixels.shape)
    assert pixels.reshape(-1, pixels.shape[-1] if pixels.ndim == 3 else 1).std(axis=0).max() > 0, path
    return pixels
