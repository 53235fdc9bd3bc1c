"""Automatic precision (kerascam/precision.py), the paper224 preset, and the GPU check's CPU exit."""

import contextlib
import importlib.util
import io as _io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from kerascam import configs, precision

NATIVE_REASON = "auto: the CPU has avx512_bf16"


def _hardware(monkeypatch, cpu_flags=(), gpus=()):
    monkeypatch.setattr(precision, "cpu_bfloat16_flags", lambda: tuple(cpu_flags))
    monkeypatch.setattr(precision, "gpu_compute_capabilities", lambda: list(gpus))


def test_cpu_flags_come_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile amx_bf16\n\nprocessor\t: 1\n")
    assert precision.cpu_bfloat16_flags(str(cpuinfo)) == ("avx512_bf16", "amx_bf16")
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx512_vnni\n")  # AVX-512 without its bfloat16 extension
    assert precision.cpu_bfloat16_flags(str(cpuinfo)) == ()
    assert precision.cpu_bfloat16_flags(str(tmp_path / "missing")) == ()


@pytest.mark.parametrize(
    "cpu_flags, gpus, policy, reason",
    [
        ((), (), None, "auto: the CPU has neither avx512_bf16 nor amx_bf16"),
        (("avx512_bf16",), (), "mixed_bfloat16", NATIVE_REASON),
        (("amx_bf16",), (), "mixed_bfloat16", "auto: the CPU has amx_bf16"),
        # On a GPU machine the GPU decides, whatever the CPU has.
        (("avx512_bf16",), [("NVIDIA H200", (9, 0))], "mixed_bfloat16",
         "auto: the GPU NVIDIA H200 has compute capability 9.0"),
        (("avx512_bf16",), [("Tesla V100", (7, 0))], None, "auto: the GPU Tesla V100 has compute capability 7.0"),
    ],
)
def test_auto_picks_bfloat16_only_with_native_support(monkeypatch, cpu_flags, gpus, policy, reason):
    _hardware(monkeypatch, cpu_flags, gpus)
    choice = precision.resolve_mixed_precision("auto")
    assert (choice.policy, choice.reason, choice.warning) == (policy, reason, None)
    assert choice.describe() == f"precision {policy or 'float32'} ({reason})"


def test_explicit_requests_and_the_warning_for_emulated_bfloat16(monkeypatch, tmp_path, capsys):
    from kerascam.cli import _resolve_precision

    _hardware(monkeypatch)
    assert precision.resolve_mixed_precision("none").policy is None
    assert precision.resolve_mixed_precision("mixed_float16").policy == "mixed_float16"
    with pytest.raises(ValueError, match="Unknown mixed precision 'bf16'"):
        precision.resolve_mixed_precision("bf16")

    config = configs.smoke().for_model("unet")
    [resolved], _ = _resolve_precision([config], {config.model: "mixed_bfloat16"}, str(tmp_path))
    out, err = capsys.readouterr()
    assert resolved.mixed_precision == "mixed_bfloat16"  # forced: it runs
    assert out.splitlines() == [
        "precision mixed_bfloat16 (as asked; the CPU has neither avx512_bf16 nor amx_bf16)"
    ]
    assert err.splitlines() == [
        "train.py: warning: mixed_bfloat16 without native bfloat16 (the CPU has neither avx512_bf16 nor amx_bf16): "
        "it is emulated and will train slower than float32"
    ]
    _hardware(monkeypatch, ("avx512_bf16",))
    _resolve_precision([config], {config.model: "mixed_bfloat16"}, str(tmp_path))
    assert capsys.readouterr().err == ""  # no warning where it is native


def test_a_preset_can_default_each_model_to_its_own_precision(monkeypatch, tmp_path, capsys):
    from kerascam.cli import _resolve_precision

    monkeypatch.setitem(configs.DEFAULT_MIXED_PRECISION, "smoke", {"vgg16": "auto", "default": "none"})
    assert configs.default_mixed_precision("smoke", "vgg16") == "auto"
    assert configs.default_mixed_precision("smoke", "unet") == "none"
    assert configs.default_mixed_precision("paper224", "unet") == "auto"
    # The demo: VGG16 and ResNet50 (its costliest models) in bfloat16 where native, the U-Nets float32.
    assert [configs.default_mixed_precision("demo", m) for m in ("unet", "unet_ablated", "resnet50", "vgg16")] == [
        "none", "none", "auto", "auto"]
    assert configs.default_mixed_precision("no such preset", "unet") == "none"
    run_configs = [configs.smoke().for_model(m) for m in ("unet", "vgg16")]
    requested = {c.model: configs.default_mixed_precision("smoke", c.model) for c in run_configs}
    for flags, policies in [(("avx512_bf16",), [None, "mixed_bfloat16"]), ((), [None, None])]:
        _hardware(monkeypatch, flags)
        resolved, choices = _resolve_precision(run_configs, requested, str(tmp_path), preset="smoke")
        assert [c.mixed_precision for c in resolved] == policies
        lines = capsys.readouterr().out.splitlines()
        if flags:  # two choices: one line per model
            assert lines == ["unet: precision float32 (the smoke preset's default)",
                             f"vgg16: precision mixed_bfloat16 ({NATIVE_REASON})"]
        assert choices["vgg16"].requested == "auto"


