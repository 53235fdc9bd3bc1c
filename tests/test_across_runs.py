"""benchmarks/across_runs.py: the headlines of docs/results.md, run by run."""

import importlib.util
import json
import os

import pytest
from conftest import ROOT


def _module():
    spec = importlib.util.spec_from_file_location("across_runs", os.path.join(ROOT, "benchmarks", "across_runs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cell(mean, high=None):
    return {"mean": mean, "low": mean, "high": mean if high is None else high, "n": 10, "undefined": 0}


def _workdir(root, name, *, difference, p, unet_sticker, accuracy):
    table = {
        "paired_unet_minus_ablated": {"score_ground_truth": {
            m: {"mean_difference": difference, "p_value": p, "low": 0, "high": 0, "n": 10}
            for m in ("gradcam", "gradcam++", "scorecam")}},
        "sticker_disk_ratio": {"unet": {"gradcam": _cell(unet_sticker)}, "vgg16": {"gradcam": _cell(2.0)},
                               "resnet50": {"gradcam": _cell(1.5)}},
        "pointing_hit_zhang": {"unet": {"gradcam": {**_cell(0.6), "low": 0.5}},
                               "unet_ablated": {"gradcam": {**_cell(0.3), "high": 0.45 if unet_sticker > 2 else 0.55}}},
        "grid_hit": {"unet": {"gradcam": {**_cell(0.3), "low": 0.26 if unet_sticker > 2 else 0.2}}},
        "score_ground_truth": {"unet": {"scorecam": _cell(0.20)}, "vgg16": {"layercam-fused": _cell(0.25)},
                               # a model-free map never counts as the best
                               "resnet50": {"edges": _cell(0.22 if unet_sticker > 2 else 0.9)}},
        "randomization_spearman": {"unet": {"gradcam++": _cell(0.1, high=0.3), "scorecam": _cell(0.6, high=0.8)}},
    }
    os.makedirs(os.path.join(root, name, "eval"))
    with open(os.path.join(root, name, "eval", "table.json"), "w") as f:
        json.dump(table, f)
    for model, value in accuracy.items():
        os.makedirs(os.path.join(root, name, model))
        with open(os.path.join(root, name, model, "run.json"), "w") as f:
            json.dump({"val_accuracy": value}, f)
    return os.path.join(root, name)


def test_a_claim_holds_where_its_sign_and_significance_do(tmp_path, capsys):
    module = _module()
    every = dict(unet=0.96, unet_ablated=0.97, resnet50=0.95, vgg16=0.99)
    one = _workdir(tmp_path, "one", difference=0.05, p=0.001, unet_sticker=3.0, accuracy=every)
    two = _workdir(tmp_path, "two", difference=0.02, p=0.2, unet_sticker=1.8, accuracy=dict(every, unet=0.85))
    assert module.main([f"first={one}", two, "--json", str(tmp_path / "rows.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| | first | two | holds in |"
    row = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert row["validation accuracy, U-Net / ablated / ResNet50 / VGG16 (%)"].endswith(
        "| 96.0 / 97.0 / 95.0 / 99.0 | 85.0 / 97.0 / 95.0 / 99.0 | 1 of 2 |")
    # Positive in both, significant in the first only.
    assert row["U-Net − ablated, ground truth s (points), scorecam"].endswith(
        "| +5.00 (p 0.001) | +2.00 (p 0.2) | 1 of 2 |")
    # 3.0 beats VGG16's 2.0; 1.8 does not.
    assert row["sticker within its disk, gradcam: U-Net / best other"].endswith(
        "| 3.00 / 2.00 (vgg16) | 1.80 / 2.00 (vgg16) | 1 of 2 |")
    assert row["U-Net randomization ρ, gradcam++ (passes below 0.7)"].endswith("| 0.10 | 0.10 | 2 of 2 |")
    assert row["U-Net randomization ρ, scorecam (passes below 0.7)"].endswith("| 0.60 | 0.60 | 0 of 2 |")
    assert "vgg16 layercam-fused 25.0; U-Net's best scorecam 20.0" in row["best map by ground truth s (a U-Net's?)"]
    # Zhang: 0.5 above the twin's 0.45 holds; above 0.55 does not. Grid: interval above chance 25 %.
    assert row["Zhang pointing game, gradcam: U-Net / ablated (%)"].endswith("| 60.0 / 30.0 | 60.0 / 30.0 | 1 of 2 |")
    assert row["U-Net grid pointing game, gradcam (%, chance 25)"].endswith("| 30.0 | 30.0 | 1 of 2 |")
    assert row["a CAM beats the edge map on ground truth s"].endswith(
        "| best vgg16 layercam-fused 25.0 vs edges 22.0 | best vgg16 layercam-fused 25.0 vs edges 90.0 | 1 of 2 |")
    saved = json.loads((tmp_path / "rows.json").read_text())
    assert saved["U-Net − ablated, ground truth s (points), gradcam"]["holds"] == [True, False]


def test_a_workdir_without_evaluation_is_one_line_and_exit_2(tmp_path, capsys):
    assert _module().main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no eval/table.json" in err and "evaluate.py --cam all" in err


def test_markers_rows_hold_where_the_unet_leads_and_class_blind_maps_score_chance(tmp_path, capsys):
    def workdir(name, unet_low, edges_high):
        first = {"unet": {"gradcam": {**_cell(0.9), "low": unet_low}},
                 "unet_ablated": {"gradcam": {**_cell(0.35), "high": 0.42}},
                 "resnet50": {"gradcam": _cell(float("nan"))}}  # not evaluated: shown as —
        table = {
            "decoy_first": first,
            "decoy_share": {"unet": {"edges": {**_cell(0.33), "low": 0.30, "high": edges_high},
                                     "noise": {**_cell(0.32), "low": 0.31, "high": 0.35}}},
            "chance": {"decoy_first": _cell(1 / 3), "decoy_share": _cell(0.3278)},
            "follows_evidence": {"unet": {"gradcam": _cell(0.67)}, "vgg16": {"gradcam": _cell(0.05)}},
            # Over each model's own noise map; a model without its noise cell shows —.
            "part_spearman": {"unet": {"gradcam": _cell(0.15), "noise": _cell(-0.31)},
                              "vgg16": {"gradcam": _cell(-0.01)}},
            "paired_unet_minus_ablated": {"decoy_share": {"gradcam": {
                "mean_difference": 0.25, "p_value": 1e-3, "p_holm": 0.2, "low": 0, "high": 0, "n": 10}}},
        }
        os.makedirs(os.path.join(tmp_path, name, "eval"))
        with open(os.path.join(tmp_path, name, "eval", "table.json"), "w") as f:
            json.dump(table, f)
        return os.path.join(tmp_path, name)

    # The U-Net's interval must clear both chance (33.3) and the twin's top (42).
    assert _module().main([workdir("a", 0.5, 0.36), workdir("b", 0.40, 0.32)]) == 0
    row = {line.split(" | ")[0].lstrip("| "): line for line in capsys.readouterr().out.splitlines()[2:]}
    assert row["evidence marker first, gradcam: U-Net / ablated / ResNet50 / VGG16 (%, chance 33)"].endswith(
        "| 90.0 / 35.0 / — / — | 90.0 / 35.0 / — / — | 1 of 2 |")
    # Chance 32.78 inside [30, 36] and [31, 35]; the second run's edge interval tops out at 32.
    assert row["edge / noise map, evidence's share (%, chance 33)"].endswith("| 33.0 / 32.0 | 33.0 / 32.0 | 1 of 2 |")
    assert row["decision follows the evidence, U-Net / ablated / ResNet50 / VGG16 (%)"].endswith(
        "| 67.0 / — / — / 5.0 | 67.0 / — / — / 5.0 |  |")
    assert row["map follows the intervention's logit drops (Spearman per part − noise map's), gradcam: "
               "U-Net / ablated / ResNet50 / VGG16"].endswith("| +0.46 / — / — / — | +0.46 / — / — / — |  |")
    # Significant unadjusted, not after Holm: does not hold.
    assert row["U-Net − ablated, evidence's share of the markers' mass (points), gradcam"].endswith(
        "| +25.00 (p 0.2) | +25.00 (p 0.2) | 0 of 2 |")


@pytest.mark.parametrize("prefix, written", [("seed", "across_seeds.md"), ("markers-seed", "markers_across_seeds.md")])
def test_the_committed_seeds_tables_are_what_the_script_writes_from_the_committed_runs(prefix, written, capsys):
    runs = [os.path.join("docs", "runs", f"{prefix}{seed}") for seed in range(3)]
    assert _module().main([os.path.join(ROOT, run) for run in runs]) == 0
    with open(os.path.join(ROOT, "docs", "runs", written)) as f:
        assert capsys.readouterr().out == f.read(), (
            f"docs/runs/{written} is stale: python benchmarks/across_runs.py {' '.join(runs)} > docs/runs/{written}")
