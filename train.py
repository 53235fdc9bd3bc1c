"""Trains the paper's classifiers: python train.py --model unet|unet_ablated|resnet50|vgg16|all"""

import sys

import kerascam  # noqa: F401  (quiets TensorFlow before it loads)
from kerascam.cli import run_cli, train_main

if __name__ == "__main__":
    sys.exit(run_cli(train_main, None, "train.py"))
