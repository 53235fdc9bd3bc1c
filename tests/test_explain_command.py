"""The `kerascam` command and `kerascam explain` on users' images and models (kerascam/explain.py, cli.main)."""

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

import kerascam

from conftest import ROOT

CLASS_NAMES = ["disk", "square", "triangle"]
# (relative path, height, width): two files named x.jpg in two folders, one non-square PNG.
IMAGES = (("a/x.jpg", 32, 32), ("b/x.jpg", 48, 40), ("c.png", 40, 60))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny U-Net as a .keras file and as two runs (one named mobilenet), images of three sizes and a corrupt one."""
    from kerascam.export import save_keras
    from kerascam.io import write_json
    from kerascam.models import build_model

    root = tmp_path_factory.mktemp("explain")
    model = build_model("unet", 32, 3, unet_filters=4)
    save_keras(model, root / "unet.keras")
    for run in ("shapes", "mobilenet"):
        (root / "runs" / run).mkdir(parents=True)
        shutil.copy(root / "unet.keras", root / "runs" / run / "model.keras")
        write_json(root / "runs" / run / "run.json", {"class_names": CLASS_NAMES})
    rng = np.random.default_rng(0)
    for name, height, width in IMAGES:
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        pixels[height // 4: height // 2, width // 3: width // 2] = 255  # a bright patch, so the maps are not flat
        assert cv2.imwrite(str(root / "images" / name), pixels)
    (root / "images" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    return root


def _main(args, capsys):
    from kerascam.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def _records(out_dir):
    with open(os.path.join(out_dir, "explanations.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _expected_maps(model, image_paths, method, class_indices, preprocess=None):
    """The maps at the images' resolutions computed here from kerascam.cams: bilinear to the input, native, bilinear back."""
    from kerascam import cams
    from kerascam.data.images import read_image

    images = [read_image(path) for path in image_paths]  # TensorFlow's decoder: OpenCV's JPEG pixels differ a little
    size = tuple(model.input_shape[1:3][::-1])
    inputs = np.stack([cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) for image in images])
    inputs = inputs if preprocess is None else preprocess(inputs.copy())
    _, native = cams.explain(model, inputs, method, class_index=np.asarray(class_indices), return_native=True)
    maps = [cams.normalize_maps(cams.resize_maps(one[None], image.shape[:2]))[0] for one, image in zip(native, images)]
    return maps, inputs


def test_explain_maps_at_each_images_resolution_top_classes_and_no_collisions(workspace, capsys):
    import keras

    from kerascam.export import load_keras

    out = workspace / "out-top2"
    images = [workspace / "images" / name for name, _, _ in IMAGES]
    code, stdout, err = _main(["explain", *images, "--model", "shapes", "--workdir", workspace / "runs",
                               "--method", "gradcam", "--class", "top2", "--out", out, "--quiet"], capsys)
    assert code == 0, err
    assert "model: run 'shapes'" in stdout and "layer: dec1_relu2" in stdout
    records = _records(out)
    assert len(records) == len(IMAGES) * 2  # one map per image and each of the two top classes
    overlays = [r["outputs"]["overlay"] for r in records]
    assert len(set(overlays)) == len(overlays)  # a/x.jpg and b/x.jpg do not overwrite each other
    by_rank = {rank: [next(r for r in records if r["file"] == str(p) and r["rank"] == rank) for p in images]
               for rank in (1, 2)}

    model = load_keras(workspace / "unet.keras")
    for rank, mine in by_rank.items():
        expected, inputs = _expected_maps(model, images, "gradcam", [r["class_index"] for r in mine])
        probabilities = keras.ops.softmax(model(inputs)).numpy()
        top = np.argsort(-probabilities, axis=-1)[:, rank - 1]
        for record, (_, height, width), cam_expected, p, c in zip(mine, IMAGES, expected, probabilities, top):
            assert record["class_index"] == c and record["probability"] == pytest.approx(float(p[c]), abs=1e-5)
            assert record["class_name"] == CLASS_NAMES[c] and record["layer"] == "dec1_relu2"
            cam = np.load(record["outputs"]["map_npy"])
            assert cam.dtype == np.float32 and cam.shape == (height, width)  # the image's resolution, not 32x32
            np.testing.assert_allclose(cam, cam_expected, atol=1e-5)
            assert record["map_status"] == "ok" and cam.min() == 0.0 and cam.max() == 1.0
            png16 = cv2.imread(record["outputs"]["map_png16"], cv2.IMREAD_UNCHANGED)
            assert png16.dtype == np.uint16
            np.testing.assert_array_equal(png16, np.rint(cam * 65535).astype(np.uint16))
            overlay = cv2.imread(record["outputs"]["overlay"])
            assert overlay.shape[0] > height and overlay.shape[1] > width  # image, colour bar and title


