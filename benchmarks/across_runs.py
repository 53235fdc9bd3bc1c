"""How much the conclusions of docs/results.md move from one training run to the next.

    python train.py --model all --seed 1 --workdir runs-seed1
    python evaluate.py --cam all --workdir runs-seed1
    python benchmarks/across_runs.py seed0=runs seed1=runs-seed1 [...] [--json FILE]
    python benchmarks/across_runs.py docs/runs/seed0 docs/runs/seed1 docs/runs/seed2   # the committed runs
    python benchmarks/across_runs.py docs/runs/markers-seed0 docs/runs/markers-seed1 docs/runs/markers-seed2

Each argument is a workdir (optionally ``LABEL=DIR``) holding the four
trained models (``MODEL/run.json``) and their evaluation (``eval/table.json``,
what ``evaluate.py --cam all`` writes). The script prints one markdown table,
a column per run, a row per headline of docs/results.md: validation accuracies,
the U-Net against its ablated twin on each score (paired mean difference
and p), the U-Net's pointing games (strict, Zhang's against the twin, the
2x2 grid against chance), randomization and sticker preference within its
disk, whether any CAM beats the image's edge map on the ground truth, and the
best map (any model and method) on the ground truth, by insertion and on
the sticker. Runs on the ``markers`` testbed add its rows: the paired lead
in the evidence's share of the markers' mass, how often each model's map
names the evidence marker first, whether the edge and noise maps score
chance there, and how often each model's decision follows the evidence (by
intervention) and how well each model's maps rank the parts by the logit
drop their removal causes (over the model's own noise map). The last
column counts the runs in which a row's claim holds (a difference of the stated sign with
p < 0.05, Holm-adjusted over the run's paired tests where its table has
the adjustment; the U-Net's sticker preference the highest of the four models;
intervals that do not overlap for the pointing games and the evidence
marker named first),
so that a conclusion is read off several runs instead of one.
"""

import argparse
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # this checkout's kerascam, installed or not
from kerascam.io import write_text  # noqa: E402
from kerascam.metrics import format_p_value  # noqa: E402
from kerascam.specs import MODEL_NAMES  # noqa: E402

MODELS = MODEL_NAMES  # the model registry's order
PAPER_METHODS = ("gradcam", "gradcam++", "scorecam")
MAPS = ("gradcam", "gradcam++", "layercam", "hirescam", "scorecam", "layercam-fused")
# Paired U-Net - ablated rows: (table key, label, sign of "the U-Net is better").
PAIRED = (
    ("score_reference", "paper's score s (points)", +1, 100),
    ("score_ground_truth", "ground truth s (points)", +1, 100),
    # The markers testbed: the evidence marker's share of the three markers' mass.
    ("decoy_share", "evidence's share of the markers' mass (points)", +1, 100),
    # Perturbation scores minus each model's own noise-map score: models differ in
    # how fragile they are under black or imputed pixels, whatever the map.
    ("insertion_auc_vs_noise", "insertion AUC - noise map's", +1, 1),
    ("deletion_auc_vs_noise", "deletion AUC - noise map's (lower: more faithful)", -1, 1),
    ("road_combined_vs_noise", "ROAD (LeRF - MoRF) / 2 - noise map's", +1, 1),
    ("sticker_disk_ratio", "sticker over the rest of its disk (ratio)", +1, 1),
)
MODEL_FREE = ("edges", "noise")
SIGNIFICANT = 0.05


class RunError(Exception):
    pass


def load_run(spec):
    """``(label, {"table": table.json, "accuracy": {model: val_accuracy}})`` of ``LABEL=DIR`` or ``DIR``."""
    label, _, path = spec.rpartition("=")
    label = label or os.path.basename(os.path.normpath(path))
    # A workdir (its evaluation in eval/) or a folder of docs/runs/ (table.json beside the models' run.json).
    table_path = os.path.join(path, "eval", "table.json")
    if not os.path.isfile(table_path) and os.path.isfile(os.path.join(path, "table.json")):
        table_path = os.path.join(path, "table.json")
    if not os.path.isfile(table_path):
        raise RunError(f"{path}: no eval/table.json (run `python evaluate.py --cam all --workdir {path}` first)")
    with open(table_path) as f:
        table = json.load(f)
    accuracy = {}
    for model in MODELS:
        run_json = os.path.join(path, model, "run.json")
        if os.path.isfile(run_json):
            with open(run_json) as f:
                accuracy[model] = json.load(f).get("val_accuracy")
    return label, {"table": table, "accuracy": accuracy}


