"""Keeps TensorFlow's start-up log lines out of the user's terminal.

TensorFlow prints oneDNN, CUDA-stub and absl notices to stderr while it is
imported and when it first enumerates devices, before ``TF_CPP_MIN_LOG_LEVEL``
takes effect for all of them. Unless the user chose a log level themselves,
kerascam imports TensorFlow and lists its devices with stderr pointed at
/dev/null, then restores it, so real errors later on still reach the user.
This module must run before anything imports TensorFlow, which is why
``kerascam/__init__.py`` imports it first.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def _stderr_to_devnull():
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def silence_tensorflow():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if os.environ["KERAS_BACKEND"] != "tensorflow":
        # Another Keras backend (benchmarks/backend_speed.py on a GPU machine
        # without TensorFlow's CUDA build): the models alone, no TensorFlow.
        return
    ours = os.environ.get("_KERASCAM_QUIET") == "1"  # set by a parent process's kerascam (train.py --jobs)
    if ("TF_CPP_MIN_LOG_LEVEL" in os.environ and not ours) or "tensorflow" in sys.modules:
        return  # the user's choice, or too late to matter
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    os.environ["_KERASCAM_QUIET"] = "1"
    with _stderr_to_devnull():
        import tensorflow as tf

        tf.config.list_physical_devices()
    # TensorFlow's Python warnings too (e.g. the retracing notice that counts
    # one trace per cached CAM engine as "frequent retracing").
    tf.get_logger().setLevel("ERROR")
    # tensorflow-datasets' notices go through absl's logger ("Variant folder
    # ... has no dataset_info.json" before every first preparation).
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)


silence_tensorflow()