def test_auto_resumes_a_run_in_the_precision_it_started_with(monkeypatch, tmp_path):
    _hardware(monkeypatch, ("avx512_bf16",))
    run_dir = tmp_path / "unet"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"model": "unet", "mixed_precision": None}))
    choice = precision.resolve_for_run("auto", str(run_dir))
    assert choice.policy is None and "resuming" in choice.reason
    # An explicit request is taken as asked (train() then refuses the mismatch).
    assert precision.resolve_for_run("mixed_bfloat16", str(run_dir)).policy == "mixed_bfloat16"
    assert precision.resolve_for_run("auto", str(tmp_path / "new")).policy == "mixed_bfloat16"


# ----------------------------------------------------------------- the run's first line and run.json


@pytest.mark.parametrize(
    "flags, policy, requested, reason",
    [
        (["--mixed-precision", "auto"], "mixed_bfloat16", "auto", NATIVE_REASON),
        (["--mixed-precision", "none"], None, "none", "asked for float32"),
        ([], None, "none", "the smoke preset's default"),
        (["--mixed-precision"], "mixed_float16", "mixed_float16", "as asked, with dynamic loss scaling"),
    ],
)
def test_train_py_resolves_the_precision_says_so_first_and_records_it(monkeypatch, tmp_path, flags, policy, requested,
                                                                      reason):
    from kerascam import io, training
    from kerascam.cli import run_cli, train_main

    def fake_train(config, workdir, verbose=1):  # what train() writes, without the training
        os.makedirs(os.path.join(workdir, config.model))
        trained.append(config)
        summary = {"model": config.model, "config": config.to_dict(), "val_accuracy": 0.5, "epochs_completed": 1,
                   "wall_seconds": 1.0, "parameters": 1}
        io.write_json(os.path.join(workdir, config.model, "run.json"), summary)
        return summary

    trained = []
    _hardware(monkeypatch, ("avx512_bf16",))
    monkeypatch.setattr(training, "train", fake_train)
    out = _io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run_cli(train_main, ["--model", "unet", "--preset", "smoke", "--jobs", "1", *flags,
                                    "--workdir", str(tmp_path)], "train.py")
    assert code == 0
    assert out.getvalue().splitlines()[0] == f"precision {policy or 'float32'} ({reason})"
    assert [c.mixed_precision for c in trained] == [policy]
    summary = json.loads((tmp_path / "unet" / "run.json").read_text())
    assert summary["config"]["mixed_precision"] == policy
    assert summary["precision"] == {"policy": policy or "float32", "requested": requested, "reason": reason}


# ----------------------------------------------------------------- bfloat16 training on this CPU


@pytest.fixture(scope="module")
def twin_models():
    """The smoke U-Net after the same 5 train steps (kerascam.training.make_train_step, the
    step of train()) from the same seed in float32 and in mixed_bfloat16, the latter as
    train() exports it (its float32 copy); and 32 validation images."""
    import dataclasses

    import keras
    import tensorflow as tf

    from kerascam import training
    from kerascam.data import load_split

    config = dataclasses.replace(configs.smoke(), model="unet", train_examples=48, validation_examples=32)
    split = load_split(config, "train")
    batches = list(split.examples.batch(config.batch_size).take(5).as_numpy_iterator())
    models = {}
    for policy in (None, "mixed_bfloat16"):
        run_config = dataclasses.replace(config, mixed_precision=policy)
        strategy = training.make_strategy("default")
        keras.utils.set_random_seed(config.seed)
        with training.dtype_policy(policy):
            model = training.build_model_for(run_config, split.num_classes)
            optimizer = training.make_optimizer(run_config, len(batches))
            optimizer.build(model.trainable_variables)
            step = training.make_train_step(model, optimizer, strategy, num_classes=split.num_classes,
                                            global_batch=config.batch_size)
            for batch in batches:
                step({"image": tf.constant(batch["image"]), "label": tf.constant(batch["label"])})
        models[policy or "float32"] = training.loop._float32_copy(model, run_config, split.num_classes) if policy else model
    images = next(load_split(config, "validation").examples.batch(32).as_numpy_iterator())["image"]
    return models, images


