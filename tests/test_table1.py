"""benchmarks/table1.py: the paper's Table I layout from a table.json."""

import importlib.util
import json
import os

from conftest import ROOT


def _module():
    spec = importlib.util.spec_from_file_location("table1", os.path.join(ROOT, "benchmarks", "table1.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_cell_is_ours_with_its_interval_beside_the_papers(tmp_path, capsys):
    table = {
        "settings": {"image_size": 224, "images": 50, "reference": "resnet50+gradcam++", "keras_backend": "jax"},
        "score_reference": {
            "unet": {"gradcam": {"mean": 0.5, "low": 0.45, "high": 0.55, "n": 50},
                     "gradcam++": {"mean": 0.7247, "low": 0.7, "high": 0.75, "n": 50}},
            "unet_ablated": {"scorecam": {"mean": 0.1, "low": 0.0512, "high": 0.15, "n": 50},
                             "gradcam": {"mean": float("nan"), "low": float("nan"), "high": float("nan"),
                                         "n": 0, "undefined": 8}},
        },
    }
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    assert _module().main([str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("Table I layout, s = sum(A*M)/sum(A) in % "
                        "(224 px, 50 images, reference map resnet50+gradcam++, Keras backend jax)")
    assert lines[4] == "| U-Net | 50.00 [45.00, 55.00] / 53.55 | 72.47 [70.00, 75.00] / 72.47 | — / 71.52 |"
    assert lines[5] == ("| U-Net, skips removed | undefined on all 8 images / 47.81 | — / 63.04 "
                        "| 10.00 [5.12, 15.00] / 64.36 |")


def test_a_table_without_the_papers_score_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"score_ground_truth": {}}))
    assert _module().main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no score_reference" in err