def _mean(table, key, model, method):
    return table.get(key, {}).get(model, {}).get(method, {}).get("mean")


def _defined(cell):
    """``cell`` where it holds a number (tables of ``shapes`` carry the markers' scores as nan)."""
    return cell if cell and math.isfinite(cell.get("mean", math.nan)) else None


def _percents(values):
    """Fractions as percent joined by " / ", "—" for None; a cell (a dict) stands for its mean."""
    values = [v["mean"] if isinstance(v, dict) else v for v in values]
    return " / ".join("—" if v is None else f"{100 * v:.1f}" for v in values)


def _marker_rows(table):
    """The rows of the markers testbed (none where the scores are absent or nan, as on ``shapes``)."""
    rows = {}
    first = table.get("decoy_first", {})
    chance = table.get("chance", {}).get("decoy_first", {}).get("mean", 1 / 3)
    for method in PAPER_METHODS + ("layercam-fused",):  # with and without fusion, for the coarse models
        cells = [_defined(first.get(m, {}).get(method)) for m in MODELS]
        if cells[0] is None:
            continue
        # Holds where the U-Net's Wilson interval lies above chance and above every other model's.
        others = [c["high"] for c in cells[1:] if c is not None]
        rows[f"evidence marker first, {method}: U-Net / ablated / ResNet50 / VGG16 (%, chance {100 * chance:.0f})"] = (
            _percents(cells), cells[0]["low"] > max([chance] + others))
    # A class-blind map must score chance on the decoy scores: holds where the
    # edge and noise maps' intervals all hold the uniform map's mean.
    share_chance = table.get("chance", {}).get("decoy_share", {}).get("mean", 1 / 3)
    blind = [_defined(table.get("decoy_share", {}).get("unet", {}).get(c)) for c in MODEL_FREE]
    if all(blind):
        rows[f"edge / noise map, evidence's share (%, chance {100 * share_chance:.0f})"] = (
            _percents(blind), all(c["low"] <= share_chance <= c["high"] for c in blind))
    # How well the map's mass per part ranks the parts by the logit drop their
    # removal causes, over the same model's noise map (whose rho is far from 0,
    # since the parts differ in area); descriptive: no per-image pairing here.
    spearman = table.get("part_spearman", {})
    for method in PAPER_METHODS + ("layercam-fused",):
        gains = []
        for m in MODELS:
            cell, noise = (_defined(spearman.get(m, {}).get(c)) for c in (method, "noise"))
            gains.append(cell["mean"] - noise["mean"] if cell and noise else None)
        if any(g is not None for g in gains):
            rows[f"map follows the intervention's logit drops (Spearman per part − noise map's), {method}: "
                 "U-Net / ablated / ResNet50 / VGG16"] = (
                " / ".join("—" if g is None else f"{g:+.2f}" for g in gains), None)
    # Whether removing the evidence marker moves the logit most (one value per model).
    follows = [_defined(next(iter(table.get("follows_evidence", {}).get(m, {}).values()), None)) for m in MODELS]
    if any(follows):
        rows["decision follows the evidence, U-Net / ablated / ResNet50 / VGG16 (%)"] = (_percents(follows), None)
    return rows


