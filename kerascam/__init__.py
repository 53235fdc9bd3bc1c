"""kerascam: high-resolution explanation maps for CNN image classifiers."""

from kerascam import _quiet  # noqa: F401  (must precede any TensorFlow import)

__version__ = "0.1.0"
