"""kerascam.report: the docs' result tables generated from table.json."""

import json
import os

import numpy as np
import pytest

from conftest import ROOT
from kerascam import report
from kerascam.evaluation import tables


def _tiny_table():
    # Cells made by the evaluation's own aggregation, from values whose
    # mean and 95 % t-interval are computed by hand below.
    cells = {
        "score_reference": {
            "unet": {"gradcam": tables.cell([0.1, 0.3]), "gradcam++": tables.cell([0.2, 0.2, 0.2]),
                     "scorecam": tables.cell([])},
            "resnet50": {"gradcam": tables.cell([0.5, np.nan]), "gradcam++": tables.cell([0.4, 0.6]),
                         "scorecam": tables.cell([0.25, 0.75])},
        },
        "score_ground_truth": {
            "unet": {"gradcam": tables.cell([0.1, 0.3]), "gradcam++": tables.cell([0.4, 0.6]),
                     "scorecam": tables.cell([0.25, 0.75])},
            "resnet50": {"gradcam": tables.cell([0.1, 0.3]), "gradcam++": tables.cell([0.1, 0.3]),
                         "scorecam": tables.cell([0.1, 0.3])},
        },
        "chance": {"score_reference": tables.cell([0.3, 0.3]), "score_ground_truth": tables.cell([0.1, 0.3])},
    }
    # What evaluate.py writes: JSON with sorted keys (resnet50 before unet).
    return json.loads(json.dumps(cells, sort_keys=True))


def test_percent_cell_is_the_mean_and_t_interval_in_percent():
    # [0.1, 0.3]: mean 0.2, sd 0.1414, se 0.1, t(0.975, 1) = 12.7062 -> 0.2 -/+ 1.27062.
    assert report.percent_cell(tables.cell([0.1, 0.3])) == "20.00 [-107.06, 147.06]"
    # Three equal values: a zero-width interval.
    assert report.percent_cell(tables.cell([0.2, 0.2, 0.2])) == "20.00 [20.00, 20.00]"
    assert report.percent_cell(tables.cell([])) == "n/a"


def test_headline_table_puts_the_papers_models_in_order_and_chance_last():
    lines = report.headline_table(_tiny_table()).splitlines()
    assert lines[0] == ("| model | paper's score: gradcam | gradcam++ | scorecam "
                        "| ground truth: gradcam | gradcam++ | scorecam |")
    assert lines[2] == ("| unet | 20.00 [-107.06, 147.06] | 20.00 [20.00, 20.00] | n/a "
                        "| 20.00 [-107.06, 147.06] | 50.00 [-77.06, 177.06] | 50.00 [-267.66, 367.66] |")
    # One finite value of two: the mean of n = 1, no interval.
    assert lines[3].startswith("| resnet50 | 50.00 | 50.00 [-77.06, 177.06] |")
    assert lines[4] == "| uniform map (chance) | 30.00 [30.00, 30.00] | | | 20.00 [-107.06, 147.06] | | |"
    assert len(lines) == 5


