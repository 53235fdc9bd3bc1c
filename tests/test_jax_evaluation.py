"""evaluate.py and ``kerascam explain`` under Keras' JAX backend, with TensorFlow unimportable.

One tiny U-Net run (4 filters, 32 px, the embedded shapes data) is evaluated
and explained twice from the same ``model.keras``: here under TensorFlow, and
in a child process under ``KERAS_BACKEND=jax`` where importing
``tensorflow`` fails (`helpers_jax`). The records (per image: predictions,
localization, deletion, insertion and ROAD) and the written maps must agree
to 1e-4, the CI's precision for scores of two backends.
"""

import csv
import json
import shutil

import cv2
import keras
import numpy as np
import pytest

from helpers_jax import run_without_tensorflow

SIZE = 32
RUN_CONFIG = {"dataset": "shapes", "image_size": SIZE, "train_examples": 8, "validation_examples": 8}
EVALUATE = ["--cam", "gradcam", "gradcam++", "--scores", "reference", "ground_truth", "faithfulness", "road",
            "--num-images", "4", "--faithfulness-images", "2", "--road-images", "2", "--faithfulness-steps", "4",
            "--batch-size", "4", "--figures", "2", "--quiet"]
CLASSES = ["disk", "square", "triangle", "cross", "disk_sticker"]  # the shapes data
EXPLAIN = ["--model", "unet", "--method", "gradcam", "--method", "gradcam++", "--quiet"]

# The child runs evaluate, explain and the refusals through kerascam.cli.main
# in one process (JAX is imported once), and prints each one's exit code and
# the first line of its output and of its errors as JSON.
_CHILD = """
import contextlib, io, json, sys
from kerascam.cli import main

workdir, image, out, saved_model, evaluate, explain = sys.argv[1:]
evaluate, explain = json.loads(evaluate), json.loads(explain)
commands = {
    "evaluate": ["evaluate", "--workdir", workdir, *evaluate],
    "explain": ["explain", image, "--workdir", workdir, "--out", out, *explain],
    "tf_keras_vis": ["evaluate", "--workdir", workdir, *evaluate, "--backend", "tf-keras-vis"],
    "saved_model": ["explain", image, "--model", saved_model, "--out", out, "--quiet"],
}
results = {}
for name, argv in commands.items():
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    results[name] = {"code": code, "out": stdout.getvalue().strip().splitlines()[:1],
                     "err": stderr.getvalue().strip().splitlines()}
print("RESULTS " + json.dumps(results))
"""

# Compiled programs cached on disk and XLA's cheap CPU settings, as in
# test_jax_training: compiling dominates these tiny runs.
_FAST_COMPILES = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    "XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
}


def _make_workdir(root, model_file):
    workdir = root / "runs"
    (workdir / "unet").mkdir(parents=True)
    shutil.copy(model_file, workdir / "unet" / "model.keras")
    from kerascam.io import write_json

    write_json(workdir / "unet" / "run.json", {"config": RUN_CONFIG, "class_names": CLASSES})
    return workdir


@pytest.fixture(scope="module")
def both_backends(tmp_path_factory):
    """Evaluate and explain under TensorFlow here, then under JAX in the blocked child; both folders."""
    from kerascam.cli import main
    from kerascam.export import save_keras
    from kerascam.models import build_model

    root = tmp_path_factory.mktemp("jax-evaluation")
    model_file = root / "unet.keras"
    # Fixed weights: the spread of the deletion curves checked below depends on them.
    keras.utils.set_random_seed(0)
    model = build_model("unet", SIZE, len(CLASSES), unet_filters=4)
    head = model.get_layer("predictions")
    # Sharper logits than a fresh head's (probabilities all near 1/5), so
    # that deleting pixels moves the scored probabilities.
    head.kernel.assign(head.kernel * 40.0)
    save_keras(model, model_file)
    pixels = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    pixels[8:16, 10:20] = 255  # a bright patch, so the maps are not flat
    image = root / "image.png"
    assert cv2.imwrite(str(image), pixels)

    tf_dir, jax_dir = root / "tf", root / "jax"
    tf_workdir, jax_workdir = _make_workdir(tf_dir, model_file), _make_workdir(jax_dir, model_file)
    assert main(["evaluate", "--workdir", str(tf_workdir), *EVALUATE]) == 0
    assert main(["explain", str(image), "--workdir", str(tf_workdir), "--out", str(tf_dir / "maps"), *EXPLAIN]) == 0

    saved_model = root / "not_loaded_savedmodel"
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"")  # refused before anything reads it
    env = {**_FAST_COMPILES, "JAX_COMPILATION_CACHE_DIR": str(root / "jax-cache")}
    child = run_without_tensorflow(
        _CHILD, [jax_workdir, image, jax_dir / "maps", saved_model, json.dumps(EVALUATE), json.dumps(EXPLAIN)],
        timeout=600, env=env)
    lines = [line for line in child.stdout.splitlines() if line.startswith("RESULTS ")]
    assert child.returncode == 0 and lines, child.stderr[-3000:]
    return tf_dir, jax_dir, json.loads(lines[0][len("RESULTS "):])


