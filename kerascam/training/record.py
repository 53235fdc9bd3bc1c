"""The last steps of a run: its exports (``model.keras``, the SavedModel) and ``run.json``."""

import os
import shutil
import time

import keras

from kerascam import backend, export, io
from kerascam.precision import dtype_policy
from kerascam.training.checkpoints import no_space_is_one_line
from kerascam.training.steps import build_model_for


def available_cpus():
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def float32_copy(model, config, num_classes):
    """The float32 twin of a mixed-precision model, with its weights.

    Mixed precision is for training speed; explanations take gradients of the
    exported model, which should not be computed in float16.
    """
    with dtype_policy(None):
        twin = build_model_for(config, num_classes)
    twin.set_weights(model.get_weights())
    return twin


# Why a JAX run writes no SavedModel: run.json's "saved_model_skipped" and the run's log line.
SAVED_MODEL_ON_JAX = ("the SavedModel export runs on Keras' TensorFlow backend: load model.keras there "
                      "and call kerascam.export.export_saved_model")


# run.json's "saved_model_skipped" of a run trained with --no-saved-model.
SAVED_MODEL_NOT_ASKED = "--no-saved-model: kerascam.export.export_saved_model writes it from model.keras"


def _stale_export(model, path, run_dir):
    """Whether the SavedModel folder ``path`` exists and holds other weights than ``model``.

    Its variables decide (`kerascam.export.saved_model_holds`); only where
    they cannot be read (no TensorFlow) do file times: older than the newest
    file in ``run_dir/checkpoints`` is stale.
    """
    if not os.path.isdir(path):
        return False
    holds = export.saved_model_holds(model, path)
    if holds is not None:
        return not holds
    checkpoints, pb = os.path.join(run_dir, "checkpoints"), os.path.join(path, "saved_model.pb")
    if not os.path.isfile(pb) or not os.path.isdir(checkpoints):
        return False
    newest = max((os.path.getmtime(os.path.join(checkpoints, name)) for name in os.listdir(checkpoints)), default=0.0)
    return os.path.getmtime(pb) < newest


def export_model(model, config, num_classes, run_dir):
    """Writes ``model.keras`` and ``saved_model/`` (float32, whatever the training precision).

    ``model.keras`` alone with ``config.saved_model`` False, and under Keras'
    JAX backend (it loads under TensorFlow too; the SavedModel is
    TensorFlow's, ``SAVED_MODEL_ON_JAX``); then a ``saved_model/`` that
    holds other weights than ``model.keras`` (exported before the run
    trained on) is removed, and one that holds these weights (a finished
    run run again) is kept, whatever the files' times.

    Returns:
        The model exported.
    """
    if config.mixed_precision:
        model = float32_copy(model, config, num_classes)
    with no_space_is_one_line(os.path.join(run_dir, "model.keras")):
        export.save_keras(model, os.path.join(run_dir, "model.keras"))
    if backend.name() == "jax" or not config.saved_model:
        if _stale_export(model, os.path.join(run_dir, "saved_model"), run_dir):
            shutil.rmtree(os.path.join(run_dir, "saved_model"), ignore_errors=True)
        return model
    with no_space_is_one_line(os.path.join(run_dir, "saved_model")):
        export.export_saved_model(model, os.path.join(run_dir, "saved_model"))
    return model


def runtime_details():
    """``(threads, versions)`` of ``run.json``: what the weights depend on besides the seed and the machine."""
    if backend.name() == "jax":
        import jax

        return {"cpus": available_cpus()}, {"jax": jax.__version__, "keras": keras.__version__}
    import tensorflow as tf

    # TensorFlow's thread pools (0: TensorFlow's default, one thread per
    # core): oneDNN sums in another order with another number of threads.
    threads = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
               "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
               "cpus": available_cpus()}
    return threads, {"tensorflow": tf.__version__, "keras": keras.__version__}


def write_run_summary(run_dir, results, *, started, resumed, replicas):
    """Writes ``run.json``: ``results`` with the wall time, the replicas, threads and versions added.

    Args:
        run_dir: The run's folder.
        results: The run's results (model, config, accuracy, ...).
        started: ``time.time()`` when this session of the run began.
        resumed: True when the run resumed from a checkpoint: the wall time
            of the sessions before, from the previous ``run.json``, is added.
        replicas: The strategy's replicas in sync.

    Returns:
        The summary written.
    """
    previous_seconds = 0.0
    summary_path = os.path.join(run_dir, "run.json")
    if resumed and os.path.exists(summary_path):
        previous_seconds = io.read_json(summary_path).get("wall_seconds", 0.0)
    threads, versions = runtime_details()
    summary = {
        **results,
        "backend": backend.name(),
        "wall_seconds": previous_seconds + time.time() - started,
        "replicas": replicas,
        "threads": threads,
        "versions": versions,
    }
    if backend.name() == "jax":
        summary["saved_model_skipped"] = SAVED_MODEL_ON_JAX
    elif not results.get("config", {}).get("saved_model", True):
        summary["saved_model_skipped"] = SAVED_MODEL_NOT_ASKED
    with no_space_is_one_line(summary_path):
        io.write_json(summary_path, summary)
    return summary