def _save_module(path, signatures):
    import tensorflow as tf

    module = tf.Module()
    for name, function in signatures.items():
        setattr(module, name, tf.function(function, input_signature=[
            tf.TensorSpec((None, 32, 32, 3), tf.float32, name="images")]))
    tf.saved_model.save(module, str(path), signatures={name: getattr(module, name) for name in signatures})


@pytest.fixture(scope="module")
def saved_models(workspace):
    """SavedModels as kerascam exports them, small enough to compute by hand: one with an explain_gradcam
    signature whose native map is the red channel averaged over 4x4 cells, and one without explain signatures."""
    import tensorflow as tf

    def explain_gradcam(images):
        logits = tf.reduce_mean(images, axis=[1, 2])  # 3 classes: the mean of each channel
        native = tf.nn.avg_pool2d(images[..., :1], 4, 4, "VALID")[..., 0]
        return {"logits": logits, "probabilities": tf.nn.softmax(logits), "class": tf.argmax(logits, axis=-1),
                "map": tf.image.resize(images[..., :1], (32, 32))[..., 0] / 255.0, "native_map": native}

    _save_module(workspace / "saved_gradcam", {"explain_gradcam": explain_gradcam})
    _save_module(workspace / "saved_plain", {"serving_default": lambda images: {"logits": images[:, 0, 0, :]}})
    return workspace / "saved_gradcam", workspace / "saved_plain"


def test_saved_model_maps_come_from_its_native_map_at_the_images_resolution(workspace, saved_models, capsys):
    from kerascam import cams, explain
    from kerascam.data.images import read_image

    with_gradcam, plain = saved_models
    out = workspace / "out-saved"
    image = workspace / "images" / "c.png"
    code, stdout, err = _main(["explain", image, "--model", with_gradcam, "--method", "gradcam", "--out", out,
                               "--quiet"], capsys)
    assert code == 0, err
    assert "SavedModel" in stdout
    (record,) = _records(out)
    pixels = cv2.resize(read_image(image).astype(np.float32), (32, 32), interpolation=cv2.INTER_LINEAR)
    means = pixels.mean(axis=(0, 1))
    assert record["class_index"] == int(np.argmax(means)) and record["layer"] == "as exported"
    assert record["probability"] == pytest.approx(float(1.0 / np.exp(means - means.max()).sum()), abs=1e-5)
    native = pixels[..., 0].reshape(8, 4, 8, 4).mean(axis=(1, 3))
    expected = cams.normalize_maps(cams.resize_maps(native[None], (40, 60)))[0]
    np.testing.assert_allclose(np.load(record["outputs"]["map_npy"]), expected, atol=1e-5)

    code, _, err = _main(["explain", image, "--model", plain, "--out", out], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("kerascam explain: error:"), err
    assert "exported without the explain signatures (it has: serving_default)" in err[0]
    source = explain.load_model(str(with_gradcam))
    with pytest.raises(ValueError, match="exported with gradcam only"):
        explain.check_methods(source, ["gradcam++"])
    with pytest.raises(ValueError, match="predicted class only"):
        explain.explain_files(source, [str(image)], methods=["gradcam"], class_choice="1", out_dir=str(out))


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory):
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.Conv2D(2, 3)(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path_factory.mktemp("lambda") / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    return path


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["images/nothing*.png", "--model", "unet.keras"], 2, "no image file matches 'IMAGES/nothing*.png'"),
        (["images/c.png", "--model", "LAMBDA"], 2, "Lambda layer"),
        (["images/c.png", "--model", "resnet18"], 2, "known: convnextbase"),
        (["images/c.png", "--model", "keras.applications:resnet18"], 2, "mobilenetv2"),
        (["images/c.png", "--model", "shapes", "--class", "zebra"], 2, "no such class; e.g. disk, square, triangle"),
        (["images/c.png", "--model", "unet.keras", "--class", "7"], 2, "outside the model's classes 0..2"),
        (["images/c.png", "--model", "unet.keras", "--method", "lime"], 2, "unknown method 'lime'"),
        (["images/c.png", "--model", "unet.keras", "--colormap", "rainbowz"], 2, "no such matplotlib colormap"),
        (["images/c.png", "--model", "unet.keras", "--weights", "none"], 2, "apply to keras.applications models"),
        (["images/c.png", "--model", "unet.keras", "--out", "images/c.png/out"], 2, "choose another --out"),
        (["images/bad.jpg", "--model", "unet.keras"], 1, "images/bad.jpg (not a decodable image"),
    ],
)
def test_bad_input_is_one_line(workspace, lambda_model, capsys, monkeypatch, args, code, message):
    monkeypatch.chdir(workspace)
    args = [str(lambda_model) if a == "LAMBDA" else a for a in args]
    out = [] if "--out" in args else ["--out", workspace / "out-bad"]
    got, stdout, err = _main(["explain", *args, "--workdir", "runs", *out], capsys)
    assert got == code and len(err) == 1, err
    assert message.replace("IMAGES", "images") in err[0]
    assert "Traceback" not in err[0]
    if "--out" in args:
        assert "model:" not in stdout  # refused before the model is loaded