def _records(folder):
    with open(folder / "runs" / "eval" / "records.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_evaluate_gives_tensorflows_records_and_names_the_backend(both_backends):
    tf_dir, jax_dir, results = both_backends
    assert results["evaluate"]["code"] == 0, results["evaluate"]
    assert results["evaluate"]["out"] == ["backend: Keras on jax, CAMs by kerascam"]
    tf_records, jax_records = _records(tf_dir), _records(jax_dir)
    assert len(tf_records) == len(jax_records) == 4 * 2  # images x methods
    compared = 0
    for tf_record, jax_record in zip(tf_records, jax_records):
        assert tf_record.keys() == jax_record.keys()
        for field, tf_value in tf_record.items():
            jax_value = jax_record[field]
            try:
                expected, got = float(tf_value), float(jax_value)
            except ValueError:
                assert jax_value == tf_value, field
                continue
            assert got == pytest.approx(expected, abs=1e-4), (field, tf_record["image_id"], tf_record["method"])
            compared += 1
    assert compared > 8 * 10  # the scores' fields, not only ids and labels
    assert {"score_ground_truth", "deletion_auc", "insertion_auc", "road_combined"} <= set(tf_records[0])
    spread = np.ptp([float(r["deletion_auc"]) for r in tf_records if r["deletion_auc"]])
    assert spread > 1e-3  # the maps and images give different curves: the comparison can fail
    figures = [sorted(p.name for p in (folder / "runs" / "eval" / "figures").rglob("*.png")) for folder in (tf_dir, jax_dir)]
    assert figures[0] and figures[1] == figures[0]  # drawn without TensorFlow too
    tables = {}
    for folder, name in ((tf_dir, "tensorflow"), (jax_dir, "jax")):
        with open(folder / "runs" / "eval" / "table.json", encoding="utf-8") as f:
            tables[name] = json.load(f)
        assert tables[name]["settings"]["keras_backend"] == name
    summaries = [_numbers({k: v for k, v in tables[name].items() if k not in ("settings", "seconds", "seconds_by_stage")})
                 for name in ("tensorflow", "jax")]
    assert summaries[0].keys() == summaries[1].keys() and len(summaries[0]) > 50
    for key, expected in summaries[0].items():
        assert summaries[1][key] == pytest.approx(expected, abs=1e-4, nan_ok=True), key


def _numbers(tree, prefix=""):
    """The numbers of a JSON tree by their path (``"deletion_auc/unet/gradcam/mean"``)."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return {prefix: float(tree)} if isinstance(tree, (int, float)) and not isinstance(tree, bool) else {}
    return {k: v for key, value in items for k, v in _numbers(value, f"{prefix}/{key}").items()}


def test_explain_writes_tensorflows_maps(both_backends):
    tf_dir, jax_dir, results = both_backends
    assert results["explain"]["code"] == 0, results["explain"]
    assert results["explain"]["out"][0].startswith("model: run 'unet'")
    assert results["explain"]["out"][0].endswith("(Keras backend: jax)")
    tf_maps = sorted(p.relative_to(tf_dir / "maps") for p in (tf_dir / "maps").rglob("*.npy"))
    jax_maps = sorted(p.relative_to(jax_dir / "maps") for p in (jax_dir / "maps").rglob("*.npy"))
    assert len(tf_maps) == 2 and tf_maps == jax_maps
    for path in tf_maps:
        expected = np.load(tf_dir / "maps" / path)
        assert expected.shape == (SIZE, SIZE) and np.ptp(expected) > 0
        np.testing.assert_allclose(np.load(jax_dir / "maps" / path), expected, atol=1e-4)


def test_tensorflow_only_requests_are_one_line_errors_under_jax(both_backends):
    _, _, results = both_backends
    for name, says in (("tf_keras_vis", "--backend tf-keras-vis runs on Keras' TensorFlow backend only"),
                       ("saved_model", "a SavedModel is explained on Keras' TensorFlow backend only")):
        assert results[name]["code"] == 2, results[name]
        assert len(results[name]["err"]) == 1 and says in results[name]["err"][0], results[name]


@pytest.mark.parametrize("shard, skip", [(0, 0), (1, 1)])
def test_array_batches_are_tf_datas_batches(shard, skip):
    """Under JAX the split's arrays are batched with NumPy: the same ids, images and features as tf.data's."""
    import tensorflow as tf

    from kerascam.data import Split
    from kerascam.evaluation import EvalConfig
    from kerascam.evaluation.experiment import _batches

    rng = np.random.default_rng(3)
    arrays = {"image": rng.integers(0, 256, (9, 4, 4, 3), dtype=np.uint8), "label": np.arange(9) % 3,
              "mask": rng.integers(0, 2, (9, 4, 4), dtype=np.uint8),
              "parts": rng.integers(0, 5, (9, 4, 4), dtype=np.uint8),
              "interventions": rng.integers(0, 256, (9, 2, 4, 4, 3), dtype=np.uint8)}
    config = EvalConfig(num_images=8, batch_size=2, num_shards=2, shard=shard)
    with_tf_data = Split(tf.data.Dataset.from_tensor_slices(arrays), 9, 3, ("a", "b", "c"), arrays=arrays)
    with_arrays = Split(None, 9, 3, ("a", "b", "c"), arrays=arrays)
    expected = list(_batches(config, with_tf_data, None, skip=skip))
    got = list(_batches(config, with_arrays, None, skip=skip))
    assert [b.ids.tolist() for b in got] == [b.ids.tolist() for b in expected]
    assert got[0].ids.tolist() == [shard + 2 * skip, shard + 2 * skip + 2]  # this shard's images, after the skipped
    for mine, theirs in zip(got, expected):
        for field in ("images", "labels", "masks", "evidence", "parts", "interventions"):
            a, b = getattr(mine, field), getattr(theirs, field)
            assert (a is None and b is None) or (a.dtype == b.dtype and np.array_equal(a, b)), field
