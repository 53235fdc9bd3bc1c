"""The backend switch: which backend, and TensorFlow asked for in one line."""

import pytest

from kerascam import backend
from helpers_jax import run_without_tensorflow


def test_an_unsupported_backend_is_one_line(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    with pytest.raises(ValueError, match="KERAS_BACKEND is 'torch'"):
        backend.check_supported()
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    backend.check_supported()


def test_the_blocker_really_blocks_tensorflow_and_require_tensorflow_says_what_needs_it():
    result = run_without_tensorflow(
        """
        from kerascam import backend
        try:
            import tensorflow
        except ImportError as e:
            print("import:", e)
        try:
            backend.require_tensorflow("SavedModel export")
        except ImportError as e:
            print("require:", e)
        print("backend:", backend.name())
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("import: No module named 'tensorflow'")
    assert lines[1].startswith("require: SavedModel export needs TensorFlow, which is not installed")
    assert lines[2] == "backend: jax"
