import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_python, read_figure
from kerascam import configs, io
from kerascam.cli import threads_per_job
from kerascam.evaluation import EvalConfig, evaluate
from kerascam.models import MODEL_NAMES
from kerascam.training import available_cpus, train


SIZE = 48  # the demo's size: ResNet50's map is 2x2 (as at 64x64), VGG16's 3x3
SMOKE_48 = dict(image_size=SIZE, steps_per_epoch=1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The four smoke models, one step each at 48x48, trained two at a time by train.py --jobs 2.

    Without SavedModels, which no evaluation reads (ResNet50's export alone
    was about a third of this fixture's time).
    """
    path = tmp_path_factory.mktemp("runs")
    result = run_python(["train.py", "--model", "all", "--preset", "smoke", "--image-size", str(SIZE), "--steps-per-epoch", "1",
                         "--jobs", "2", "--no-saved-model", "--workdir", str(path)])
    assert result.returncode == 0, result.stderr
    threads = threads_per_job(2)  # 1 on this project's 2 cores
    assert f"2 at a time, each in its own process with {threads} thread" in result.stdout
    for name in MODEL_NAMES:  # a line per epoch and model instead of progress bars
        assert f"{name} epoch 1/1: loss " in result.stdout and f"{name} done: val_accuracy" in result.stdout
        assert (path / name / "model.keras").exists() and not (path / name / "saved_model").exists()
    assert result.stderr == ""  # TensorFlow's start-up noise stays quiet in the child processes too
    return path


def test_models_trained_side_by_side_equal_those_trained_alone(workdir, tmp_path):
    from kerascam.export import load_keras

    config = dataclasses.replace(configs.smoke(), model="unet_ablated", saved_model=False, **SMOKE_48)
    train(config, tmp_path, verbose=0)
    alone = load_keras(str(tmp_path / "unet_ablated" / "model.keras")).get_weights()
    assert io.read_json(str(tmp_path / "unet_ablated" / "run.json"))["threads"]["intra_op"] == 0  # the default pools
    side_by_side = load_keras(str(workdir / "unet_ablated" / "model.keras")).get_weights()
    for a, b in zip(alone, side_by_side):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_each_process_runs_its_share_of_the_cores_and_records_it(workdir):
    for name in MODEL_NAMES:
        threads = io.read_json(str(workdir / name / "run.json"))["threads"]
        assert threads == {"intra_op": threads_per_job(2), "inter_op": threads_per_job(2), "cpus": available_cpus()}


METHODS = ("gradcam", "gradcam++", "scorecam", "noise")
# The map-only scores: the model-based ones have tests of their own.
MAP_SCORES = ("reference", "ground_truth", "pointing_zhang", "sticker", "sticker_in_disk", "edge_correlation")


@pytest.fixture(scope="module")
def evaluated(workdir, tmp_path_factory):
    path = _linked_workdir(workdir, tmp_path_factory.mktemp("evaluated") / "runs", MODEL_NAMES)
    config = EvalConfig(workdir=str(path), methods=METHODS, scores=MAP_SCORES, num_images=6, batch_size=4, max_N=3,
                        num_figures=2)
    return path, evaluate(config, progress=False)


def read_records(workdir):
    with open(workdir / "eval" / "records.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_records_cover_every_image_model_and_method(evaluated):
    path, _ = evaluated
    records = read_records(path)
    assert len(records) == 6 * 4 * len(METHODS)
    keys = {(r["image_id"], r["model"], r["method"]) for r in records}
    assert len(keys) == len(records)
    scored = 0
    for r in records:
        assert r["status"] in ("ok", "zero", "constant", "nonfinite")
        if r["status"] == "ok" and r["reference_status"] == "ok":
            assert 0.0 <= float(r["score_reference"]) <= 1.0
            scored += 1
        if r["status"] != "ok":
            assert r["score_ground_truth"] == "" and r["pointing_hit"] == "" and r["edge_spearman"] == ""
        assert r["max_N"] == ("3" if r["method"] == "scorecam" else "")
        # Only disk_sticker images (class 4) have a sticker to score.
        assert (r["sticker_ratio"] != "") <= (r["label"] == "4")
    assert scored > 0  # the range check above ran on some records


def test_records_hold_the_scores_that_the_metrics_give(evaluated):
    """The refactor into scorers keeps every number: recomputed here from the
    maps with the metric functions, equal to the last printed digit."""
    from kerascam import metrics
    from kerascam.cams import explain
    from kerascam.data import load_split
    from kerascam.evaluation import find_models

    path, _ = evaluated
    records = {(int(r["image_id"]), r["model"], r["method"]): r for r in read_records(path)}
    models = {name: model for name, (model, _) in find_models(str(path)).items()}
    batch = next(load_split(dataclasses.replace(configs.smoke(), image_size=SIZE), "validation")
                 .examples.batch(4).as_numpy_iterator())
    reference = metrics.reference_mask(explain(models["resnet50"], batch["image"], "gradcam++"), 0.5)
    for name in ("unet", "vgg16"):
        maps, native = explain(models[name], batch["image"], "gradcam", return_native=True)
        status = metrics.map_status(native)
        s_ref = metrics.localization_score(maps, reference)
        s_gt = metrics.localization_score(maps, batch["mask"])
        hits, _ = metrics.pointing_game(maps, batch["mask"])
        for i in range(4):
            r = records[(i, name, "gradcam")]
            assert r["status"] == status[i]
            if status[i] == "ok":
                assert r["score_reference"] == f"{s_ref[i]:.6f}" and r["score_ground_truth"] == f"{s_gt[i]:.6f}"
                assert r["pointing_hit"] == str(int(hits[i]))
        assert "ok" in list(status), name  # at least one image's scores were compared


def test_table_equals_what_the_records_give(evaluated):
    path, table = evaluated
    records = read_records(path)
    on_disk = json.loads((path / "eval" / "table.json").read_text())
    for score in ("score_reference", "score_ground_truth", "pointing_hit", "edge_spearman"):
        for model in MODEL_NAMES:
            for method in METHODS:
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

    masks = np.stack([ex["mask"] for ex in load_split(dataclasses.replace(configs.smoke(), image_size=SIZE), "validation")
                      .examples.take(6).as_numpy_iterator()])
    assert on_disk["chance"]["score_ground_truth"]["mean"] == pytest.approx(masks.reshape(6, -1).mean(axis=1).mean())
    text = (path / "eval" / "table.md").read_text()
    assert "| unet |" in text and "scorecam_max_N=3" in text


def test_figures_are_written(evaluated):
    path, _ = evaluated
    for name in ("explanations.png", "native_maps.png"):
        read_figure(path / "eval" / "figures" / name)


def test_evaluate_cli_end_to_end_and_bad_input(workdir, tmp_path, capsys):
    from kerascam.cli import evaluate_main, run_cli

    path = _linked_workdir(workdir, tmp_path / "runs", ("unet", "vgg16"))
    result = run_python(["evaluate.py", "--workdir", str(path), "--cam", "gradcam", "edges", "--scores",
                         "ground_truth", "--num-images", "3", "--figures", "1", "--quiet"])
    assert result.returncode == 0, result.stderr
    assert "| vgg16 |" in result.stdout and "| gradcam | edges |" in result.stdout
    # Without ResNet50 there is no reference map: not asked for, so no line about it.
    assert "skipped" not in result.stdout
    for args, expected in [
        (["--cam", "lime"], "invalid choice: 'lime'"),
        (["--scores", "accuracy"], "invalid choice: 'accuracy'"),
        (["--workdir", "no-such-dir"], "does not exist"),
        (["--mask-threshold", "1.5", "--workdir", str(workdir)], "must lie in (0, 1)"),
        (["--batch-size", "0"], "positive integer"),
        (["--shard", "2", "--num-shards", "2", "--workdir", str(workdir)], "--shard must lie in 0..1"),
    ]:
        # In-process: the same code path as the command line, without the
        # start-up of a fresh process per case (test_cli.py runs those).
        code = run_cli(evaluate_main, args, "evaluate.py")
        err = capsys.readouterr().err
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and expected in err and "Traceback" not in err, err


def test_both_backends_give_the_same_maps_for_trained_models(workdir):
    from kerascam.data import load_split
    from kerascam.evaluation import explain_batch, find_models

    models = {name: model for name, (model, _) in find_models(str(workdir), ["unet", "resnet50"]).items()}
    batch = next(load_split(dataclasses.replace(configs.smoke(), image_size=SIZE), "validation").examples.batch(3).as_numpy_iterator())
    args = (models, ("gradcam", "gradcam++", "scorecam"), batch["image"], batch["label"], "predicted", 3)
    ours, predicted = explain_batch(*args, backend="kerascam")
    reference, predicted_ref = explain_batch(*args, backend="tf-keras-vis")
    from kerascam.models.preprocessing import input_baseline

    compared = 0
    for key in ours:
        name, method = key
        if method == "scorecam" and any(input_baseline(models[name])):
            # The engine masks towards the model's normalised zero (ResNet50's
            # ImageNet mean), tf-keras-vis towards raw 0: different maps by
            # design (tests/test_scorecam_baseline.py). The U-Net's zero is raw 0.
            continue
        np.testing.assert_array_equal(ours[key].status, reference[key].status)
        np.testing.assert_allclose(ours[key].maps, reference[key].maps, atol=1e-4, err_msg=str(key))
        compared += 1
    assert compared == len(ours) - 1  # all but ResNet50's ScoreCAM
    for name in models:
        np.testing.assert_array_equal(predicted[name], predicted_ref[name])


def test_sharded_evaluation_merges_into_the_unsharded_table(workdir, tmp_path):
    # The reference (ResNet50) and the paired twins; one CAM and one model-free column.
    path = _linked_workdir(workdir, tmp_path / "runs", ("unet", "unet_ablated", "resnet50"))
    base = dict(workdir=str(path), num_images=5, batch_size=2, num_figures=1, methods=("gradcam++", "noise"),
                scores=MAP_SCORES)
    whole = evaluate(EvalConfig(**base), progress=False)
    first = evaluate(EvalConfig(**base, shard=1, num_shards=2), progress=False)
    assert first["missing_shards"] == [0]
    merged = evaluate(EvalConfig(**base, shard=0, num_shards=2), progress=False)
    for key in ("score_reference", "score_ground_truth", "pointing_hit", "pointing_hit_zhang", "sticker_disk_ratio", "chance",
                "paired_unet_minus_ablated"):
        assert json.dumps(merged[key], sort_keys=True, default=str) == json.dumps(whole[key], sort_keys=True, default=str), key
    assert merged["settings"]["images"] == whole["settings"]["images"] == 5
    records = read_records(path)
    assert sorted({int(r["image_id"]) for r in records}) == [0, 1, 2, 3, 4]
    # --merge rebuilds the same table from the saved shards alone.
    from kerascam.evaluation import merge_shards

    again = merge_shards(EvalConfig(**base, num_shards=2))
    assert json.dumps(again["score_ground_truth"], sort_keys=True) == json.dumps(whole["score_ground_truth"], sort_keys=True)


def test_evaluations_of_different_models_join_into_the_table_of_one(workdir, tmp_path, capsys):
    """A model evaluated later (here ResNet50) joins the others' evaluation: the
    joined table is the one evaluation of all four would have written."""
    from kerascam.evaluation.join import join, join_tables, main as join_main

    scores = tuple(s for s in MAP_SCORES if s != "reference")  # the paper's score cannot be joined
    base = dict(num_images=5, batch_size=2, num_figures=1, methods=("gradcam++", "noise", "edges"), scores=scores)
    runs = {}
    for name, models in (("all", MODEL_NAMES), ("three", ("unet", "unet_ablated", "vgg16")), ("later", ("resnet50",))):
        runs[name] = _linked_workdir(workdir, tmp_path / name, models)
        evaluate(EvalConfig(workdir=str(runs[name]), **base), progress=False)
    joined = join(str(tmp_path / "joined"), [str(runs["later"] / "eval"), str(runs["three"] / "eval")])
    whole = io.read_json(str(runs["all"] / "eval" / "table.json"))
    assert {k for k in joined if k not in ("settings", "seconds", "seconds_by_stage")} == \
        {k for k in whole if k not in ("settings", "seconds", "seconds_by_stage")}
    for key, entry in whole.items():
        if key in ("settings", "seconds", "seconds_by_stage"):
            continue
        assert json.dumps(joined[key], sort_keys=True, default=str) == json.dumps(entry, sort_keys=True, default=str), key
    assert list(joined["score_ground_truth"]) == list(MODEL_NAMES)
    assert joined["paired_unet_minus_ablated"]["score_ground_truth"]["gradcam++"]["n"] == 5
    assert joined["settings"] == dict(whole["settings"], reference="none (joined evaluations)", joined=2)
    # A joined table joins again: VGG16 taken out of the three, then joined back.
    twins = io.read_json(str(runs["three"] / "eval" / "table.json"))
    vgg16_only = json.loads(json.dumps(twins))
    for key, entry in twins.items():
        if key not in ("settings", "seconds", "seconds_by_stage", "chance", "paired_unet_minus_ablated") \
                and isinstance(entry, dict) and "vgg16" in entry:
            vgg16_only[key] = {"vgg16": entry.pop("vgg16")}
    vgg16_only["paired_unet_minus_ablated"] = {}
    later = io.read_json(str(runs["later"] / "eval" / "table.json"))
    twins_and_resnet50, _, _ = join_tables([("twins", twins), ("later", later)])
    again, models, _ = join_tables([("joined", twins_and_resnet50), ("vgg16", vgg16_only)])
    assert models == list(MODEL_NAMES) and again["settings"]["joined"] == 3
    assert json.dumps(again["score_ground_truth"], sort_keys=True) == json.dumps(whole["score_ground_truth"], sort_keys=True)
    written = io.read_json(str(tmp_path / "joined" / "table.json"))
    assert written["score_ground_truth"]["resnet50"] == whole["score_ground_truth"]["resnet50"]
    markdown = (tmp_path / "joined" / "table.md").read_text()
    assert "| model | gradcam++ | noise | edges |" in markdown  # evaluate.py's order, not table.json's
    assert "| resnet50 |" in markdown and "| vgg16 |" in markdown

    # What cannot be joined is refused in one line.
    three = io.read_json(str(runs["three"] / "eval" / "table.json"))
    later = io.read_json(str(runs["later"] / "eval" / "table.json"))
    every = io.read_json(str(runs["all"] / "eval" / "table.json"))

    def refused(named, match):
        with pytest.raises(ValueError, match=match):
            join_tables(named)

    refused([("a", three), ("b", every)], "unet is in both a and b")
    refused([("a", three), ("b", {"score_ground_truth": {}})], "b: not the table.json of an evaluation")
    refused([("a", three), ("b", dict(later, settings=dict(later["settings"], images=4)))], r"other settings.*\(images")
    other_images = json.loads(json.dumps(later))
    other_images["chance"]["score_ground_truth"]["mean"] += 0.01
    refused([("a", three), ("b", other_images)], "did not score the same images")
    refused([("a", three), ("b", dict(later, score_reference=later["score_ground_truth"]))], "paper's score")
    split_twins = json.loads(json.dumps(three)), json.loads(json.dumps(later))
    for key, entry in split_twins[0].items():  # the twin moved to the other evaluation
        if key not in ("settings", "seconds", "seconds_by_stage", "chance", "paired_unet_minus_ablated") \
                and isinstance(entry, dict) and "unet_ablated" in entry:
            split_twins[1][key]["unet_ablated"] = entry.pop("unet_ablated")
    refused([("a", split_twins[0]), ("b", split_twins[1])], "compared image by image")
    with pytest.raises(SystemExit) as exit_:
        join_main([str(tmp_path / "out"), str(runs["three"] / "eval"), str(tmp_path / "nowhere")])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{tmp_path / 'nowhere'} holds no table.json" in error
    assert not (tmp_path / "out").exists()


def _linked_workdir(trained, path, models):
    """A workdir of its own (its own eval/) whose model folders link to the trained ones."""
    path.mkdir()
    for name in models:
        (path / name).symlink_to(trained / name, target_is_directory=True)
    return path


def _run_in_process(argv, capsys):
    from kerascam.cli import evaluate_main, run_cli

    code = run_cli(evaluate_main, argv, "evaluate.py")
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _table_without_time(workdir):
    table = json.loads((workdir / "eval" / "table.json").read_text())
    assert table.pop("seconds") > 0
    table.pop("seconds_by_stage", None)  # of the last process only
    return table


def test_killed_evaluation_resumes_to_the_same_table(workdir, tmp_path, capsys):
    models = ("unet", "unet_ablated")
    # 12 parts of one batch of two images: long enough to be killed midway.
    flags = ["--models", *models, "--cam", "gradcam", "--scores", *MAP_SCORES, "--split", "train", "--num-images", "24", "--batch-size", "2",
             "--chunk", "1", "--figures", "3", "--quiet"]
    whole = _linked_workdir(workdir, tmp_path / "whole", models)
    _run_in_process(["--workdir", str(whole), *flags], capsys)

    killed = _linked_workdir(workdir, tmp_path / "killed", models)
    parts = killed / "eval" / "shards" / "shard-0-of-1"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    child = subprocess.Popen([sys.executable, "evaluate.py", "--workdir", str(killed), *flags], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (parts / "chunk-00000.json").exists():
            assert child.poll() is None and time.monotonic() < deadline, "evaluate.py ended before saving a part"
            time.sleep(0.002)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    saved = sorted(parts.glob("chunk-*.json"))
    assert 1 <= len(saved) < 12 and not (killed / "eval" / "table.json").exists()
    assert [p.name for p in saved] == [f"chunk-{i:05d}.json" for i in range(len(saved))]
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in saved}

    out = _run_in_process(["--workdir", str(killed), *flags], capsys)
    assert f"resuming: {len(saved)} of 12 chunks done" in out
    # The saved parts were not written again (atomic writes would give new inodes).
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in saved} == before
    assert len(list(parts.glob("chunk-*.json"))) == 12
    # Exactly equal: the same batches through the same computations, records
    # rounded to 6 decimals, sums added in the same order whatever was resumed.
    assert _table_without_time(killed) == _table_without_time(whole)
    for name in ("records.csv", "table.md", "figures/explanations.png", "figures/native_maps.png"):
        assert (killed / "eval" / name).read_bytes() == (whole / "eval" / name).read_bytes(), name

    # Again, after the end: nothing left to explain, the same table.
    out = _run_in_process(["--workdir", str(killed), *flags], capsys)
    assert "resuming: 12 of 12 chunks done" in out
    assert _table_without_time(killed) == _table_without_time(whole)


def test_parts_of_other_settings_are_set_aside_and_never_merged(workdir, tmp_path, capsys):
    path = _linked_workdir(workdir, tmp_path / "runs", ("unet",))
    base = dict(workdir=str(path), models=["unet"], methods=("gradcam",), scores=MAP_SCORES, num_images=4, batch_size=1, chunk=1,
                num_figures=0, shard=1, num_shards=2)
    assert evaluate(EvalConfig(**base), progress=False)["missing_shards"] == [0]  # images 1 and 3: two parts
    assert evaluate(EvalConfig(**dict(base, num_images=2)), progress=False)["missing_shards"] == [0]
    out = capsys.readouterr().out
    assert "not resuming" in out and "settings changed (num_images)" in out and "resuming:" not in out
    assert len(list((path / "eval" / "stale" / "shard-1-of-2").glob("chunk-*.json"))) == 2
    assert len(list((path / "eval" / "shards" / "shard-1-of-2").glob("chunk-*.json"))) == 1
    # Shards run with other settings are not merged into one table.
    with pytest.raises(ValueError, match=r"shard-1-of-2 was evaluated with other settings .*\(methods differ\)"):
        evaluate(EvalConfig(**dict(base, num_images=2, methods=("gradcam++",), shard=0)), progress=False)
    assert not (path / "eval" / "table.json").exists()


def test_dataset_with_more_classes_than_the_model_fails_before_any_work(workdir, tmp_path, capsys):
    from helpers_ilsvrc import solid_image, write_image_folder

    from kerascam.cli import evaluate_main, run_cli

    folder = tmp_path / "seven"
    write_image_folder(folder, {"validation": {f"class{i}": [solid_image(12, 12, 30 * i)] for i in range(7)}})
    path = _linked_workdir(workdir, tmp_path / "runs", ("unet",))
    code = run_cli(evaluate_main, ["--workdir", str(path), "--dataset", f"folder:{folder}", "--quiet"], "evaluate.py")
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        f"evaluate.py: error: model 'unet' has 5 outputs but dataset 'folder:{folder}' has 7 classes, so labels 5 to 6 "
        "have no output; evaluate it on the data it was trained on"
    ]
    assert not (path / "eval" / "shards").exists()


def test_evaluation_of_a_folder_with_bad_files_goes_on_and_names_them(workdir, tmp_path, capsys):
    from helpers_ilsvrc import solid_image, write_image_folder

    folder = tmp_path / "five"
    write_image_folder(folder, {"validation": {f"class{i}": [solid_image(40, 50, 40 * i)] * 2 for i in range(5)}})
    (folder / "validation" / "class1" / "empty.jpg").write_bytes(b"")
    (folder / "validation" / "class3" / "..jpg").write_bytes(b"not an image")  # a name that looks like a path
    path = _linked_workdir(workdir, tmp_path / "runs", ("unet",))
    before = {p for p in tmp_path.rglob("*")}
    out = _run_in_process(
        ["--workdir", str(path), "--dataset", f"folder:{folder}", "--cam", "gradcam", "--scores", *MAP_SCORES,
         "--figures", "2", "--quiet"], capsys
    )
    assert "skipped 2 unreadable files: class1/empty.jpg, class3/..jpg" in out
    # A score that needs what the data lacks: one line each, the others go on.
    assert "score 'ground_truth' skipped: the dataset has no ground-truth masks" in out
    assert "score 'sticker' skipped: the dataset has no evidence masks" in out
    assert "score 'reference' skipped" in out
    table = _table_without_time(path)
    assert table["settings"]["unreadable_files_skipped"] == 2 and table["settings"]["images"] == 10
    assert table["score_ground_truth"]["unet"]["gradcam"]["n"] == 0  # folders have no masks
    # Every output lands in the eval folder, whatever the dataset's file names.
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    assert written and all((path / "eval") in p.parents for p in written), sorted(map(str, written))


def test_scores_that_need_the_model_run_inside_the_experiment(workdir, tmp_path):
    """Deletion/insertion, ROAD and randomization through `evaluate`: only the
    first images are scored, the others are not counted as undefined, and
    their tables, curves and figures are written."""
    path = _linked_workdir(workdir, tmp_path / "runs", ("unet", "unet_ablated"))
    table = evaluate(EvalConfig(workdir=str(path), methods=("gradcam", "edges"), scores=("faithfulness", "road",
                                                                                          "randomization"),
                                num_images=3, batch_size=3, num_figures=0, faithfulness_images=2,
                                faithfulness_steps=4, road_images=1, randomization_images=2), progress=False)
    records = read_records(path)
    for r in records:
        scored = int(r["image_id"]) < 2
        assert (r["deletion_auc"] != "") == (scored and r["status"] == "ok")
        assert (r["road_morf"] != "") == (r["image_id"] == "0" and r["status"] == "ok")
        if r["method"] == "edges" and scored:  # a map that ignores the weights fails the check
            assert float(r["randomization_spearman"]) == pytest.approx(1.0)
    for model in ("unet", "unet_ablated"):
        cell = table["deletion_auc"][model]["gradcam"]
        defined = sum(1 for r in records if r["model"] == model and r["method"] == "gradcam" and r["deletion_auc"])
        assert cell["n"] == defined and cell["n"] + cell["undefined"] == 2
        assert 0.0 <= cell["mean"] <= 1.0
    assert table["paired_unet_minus_ablated"]["deletion_auc_vs_noise"]["gradcam"]["n"] <= 2
    assert "deletion_auc" not in table["paired_unet_minus_ablated"]  # models compare on the baselined figure
    assert table["paired_unet_minus_ablated"]["road_combined_vs_noise"]["gradcam"]["n"] <= 1
    assert "faithfulness_curves" in table and "randomization_cascade" in table
    assert not any(key.startswith("_") for key in table)  # figure data stays out of table.json
    assert table["settings"]["faithfulness_images"] == 2 and table["settings"]["randomization_images"] == 2
    assert set(table["seconds_by_stage"]) >= {"explain", "faithfulness", "road", "randomization"}
    for name in ("faithfulness.png", "road.png", "randomization_curves.png", "randomization_grid.png"):
        read_figure(path / "eval" / "figures" / name)


def test_a_damaged_saved_part_is_recomputed_never_merged(workdir, tmp_path, capsys):
    """A part cut short by a crash where rename is not atomic: found on resume,
    recomputed with the parts after it, and the table equals an undamaged run's."""
    flags = ["--models", "unet", "--cam", "gradcam", "--scores", *MAP_SCORES, "--num-images", "3", "--batch-size", "1",
             "--chunk", "1", "--figures", "2", "--quiet"]
    whole = _linked_workdir(workdir, tmp_path / "whole", ("unet",))
    _run_in_process(["--workdir", str(whole), *flags], capsys)
    damaged = _linked_workdir(workdir, tmp_path / "damaged", ("unet",))
    _run_in_process(["--workdir", str(damaged), *flags], capsys)
    parts = damaged / "eval" / "shards" / "shard-0-of-1"
    text = (parts / "chunk-00001.json").read_text()
    (parts / "chunk-00001.json").write_text(text[: len(text) // 2])  # truncated mid-write
    out = _run_in_process(["--workdir", str(damaged), *flags], capsys)
    assert "chunk-00001 is damaged (truncated or unreadable .json or .npz); recomputing from chunk 1" in out
    assert "resuming: 1 of 3 chunks done" in out
    assert _table_without_time(damaged) == _table_without_time(whole)
    # Figure data cut short: the same, from its part on.
    (parts / "chunk-00000.npz").write_bytes((parts / "chunk-00000.npz").read_bytes()[:100])
    out = _run_in_process(["--workdir", str(damaged), *flags], capsys)
    assert "chunk-00000 is damaged" in out and "resuming" not in out
    assert _table_without_time(damaged) == _table_without_time(whole)
    for name in ("records.csv", "figures/explanations.png"):
        assert (damaged / "eval" / name).read_bytes() == (whole / "eval" / name).read_bytes(), name
