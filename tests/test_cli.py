import pytest

from conftest import ROOT, run_python


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model", "resnet18"], "invalid choice: 'resnet18'"),
        (["--batch-size", "0"], "expected a positive integer, got 0"),
        (["--batch-size", "-3"], "expected a positive integer, got -3"),
        (["--model", "unet", "--image-size", "40"], "multiple of 16"),
        (["--model", "vgg16", "--image-size", "16"], "at least 32"),
        (["--weights", "missing.weights.h5", "--model", "vgg16"], "no such file"),
        (["--preset", "huge"], "invalid choice: 'huge'"),
        (["--workdir", "setup.cfg/runs"], "cannot write to"),
        (["--dataset", "cifar10"], "Unknown dataset 'cifar10'. Choose one of: shapes, markers, imagenet2012, folder:PATH"),
        (["--dataset", "folder:/no/such/folder"], "/no/such/folder"),
        (["--model", "all", "--weights", "setup.cfg"], "--weights applies to one model"),  # conflicting flags
        (["--learning-rate", "-0.1"], "expected a positive number, got -0.1"),
        (["--model", "all", "--jobs", "2", "--strategy", "mirrored"], "with --strategy mirrored train them one at a time"),
        (["--dataset", "imagenet2012", "--data-dir", "/no/such/tfds", "--manual-dir", "/no/such/manual"],
         "needs /no/such/manual/ILSVRC2012_img_train.tar"),
    ],
)
def test_train_bad_input_is_one_line_and_exit_2(args, expected, tmp_path, monkeypatch, capsys):
    # In-process: the code path of the command line (run_cli around train_main)
    # without a fresh process per case; the next test runs train.py itself.
    from kerascam.cli import run_cli, train_main

    monkeypatch.chdir(ROOT)  # the relative paths above are the repository's
    # (a --workdir in args comes last and wins)
    code = run_cli(train_main, ["--workdir", str(tmp_path / "runs"), *args], "train.py")
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("train.py: error:")
    assert expected in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing written


def test_train_py_itself_gives_one_line_exit_2_and_a_traceback_with_debug(tmp_path):
    from kerascam.cli import run_cli, train_main

    result = run_python(["train.py", "--model", "unet", "--image-size", "40", "--workdir", str(tmp_path)], timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: error:") and "multiple of 16" in lines[0], result.stderr
    # --debug lets the error out of run_cli, to Python's traceback (in-process:
    # a second process would only repeat the start-up above).
    with pytest.raises(ValueError, match="multiple of 16"):
        run_cli(train_main, ["--model", "unet", "--image-size", "40", "--debug", "--workdir", str(tmp_path)], "train.py")


def test_empty_folder_dataset_and_too_few_images_fail_before_training(tmp_path, capsys):
    from kerascam.cli import run_cli, train_main

    (tmp_path / "images" / "train" / "cat").mkdir(parents=True)
    code = run_cli(train_main, ["--dataset", f"folder:{tmp_path / 'images'}", "--workdir", str(tmp_path / "runs")],
                   "train.py")
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "train.py: error:" in err
    assert not (tmp_path / "runs" / "unet").exists()  # nothing written for a run that never started

    code = run_cli(train_main, ["--preset", "smoke", "--train-examples", "5", "--batch-size", "8", "--quiet",
                                "--workdir", str(tmp_path / "runs")], "train.py")
    err = capsys.readouterr().err
    assert code == 1, err
    assert "fewer than one batch" in err and "Traceback" not in err


def test_evaluate_reports_a_full_disk_before_any_work(tmp_path, monkeypatch, capsys):
    import collections
    import shutil

    from kerascam.cli import evaluate_main, run_cli

    (tmp_path / "runs").mkdir()
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 2**20, 2**20))
    code = run_cli(evaluate_main, ["--workdir", str(tmp_path / "runs")], "evaluate.py")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "not enough free space" in err[0] and "1 MiB free" in err[0]
    assert not (tmp_path / "runs" / "eval" / "shards").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], "no trained model in"),
        (["--models", "vgg16"], "vgg16/model.keras does not exist; train it with: python train.py --model vgg16"),
        (["--cam", "lime"], "invalid choice: 'lime'"),
        (["--dataset", "cifar10"], "Unknown dataset 'cifar10'. Choose one of: shapes, markers, imagenet2012, folder:PATH"),
    ],
)
def test_evaluate_without_trained_models_or_with_a_bad_method_exits_2(tmp_path, capsys, args, expected):
    from kerascam.cli import evaluate_main, run_cli

    (tmp_path / "runs").mkdir()
    code = run_cli(evaluate_main, ["--workdir", str(tmp_path / "runs"), *args], "evaluate.py")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("evaluate.py: error:"), err
    assert expected in err[0]