def test_bfloat16_training_explains_like_float32_training(twin_models):
    from kerascam import cams

    models, images = twin_models
    assert {layer.dtype_policy.name for layer in models["mixed_bfloat16"].layers} == {"float32"}  # exported as float32
    # bfloat16 really ran: the weights differ, but only by its rounding.
    assert any(not np.array_equal(a, b) for a, b in zip(*(m.get_weights() for m in models.values())))
    logits = {name: model.predict(images, verbose=0) for name, model in models.items()}
    classes = logits["float32"].argmax(-1)
    assert np.mean(logits["mixed_bfloat16"].argmax(-1) == classes) >= 0.9
    maps = {name: np.asarray(cams.explain(model, images[:8], "gradcam", classes[:8])) for name, model in models.items()}
    correlations = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(maps["mixed_bfloat16"], maps["float32"])]
    # Measured: median 0.998, while these 5 steps take the float32 maps to a
    # correlation of 0.95 with the untrained model's.
    assert np.median(correlations) > 0.98 and min(correlations) > 0.9, correlations


# ----------------------------------------------------------------- paper224, train_speed, gpu_check


def test_paper224_builds_valid_configs_for_the_four_models():
    from kerascam.cli import train_parser
    from kerascam.models import MODEL_NAMES, check_image_size

    preset = configs.get_preset("paper224")
    assert configs.DEFAULT_MIXED_PRECISION["paper224"] == "auto"
    for name in MODEL_NAMES:
        config = preset.for_model(name)
        check_image_size(name, config.image_size)
        assert (config.model, config.dataset, config.image_size, config.unet_filters) == (name, "shapes", 224, 64)
        steps = config.train_examples // config.batch_size
        assert steps * config.epochs >= 250, (name, steps, config.epochs)  # enough steps to learn the shapes
    assert preset.for_model("vgg16").vgg_batch_norm
    assert train_parser().parse_args(["--preset", "paper224", "--model", "all"]).preset == "paper224"


def _train_speed():
    spec = importlib.util.spec_from_file_location("train_speed", os.path.join(ROOT, "benchmarks", "train_speed.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_speed_counts_convolution_and_dense_flops():
    import keras

    inputs = keras.Input((8, 6, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8x6 outputs, 3x3x3 -> 4
    x = keras.layers.Conv2D(5, 2, strides=2)(x)  # 4x3 outputs, 2x2x4 -> 5
    x = keras.layers.Conv2DTranspose(2, 2, strides=2)(x)  # 4x3 inputs, 2x2x5 -> 2
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(7)(x)
    flops = _train_speed().forward_flops(keras.Model(inputs, outputs))
    expected = {"Conv2D": 2 * 48 * 27 * 4 + 2 * 12 * 16 * 5, "Conv2DTranspose": 2 * 12 * 20 * 2, "Dense": 2 * 2 * 7}
    assert flops == {"forward": sum(expected.values()), "by_layer_type": expected}


def test_gpu_check_says_there_is_no_gpu_and_exits_0():
    if os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi"):
        pytest.skip("a GPU machine: the check would run for 8 minutes")
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [done.stdout.strip()] and "no GPU" in done.stdout


@pytest.mark.parametrize("backend", ["jax", None])
def test_another_keras_backend_leaves_tensorflow_out(backend):
    # benchmarks/backend_speed.py builds the models on a GPU machine that has JAX and no TensorFlow:
    # kerascam must not import TensorFlow there (it does under the default backend, to quiet its logs).
    env = {k: v for k, v in os.environ.items() if k not in ("_KERASCAM_QUIET", "TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")}
    if backend:
        env["KERAS_BACKEND"] = backend
    done = subprocess.run(
        [sys.executable, "-c", "import sys, kerascam, kerascam.configs; print('tensorflow' in sys.modules)"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )
    assert done.stdout.strip() == str(backend is None), done.stderr


def test_backend_speed_estimates_a_preset_from_its_own_batch_and_size():
    spec = importlib.util.spec_from_file_location("backend_speed", os.path.join(ROOT, "benchmarks", "backend_speed.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    unet = configs.get_preset("paper224").for_model("unet")
    row = dict(model="unet", batch=unet.batch_size, image_size=unet.image_size)
    results = [
        dict(row, precision="float32", images_per_s=100.0),
        dict(row, precision="mixed_bfloat16", images_per_s=300.0),
        dict(row, precision="mixed_float16", images_per_s=250.0, batch=unet.batch_size * 2),  # another batch
        dict(model="resnet50", batch=unet.batch_size, image_size=48, precision="float32", images_per_s=1e4),  # size
    ]
    estimate = module.estimate("paper224", results)
    seconds = unet.epochs * unet.train_examples / 300.0
    assert estimate["models"] == {"unet": dict(precision="mixed_bfloat16", epochs=unet.epochs,
                                               images=unet.epochs * unet.train_examples, images_per_s=300.0,
                                               seconds=seconds)}
    assert estimate["seconds"] == seconds
    assert os.environ.get("KERAS_BACKEND") != "jax"  # loading the script left this process' backend alone
