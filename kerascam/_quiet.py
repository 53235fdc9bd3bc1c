"""Keeps TensorFlow's start-up log lines out of the user's terminal.

Must run before TensorFlow is imported, which is why ``kerascam/__init__.py``
imports it first. A user who sets the variables themselves keeps their values.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