def test_evaluate_finds_models_of_any_name_and_leaves_out_fused_columns_they_lack(tmp_path, capsys):
    import keras

    from kerascam.cli import evaluate_parser
    from kerascam.evaluation import experiment
    from kerascam.export import save_keras
    from kerascam.io import write_json
    from kerascam.models import build_model

    workdir = tmp_path / "runs"
    (workdir / "unet").mkdir(parents=True)
    (workdir / "mine").mkdir()
    save_keras(build_model("unet", 32, 3, unet_filters=4), workdir / "unet" / "model.keras")
    write_json(workdir / "unet" / "run.json", {"config": {"model": "unet", "image_size": 32, "dataset": "shapes"}})
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.Conv2D(4, 3, activation="relu", name="features")(inputs)
    outputs = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D()(features))
    save_keras(keras.Model(inputs, outputs, name="mine"), workdir / "mine" / "model.keras")  # no run.json

    assert evaluate_parser().parse_args(["--models", "mine"]).models == ["mine"]
    runs = experiment.find_models(str(workdir))
    assert list(runs) == ["unet", "mine"]  # the paper's models first, then the others by name
    data = experiment._data_config(runs, None)
    assert (data.dataset, data.image_size) == ("shapes", 32)
    with pytest.raises(ValueError, match="--dataset"):
        experiment._data_config({"mine": runs["mine"]}, None)
    with pytest.raises(FileNotFoundError, match="models in .*: mine, unet"):
        experiment.find_models(str(workdir), ["theirs"])

    models = {name: model for name, (model, _) in runs.items()}
    capsys.readouterr()
    kept = experiment._columns_every_model_has(["gradcam", "layercam-fused"], models)
    assert kept == ["gradcam"]
    assert "column 'layercam-fused' skipped: no fusion layers are declared for 'mine'" in capsys.readouterr().out
    assert experiment._columns_every_model_has(["gradcam", "layercam-fused"], {"unet": models["unet"]}) == [
        "gradcam", "layercam-fused"]


@pytest.mark.parametrize("cpus, jobs, threads", [(2, 2, 1), (2, 1, 2), (16, 2, 8), (3, 2, 1), (1, 2, 1)])
def test_training_processes_split_the_cores(monkeypatch, cpus, jobs, threads):
    from kerascam import cli, training

    monkeypatch.setattr(training, "available_cpus", lambda: cpus)
    assert cli.threads_per_job(jobs) == threads


def test_another_keras_backend_is_one_line_and_exit_2(monkeypatch, capsys):
    from kerascam.cli import run_cli

    called = []
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert run_cli(lambda argv: called.append(argv), ["--model", "unet"], "train.py") == 2
    err = capsys.readouterr().err
    assert not called and err.count("\n") == 1
    assert err.startswith("train.py: error:") and "KERAS_BACKEND is 'torch'" in err
    assert "tensorflow or jax" in err
    # JAX: train.py, evaluate.py and explain run (tests/test_jax_training.py,
    # tests/test_jax_evaluation.py); a command not declared ready is refused.
    from kerascam import backend

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setattr(backend, "name", lambda: "jax")  # Keras, imported here, answers tensorflow
    assert run_cli(lambda argv: called.append(argv), ["--cam", "all"], "not_ready.py") == 2
    err = capsys.readouterr().err
    assert not called and err.count("\n") == 1 and "KERAS_BACKEND is 'jax'" in err
    for prog, argv in (("train.py", ["--model", "unet"]), ("evaluate.py", ["--cam", "all"]),
                       ("kerascam explain", ["x.png", "--model", "unet"])):
        assert run_cli(lambda argv: called.append(argv), argv, prog) == 0
        assert called.pop() == argv
    monkeypatch.undo()  # KERAS_BACKEND and backend.name() as they were
    assert run_cli(lambda argv: called.append(argv), ["--model", "unet"], "train.py") == 0 and called == [["--model", "unet"]]


def test_every_train_flag_sets_a_field_of_the_config():
    import dataclasses

    from kerascam import cli, configs

    fields = {f.name for f in dataclasses.fields(configs.TrainConfig)}
    flags = {option.flag: option.field for option in cli.TRAIN_FLAGS if option.field}
    assert flags["--low-res-epochs"] == "low_resolution_epochs" and flags["--image-size"] == "image_size"
    assert set(flags.values()) <= fields, set(flags.values()) - fields
    args = cli.train_parser().parse_args(["--jit", "--seed", "0", "--low-res-size", "16", "--no-saved-model", "--workdir", "w"])
    given = {option.field: option.value(args) for option in cli.TRAIN_FLAGS if option.field}
    # Not given: None (the preset's value stays); a switch left off is None, not False; 0 stays 0.
    assert {k: v for k, v in given.items() if v is not None} == {"jit": True, "seed": 0, "low_resolution_size": 16,
                                                                 "saved_model": False}
    args = cli.train_parser().parse_args(["--workdir", "w"])
    assert {option.field: option.value(args) for option in cli.TRAIN_FLAGS if option.field}["saved_model"] is None


def test_every_evaluate_flag_sets_a_field_of_the_config():
    import dataclasses

    from kerascam import cli
    from kerascam.evaluation import EvalConfig

    flags = cli.evaluate_flags()
    assert {o.field for o in flags if o.field} <= {f.name for f in dataclasses.fields(EvalConfig)}
    args = cli.evaluate_parser("evaluate.py", flags).parse_args(
        ["--cam", "gradcam", "noise", "gradcam", "--scores", "reference", "--max-n", "0", "--figures", "3"])
    fields = {o.field: o.value(args) for o in flags if o.field}
    assert fields["methods"] == ("gradcam", "noise") and fields["scores"] == ("reference",)
    assert fields["max_N"] is None and fields["num_figures"] == 3 and fields["boxes_dir"] is None
    defaults = cli.evaluate_parser("evaluate.py", flags).parse_args([])
    assert {o.field: o.value(defaults) for o in flags if o.field}["scores"] is None  # all of them
