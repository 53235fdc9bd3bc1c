"""Runs code under Keras' JAX backend in a process where TensorFlow cannot be imported.

The GPU machines kerascam must run on have JAX and no TensorFlow. Leaving
TensorFlow unused in a process where it is installed proves nothing (any
module may import it on the way), so the child installs a `sys.meta_path`
finder first that makes every import of ``tensorflow``, ``tf_keras_vis`` and
``tensorflow_datasets`` fail, as on such a machine. `run_under_jax` leaves
TensorFlow importable, for the tf.data input that JAX training takes where
TensorFlow is installed.
"""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKED = ("tensorflow", "tf_keras_vis", "tensorflow_datasets")

_PRELUDE = f"""
import sys

class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by tests/helpers_jax.py)")
        return None

sys.meta_path.insert(0, _NoTensorFlow())

# Where a package is not installed, importlib.util.find_spec says None
# (JAX's compilation cache asks it whether TensorFlow's file system is there);
# the finder above would raise instead.
import importlib.util

_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name.split(".")[0] in {BLOCKED!r} else _find_spec(name, package))
"""


def run_under_jax(code, args=(), timeout=300, env=None):
    """Runs ``code`` (a Python source string) in a child process under ``KERAS_BACKEND=jax``, on the CPU.

    TensorFlow stays importable: for what only it serves under JAX (tf.data
    over folders and ImageNet). `run_without_tensorflow` blocks it.

    Args:
        code: Python source; ``sys.argv[1:]`` is ``args``.
        args: Command-line arguments for the child.
        timeout: Seconds before the child is killed.
        env: Extra environment variables.

    Returns:
        The `subprocess.CompletedProcess` (text stdout and stderr).
    """
    child_env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    child_env.update({"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", **(env or {})})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=child_env,
    )


def run_without_tensorflow(code, args=(), timeout=300, env=None):
    """Runs ``code`` as `run_under_jax` does (the same arguments and result), with TensorFlow unimportable."""
    return run_under_jax(_PRELUDE + textwrap.dedent(code), args, timeout, env)


def run_script_without_tensorflow(script, args=(), timeout=300, env=None):
    """Runs a script of the repository (``train.py``, ``evaluate.py``) as :func:`run_without_tensorflow` does."""
    code = f"import runpy, sys\nsys.argv = [{script!r}, *sys.argv[1:]]\nrunpy.run_path({script!r}, run_name='__main__')\n"
    return run_without_tensorflow(code, args, timeout, env)
