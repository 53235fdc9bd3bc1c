"""Explains the trained models and scores the maps: python evaluate.py --cam all"""

import sys

import kerascam  # noqa: F401  (quiets TensorFlow before it loads)
from kerascam.cli import evaluate_main, run_cli

if __name__ == "__main__":
    sys.exit(run_cli(evaluate_main, None, "evaluate.py"))
