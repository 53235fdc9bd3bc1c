"""The paper's Table I from an evaluation: the U-Net and its ablated twin, beside the paper's numbers.

    python benchmarks/table1.py runs-paper224/eval/table.json
    python benchmarks/table1.py docs/runs/seed0/table.json

Mascolini et al. (VL/HCC 2022), Table I, scores each model's GradCAM,
GradCAM++ and ScoreCAM maps with s = sum(A * M) / sum(A), M the ResNet50 +
GradCAM++ map thresholded; ``evaluate.py`` writes that score as
``score_reference`` (mean and 95 % CI per model and method) into
``table.json``. This prints the same layout, each cell ours [CI] and the
paper's, with the image size, the number of images and the Keras backend the
evaluation ran on, so that a run at the paper's geometry (``--preset
paper224``: 224x224, 64-filter U-Nets, ResNet50's map 7x7) can be read
against the paper directly. The paper's models were trained on ImageNet;
ours on the embedded data: the layout is the paper's, the data is not.
"""

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's kerascam, installed or not
from kerascam.report import percent_cell  # noqa: E402

METHODS = ("gradcam", "gradcam++", "scorecam")
METHOD_LABELS = {"gradcam": "GradCAM", "gradcam++": "GradCAM++", "scorecam": "ScoreCAM"}
# Table I of the paper, s in percent.
PAPER = {
    "unet": {"gradcam": 53.55, "gradcam++": 72.47, "scorecam": 71.52},
    "unet_ablated": {"gradcam": 47.81, "gradcam++": 63.04, "scorecam": 64.36},
}
MODEL_LABELS = {"unet": "U-Net", "unet_ablated": "U-Net, skips removed"}


class TableError(Exception):
    pass


def rows(table):
    """``[(model label, [(ours text, paper's), ...]), ...]`` from a table.json dict."""
    scores = table.get("score_reference")
    if not scores:
        raise TableError("no score_reference in this table (run evaluate.py with the reference score)")
    out = []
    for model, paper in PAPER.items():
        cells = []
        for method in METHODS:
            cell = scores.get(model, {}).get(method)
            if cell is None:
                cells.append(("—", paper[method]))
                continue
            if cell.get("mean") is None or not math.isfinite(cell["mean"]):
                # No image had a defined score (e.g. the reference map was empty everywhere).
                cells.append((f"undefined on all {cell.get('undefined', '?')} images", paper[method]))
                continue
            cells.append((percent_cell(cell), paper[method]))
        out.append((MODEL_LABELS[model], cells))
    return out


def describe(table):
    settings = table.get("settings", {})
    parts = [f"{settings.get('image_size', '?')} px", f"{settings.get('images', '?')} images",
             f"reference map {settings.get('reference', 'resnet50+gradcam++')}"]
    if "keras_backend" in settings:
        parts.append(f"Keras backend {settings['keras_backend']}")
    return ", ".join(parts)


def render(table):
    header = "| model | " + " | ".join(f"{METHOD_LABELS[m]}: ours [95 % CI] / paper" for m in METHODS) + " |"
    lines = [f"Table I layout, s = sum(A*M)/sum(A) in % ({describe(table)})", "", header,
             "|---|" + "---|" * len(METHODS)]
    for label, cells in rows(table):
        lines.append(f"| {label} | " + " | ".join(f"{ours} / {paper:.2f}" for ours, paper in cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("table", help="an evaluation's table.json")
    args = parser.parse_args(argv)
    try:
        with open(args.table) as f:
            table = json.load(f)
        print(render(table))
    except (OSError, json.JSONDecodeError, TableError) as error:
        print(f"table1.py: {args.table}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