def test_render_rewrites_known_blocks_only_and_check_finds_stale_ones(tmp_path):
    table_path = tmp_path / "table.json"
    table_path.write_text(json.dumps(_tiny_table()))
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- generated:headline -->\n| old | typed |\n<!-- /generated:headline -->\n"
                   "<!-- generated:other -->\nkept\n<!-- /generated:other -->\nend\n")
    assert report.main([str(table_path), str(doc), "--check"]) == 1
    assert "| old | typed |" in doc.read_text()  # --check writes nothing
    assert report.main([str(table_path), str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("intro\n<!-- generated:headline -->\n| model | paper's score")
    assert "| old | typed |" not in text and "\nkept\n" in text and text.endswith("end\n")
    assert report.render(text, _tiny_table()) == text  # idempotent
    assert report.main([str(table_path), str(doc), "--check"]) == 0


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("no block here\n")
    table_path = tmp_path / "table.json"
    table_path.write_text(json.dumps(_tiny_table()))
    for argv, message in (
        ([str(tmp_path / "missing.json"), str(doc)], "No such file"),
        ([str(table_path), str(doc)], "has no <!-- generated:NAME --> block"),
    ):
        with pytest.raises(SystemExit) as raised:
            report.main(argv)
        assert raised.value.code == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_field_block_prints_every_column_undefined_counts_and_chance():
    cells = {
        "grid_share": {
            "unet": {"gradcam": dict(tables.cell([0.5, 0.3]), undefined=2), "edges": tables.cell([0.25, 0.25])},
            "vgg16": {"gradcam": tables.cell([]), "edges": tables.cell([0.25, 0.25])},
        },
        "road_combined": {"unet": {"gradcam": tables.cell([0.1, 0.3])}},
        "chance": {"grid_share": tables.cell([0.25, 0.25])},
    }
    lines = report.field_table(cells, "grid_share").splitlines()
    # Methods before the model-free maps, as the evaluation orders them.
    assert lines[0] == "| model | gradcam | edges |"
    # [0.5, 0.3]: mean 0.4, se 0.1, t(0.975, 1) = 12.7062 -> 40 -/+ 127.06 points.
    assert lines[2] == "| unet | 40.00 [-87.06, 167.06], 2 undefined | 25.00 [25.00, 25.00] |"
    assert lines[3] == "| vgg16 | n/a | 25.00 [25.00, 25.00] |"
    assert lines[4] == "| uniform map (chance) | 25.00 [25.00, 25.00] | |"
    # Not a share: printed as it is, three decimals.
    assert report.field_table(cells, "road_combined").splitlines()[2] == "| unet | 0.200 [-1.071, 1.471] |"
    doc = "<!-- generated:field:road_combined -->\nold\n<!-- /generated:field:road_combined -->\n"
    assert report.render(doc, cells) == (
        "<!-- generated:field:road_combined -->\n" + report.field_table(cells, "road_combined")
        + "<!-- /generated:field:road_combined -->\n")
    with pytest.raises(ValueError, match="no field 'nope'"):
        report.field_table(cells, "nope")


def test_the_docs_tables_are_the_committed_runs():
    # README.md and docs/results.md print tables generated from the committed
    # evaluation of seed 0 (docs/runs/seed0/table.json, evaluate.py's own
    # output): a hand edit of a generated table, or a new run committed
    # without re-generating the docs, fails here.
    table = os.path.join(ROOT, "docs", "runs", "seed0", "table.json")
    documents = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "docs", "results.md")]
    assert report.main([table, *documents, "--check"]) == 0
    # The markers testbed's tables in docs/results.md, from its own committed run.
    markers = os.path.join(ROOT, "docs", "runs", "markers-seed0", "table.json")
    assert report.main([markers, os.path.join(ROOT, "docs", "results.md"), "--scope", "markers", "--check"]) == 0


def test_a_scoped_block_is_rewritten_only_by_its_scopes_table(tmp_path):
    shapes = {"road_combined": {"unet": {"gradcam": tables.cell([0.1, 0.3])}}}
    markers = {"road_combined": {"unet": {"gradcam": tables.cell([0.5, 0.7])}}}
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- generated:field:road_combined -->\nold\n<!-- /generated:field:road_combined -->\n"
                   "<!-- generated:markers/field:road_combined -->\nold\n<!-- /generated:markers/field:road_combined -->\n")
    for scope, table in ((None, shapes), ("markers", markers)):
        path = tmp_path / f"{scope}.json"
        path.write_text(json.dumps(table))
        assert report.main([str(path), str(doc)] + (["--scope", scope] if scope else [])) == 0
    blocks = doc.read_text().split("<!-- generated:markers/")
    # Each table wrote its own block and left the other's alone.
    assert "| unet | 0.200 [-1.071, 1.471] |" in blocks[0] and "0.600" not in blocks[0]
    assert "| unet | 0.600 [-0.671, 1.871] |" in blocks[1] and "0.200" not in blocks[1]
    # A scope the document has no block of is an error, not a check that passes with nothing checked.
    with pytest.raises(SystemExit) as raised:
        report.main([str(path), str(doc), "--scope", "other", "--check"])
    assert raised.value.code == 2