def test_imagenet_weights_without_network_say_how_to_pass_a_file(workspace, capsys, monkeypatch):
    import keras.src.utils.file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3] "
                        "Temporary failure in name resolution")

    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", offline)
    code, _, err = _main(["explain", workspace / "images" / "c.png", "--model", "keras.applications:mobilenet",
                          "--out", workspace / "out-offline"], capsys)
    assert code == 2 and len(err) == 1, err
    assert "could not download the ImageNet weights of MobileNet " in err[0] and "--weights FILE" in err[0]


def test_application_with_a_weights_file_gets_its_preprocessing_and_a_run_of_its_name_wins(workspace, capsys):
    import keras

    from kerascam.explain import load_model
    from kerascam.models import target_layer_name

    run = load_model("mobilenet", workdir=str(workspace / "runs"))
    assert run.kind == "run" and run.class_names == CLASS_NAMES
    assert "keras.applications:mobilenet would take the keras.applications model" in run.description

    reference = keras.applications.MobileNet(weights=None, input_shape=(32, 32, 3))
    weights = workspace / "mobilenet.weights.h5"
    reference.save_weights(weights)
    out = workspace / "out-app"
    image = workspace / "images" / "c.png"
    code, stdout, err = _main(["explain", image, "--model", "keras.applications:MobileNet", "--weights", weights,
                               "--image-size", "32", "--workdir", workspace / "runs", "--out", out, "--quiet"], capsys)
    assert code == 0, err
    assert "model: keras.applications MobileNet (weights" in stdout
    (record,) = _records(out)
    from kerascam.data.images import read_image

    pixels = cv2.resize(read_image(image).astype(np.float32), (32, 32), interpolation=cv2.INTER_LINEAR)[None]
    probabilities = np.asarray(reference(keras.applications.mobilenet.preprocess_input(pixels)))[0]  # a softmax head
    assert record["class_index"] == int(np.argmax(probabilities))
    assert record["probability"] == pytest.approx(float(probabilities.max()), abs=1e-5)
    assert record["layer"] == target_layer_name(reference)
    assert np.load(record["outputs"]["map_npy"]).shape == (40, 60)


def test_kerascam_command_dispatches_and_reports_in_one_line(workspace, capsys):
    from kerascam import __version__
    from kerascam.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"kerascam {__version__}"
    for args, expected in (
        ([], "kerascam: error: the following arguments are required: COMMAND"),
        (["predict"], "kerascam: error: argument COMMAND: invalid choice: 'predict'"),
        (["train", "--model", "resnet18"], "kerascam train: error: argument --model: invalid choice: 'resnet18'"),
        (["evaluate", "--workdir", str(workspace / "none")], "kerascam evaluate: error: --workdir"),
    ):
        code, _, err = _main(args, capsys)
        assert code == 2 and len(err) == 1 and err[0].startswith(expected), err
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    assert "--target-layer" in capsys.readouterr().out


def test_installed_kerascam_explain_end_to_end(workspace):
    # The installed script when there is one (pip install -e .), else python -m kerascam: the same main.
    script = shutil.which("kerascam")
    command = [script] if script else [sys.executable, "-m", "kerascam"]
    out = workspace / "out-subprocess"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([*command, "explain", str(workspace / "images"), "--model", str(workspace / "unet.keras"),
                             "--method", "gradcam", "--out", str(out)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    err = [line for line in result.stderr.strip().splitlines() if "bad.jpg" in line]
    assert len(err) == 1 and err[0].startswith("skipped 1 unreadable image:")
    assert "Traceback" not in result.stderr
    records = _records(out)
    assert sorted(os.path.relpath(r["file"], workspace / "images") for r in records) == sorted(n for n, _, _ in IMAGES)
    assert "4/4" in result.stdout  # a progress bar beyond a few images
    for record in records:
        assert os.path.isfile(record["outputs"]["overlay"]) and record["outputs"]["overlay"].startswith(str(out))
    assert not [n for _, _, names in os.walk(out) for n in names if n.startswith(".")]  # no temporary left


def test_python_m_kerascam_runs_the_command(monkeypatch, capsys):
    import runpy

    monkeypatch.setattr(sys, "argv", ["kerascam", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("kerascam", run_name="__main__")  # what `python -m kerascam --version` runs
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"kerascam {kerascam.__version__}"


def test_package_level_overlay_is_lazy():
    # With the user's own TensorFlow log level, `import kerascam` imports neither TensorFlow nor matplotlib;
    # kerascam.overlay imports the figures on first use.
    env = {k: v for k, v in os.environ.items() if k != "_KERASCAM_QUIET"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    light = subprocess.run(
        [sys.executable, "-c", "import sys, kerascam; print([m for m in ('tensorflow', 'matplotlib') "
         "if m in sys.modules], kerascam.overlay.__module__)"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )
    assert light.stdout.split() == ["[]", "kerascam.figures"], light.stderr