def rows_of(run):
    """The headline rows of one run: ``{row label: (text, holds or None)}``."""
    table, rows = run["table"], {}
    acc = run["accuracy"]
    rows["validation accuracy, U-Net / ablated / ResNet50 / VGG16 (%)"] = (
        _percents([acc.get(m) for m in MODELS]),
        all(acc.get(m) is not None and acc[m] >= 0.95 for m in MODELS),
    )
    paired = table.get("paired_unet_minus_ablated", {})
    for key, label, sign, scale in PAIRED:
        for method in PAPER_METHODS:
            cell = paired.get(key, {}).get(method)
            if not cell or not math.isfinite(cell["mean_difference"]):
                continue
            # Holm-adjusted over the table's family where the table has it
            # (tables written before the adjustment carry the raw p only).
            p_value = cell.get("p_holm", cell["p_value"])
            holds = sign * cell["mean_difference"] > 0 and p_value < SIGNIFICANT
            rows[f"U-Net − ablated, {label}, {method}"] = (
                f"{scale * cell['mean_difference']:+.2f} (p {format_p_value(p_value)})", holds)
    rows.update(_marker_rows(table))
    for method in PAPER_METHODS:
        hit = _mean(table, "pointing_hit", "unet", method)
        if hit is not None:
            rows[f"U-Net pointing game, {method} (%)"] = (f"{100 * hit:.1f}", None)
    for method in PAPER_METHODS:
        # Zhang et al.'s rule (one maximum, ties drawn at random): holds where
        # the U-Net's Wilson interval lies wholly above the twin's.
        unet, twin = (table.get("pointing_hit_zhang", {}).get(m, {}).get(method) for m in ("unet", "unet_ablated"))
        if unet and twin:
            rows[f"Zhang pointing game, {method}: U-Net / ablated (%)"] = (
                f"{100 * unet['mean']:.1f} / {100 * twin['mean']:.1f}", unet["low"] > twin["high"])
    chance = table.get("chance", {}).get("grid_hit", {}).get("mean", 0.25)
    for method in PAPER_METHODS:
        # The 2x2 grid pointing game: holds where the U-Net's interval lies above chance.
        cell = table.get("grid_hit", {}).get("unet", {}).get(method)
        if cell:
            rows[f"U-Net grid pointing game, {method} (%, chance {100 * chance:.0f})"] = (
                f"{100 * cell['mean']:.1f}", cell["low"] > chance)
    for method in ("gradcam++", "scorecam"):
        rho = table.get("randomization_spearman", {}).get("unet", {}).get(method)
        if rho:
            # Passes when the map changes with the weights: the 95 % CI's top stays well below 1.
            rows[f"U-Net randomization ρ, {method} (passes below 0.7)"] = (f"{rho['mean']:.2f}", rho["high"] < 0.7)
    for method in PAPER_METHODS:
        # Within the disk: a map that merely prefers the disk scores 1.
        ratios = {m: _mean(table, "sticker_disk_ratio", m, method) for m in MODELS}
        if ratios["unet"] is None:
            continue
        others = max((v, m) for m, v in ratios.items() if m != "unet" and v is not None)
        rows[f"sticker within its disk, {method}: U-Net / best other"] = (
            f"{ratios['unet']:.2f} / {others[0]:.2f} ({others[1]})", ratios["unet"] > others[0])
    scored = [(_mean(table, "score_ground_truth", m, c), m, c) for m in MODELS for c in MAPS]
    scored = [s for s in scored if s[0] is not None]
    edges = [_mean(table, "score_ground_truth", m, "edges") for m in MODELS]
    edges = [e for e in edges if e is not None]
    if scored and edges:
        # The image's own edge map (the same for every model) against the best CAM.
        best = max(scored)
        rows["a CAM beats the edge map on ground truth s"] = (
            f"best {best[1]} {best[2]} {100 * best[0]:.1f} vs edges {100 * max(edges):.1f}", best[0] > max(edges))
    for key, label, scale, digits in (("score_ground_truth", "ground truth s", 100, 1),
                                      ("insertion_auc_vs_noise", "insertion AUC - noise map's", 1, 3),
                                      ("sticker_disk_ratio", "sticker within its disk", 1, 2)):
        scored = [(_mean(table, key, m, c), m, c) for m in MODELS for c in MAPS if _mean(table, key, m, c) is not None]
        unets = [s for s in scored if s[1] == "unet"]
        if scored and unets:
            best, unet = max(scored), max(unets)
            rows[f"best map by {label} (a U-Net's?)"] = (
                f"{best[1]} {best[2]} {scale * best[0]:.{digits}f}"
                + ("" if best[1] == "unet" else f"; U-Net's best {unet[2]} {scale * unet[0]:.{digits}f}"),
                best[1] == "unet")
    return rows


def report(runs):
    labels = [label for label, _ in runs]
    per_run = [rows_of(run) for _, run in runs]
    order = list(dict.fromkeys(k for rows in per_run for k in rows))
    lines = ["| | " + " | ".join(labels) + " | holds in |", "|---|" + "---|" * (len(labels) + 1)]
    summary = {}
    for key in order:
        cells = [rows.get(key, ("—", None)) for rows in per_run]
        verdicts = [holds for _, holds in cells if holds is not None]
        count = f"{sum(verdicts)} of {len(verdicts)}" if verdicts else ""
        lines.append(f"| {key} | " + " | ".join(text for text, _ in cells) + f" | {count} |")
        summary[key] = dict(values=[text for text, _ in cells], holds=[holds for _, holds in cells])
    return "\n".join(lines), summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="workdirs, each LABEL=DIR or DIR")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    try:
        runs = [load_run(spec) for spec in args.runs]
    except (RunError, OSError, json.JSONDecodeError) as error:
        print(f"across_runs.py: {error}", file=sys.stderr)
        return 2
    text, summary = report(runs)
    print(text)
    if args.json:
        write_text(args.json, json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
