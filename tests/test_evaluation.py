import csv
import dataclasses
import json

import numpy as np
import pytest

from conftest import run_python
from kerascam import configs
from kerascam.evaluation import EvalConfig, evaluate
from kerascam.models import MODEL_NAMES
from kerascam.training import train


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The four models trained for two steps at 64x64 (ResNet50's map is 2x2 there)."""
    path = tmp_path_factory.mktemp("runs")
    for name in MODEL_NAMES:
        config = dataclasses.replace(configs.smoke(), model=name, image_size=64, steps_per_epoch=1)
        train(config, path, verbose=0)
    return path


@pytest.fixture(scope="module")
def evaluated(workdir):
    config = EvalConfig(workdir=str(workdir), num_images=6, batch_size=4, max_N=3, num_figures=2)
    return config, evaluate(config, progress=False)


def read_records(workdir):
    with open(workdir / "eval" / "records.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_records_cover_every_image_model_and_method(workdir, evaluated):
    records = read_records(workdir)
    assert len(records) == 6 * 4 * 3
    keys = {(r["image_id"], r["model"], r["method"]) for r in records}
    assert len(keys) == len(records)
    for r in records:
        assert r["status"] in ("ok", "zero", "constant", "nonfinite")
        if r["status"] == "ok" and r["reference_status"] == "ok":
            assert 0.0 <= float(r["score_reference"]) <= 1.0
        if r["status"] != "ok":
            assert r["score_ground_truth"] == "" and r["pointing_hit"] == ""
        assert r["max_N"] == ("3" if r["method"] == "scorecam" else "")


def test_table_equals_what_the_records_give(workdir, evaluated):
    _, table = evaluated
    records = read_records(workdir)
    on_disk = json.loads((workdir / "eval" / "table.json").read_text())
    for score in ("score_reference", "score_ground_truth", "pointing_hit"):
        for model in MODEL_NAMES:
            for method in ("gradcam", "gradcam++", "scorecam"):
                values = [float(r[score]) for r in records if r["model"] == model and r["method"] == method and r[score] != ""]
                cell = on_disk[score][model][method]
                assert cell["n"] == len(values)
                assert cell["undefined"] == 6 - len(values)
                if values:
                    assert cell["mean"] == pytest.approx(np.mean(values), abs=1e-6)
                assert table[score][model][method]["n"] == cell["n"]
    assert "paired_unet_minus_ablated" in on_disk
    # The chance row: a uniform map scores the mask's share of the image.
    from kerascam.data import load_split

    masks = np.stack([ex["mask"] for ex in load_split(dataclasses.replace(configs.smoke(), image_size=64), "validation")
                      .examples.take(6).as_numpy_iterator()])
    assert on_disk["chance"]["score_ground_truth"]["mean"] == pytest.approx(masks.reshape(6, -1).mean(axis=1).mean())
    text = (workdir / "eval" / "table.md").read_text()
    assert "| unet |" in text and "scorecam_max_N=3" in text


def test_figures_are_written(workdir, evaluated):
    for name in ("explanations.png", "native_maps.png"):
        data = (workdir / "eval" / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_cli_end_to_end_and_bad_input(workdir):
    result = run_python(["evaluate.py", "--workdir", str(workdir), "--cam", "gradcam", "--models", "unet", "vgg16",
                         "--num-images", "3", "--figures", "1", "--quiet"])
    assert result.returncode == 0, result.stderr
    assert "| vgg16 |" in result.stdout
    for args, expected in [
        (["--cam", "lime"], "invalid choice: 'lime'"),
        (["--workdir", "no-such-dir"], "does not exist"),
        (["--mask-threshold", "1.5", "--workdir", str(workdir)], "must lie in (0, 1)"),
        (["--batch-size", "0"], "positive integer"),
        (["--shard", "2", "--num-shards", "2", "--workdir", str(workdir)], "--shard must lie in 0..1"),
    ]:
        bad = run_python(["evaluate.py", *args])
        assert bad.returncode == 2, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and expected in bad.stderr, bad.stderr


def test_both_backends_give_the_same_maps_for_trained_models(workdir):
    from kerascam.data import load_split
    from kerascam.evaluation import explain_batch, find_models

    models = {name: model for name, (model, _) in find_models(str(workdir), ["unet", "resnet50"]).items()}
    batch = next(load_split(dataclasses.replace(configs.smoke(), image_size=64), "validation").examples.batch(3).as_numpy_iterator())
    args = (models, ("gradcam", "gradcam++", "scorecam"), batch["image"], batch["label"], "predicted", 3)
    ours, predicted = explain_batch(*args, backend="kerascam")
    reference, predicted_ref = explain_batch(*args, backend="tf-keras-vis")
    for key in ours:
        np.testing.assert_array_equal(ours[key][2], reference[key][2])
        np.testing.assert_allclose(ours[key][0], reference[key][0], atol=1e-4, err_msg=str(key))
    for name in models:
        np.testing.assert_array_equal(predicted[name], predicted_ref[name])


def test_sharded_evaluation_merges_into_the_unsharded_table(workdir):
    base = dict(workdir=str(workdir), num_images=5, batch_size=2, max_N=3, num_figures=1, methods=("gradcam", "scorecam"))
    whole = evaluate(EvalConfig(**base), progress=False)
    first = evaluate(EvalConfig(**base, shard=1, num_shards=2), progress=False)
    assert first["missing_shards"] == [0]
    merged = evaluate(EvalConfig(**base, shard=0, num_shards=2), progress=False)
    for key in ("score_reference", "score_ground_truth", "pointing_hit", "chance", "paired_unet_minus_ablated"):
        assert json.dumps(merged[key], sort_keys=True, default=str) == json.dumps(whole[key], sort_keys=True, default=str), key
    assert merged["settings"]["images"] == whole["settings"]["images"] == 5
    records = read_records(workdir)
    assert sorted({int(r["image_id"]) for r in records}) == [0, 1, 2, 3, 4]
    # --merge rebuilds the same table from the saved shards alone.
    from kerascam.evaluation import merge_shards

    again = merge_shards(EvalConfig(**base, num_shards=2))
    assert json.dumps(again["score_ground_truth"], sort_keys=True) == json.dumps(whole["score_ground_truth"], sort_keys=True)
