"""Do the SavedModel's explain signatures give kerascam's maps without kerascam?

    python benchmarks/saved_model_check.py [--workdir runs] [--images 16]

Exports each trained model of WORKDIR (``MODEL/model.keras``) again, with the
explain signatures, to a temporary folder; a fresh Python process that imports
only TensorFlow and NumPy (it checks that kerascam was never imported) calls
``explain``, ``explain_gradcam``, ``explain_uint8`` and ``serve`` on the first
validation images; this process compares their maps and native maps with
``kerascam.cams.explain`` and their logits with ``serve``'s, and prints the
largest differences. A check, not a timing: ``export_explain.py`` times.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

import kerascam  # noqa: F401  (quiets TensorFlow)
from kerascam import configs, export
from kerascam.cams import explain
from kerascam.data import load_split
from kerascam.io import read_json

SIGNATURES = (("explain", "gradcam++"), ("explain_gradcam", "gradcam"), ("explain_uint8", "gradcam++"))

CHILD = r"""
import sys
import numpy as np
import tensorflow as tf

folder, names = sys.argv[1], sys.argv[2:]
images = np.load(f"{folder}/images.npy")
results = {}
for name in names:
    loaded = tf.saved_model.load(f"{folder}/{name}")
    for signature in ("explain", "explain_gradcam", "explain_uint8", "serve"):
        batch = images if signature.endswith("uint8") else images.astype(np.float32)
        for key, value in loaded.signatures[signature](images=tf.constant(batch)).items():
            results[f"{name}|{signature}|{key}"] = value.numpy()
assert "kerascam" not in sys.modules, "the child imported kerascam"
np.savez(f"{folder}/child.npz", **results)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs")
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()
    names = [m for m in sorted(os.listdir(args.workdir)) if os.path.isfile(os.path.join(args.workdir, m, "model.keras"))]
    if not names:
        sys.exit(f"no trained model in {args.workdir}: run python train.py --model all first")
    config = configs.demo()
    run = read_json(os.path.join(args.workdir, names[0], "run.json"))["config"]
    config = configs.TrainConfig(**{k: v for k, v in run.items() if k in config.to_dict()})
    split = load_split(config, "validation")
    images = np.stack([e["image"].numpy() for e, _ in zip(split.examples, range(args.images))]).astype(np.uint8)
    with tempfile.TemporaryDirectory(prefix="kerascam-sm-check-") as folder:
        np.save(os.path.join(folder, "images.npy"), images)
        models = {}
        for name in names:
            models[name] = export.load_keras(os.path.join(args.workdir, name, "model.keras"))
            export.export_saved_model(models[name], os.path.join(folder, name))
        env = {k: v for k, v in os.environ.items() if not k.startswith("_KERASCAM")}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        subprocess.run([sys.executable, "-c", CHILD, folder, *names], check=True, env=env)
        served = dict(np.load(os.path.join(folder, "child.npz")))
    print(f"{len(images)} validation images; largest absolute differences (signature in a process without kerascam "
          "vs kerascam.cams.explain; logits vs the serve signature)")
    print(f"{'model':14}{'signature':18}{'map':>10}{'native map':>12}{'logits':>10}  native shape")
    for name in names:
        for signature, method in SIGNATURES:
            maps, native = explain(models[name], images, method, return_native=True)
            get = lambda key: served[f"{name}|{signature}|{key}"]  # noqa: E731
            print(
                f"{name:14}{signature:18}{np.abs(get('map') - maps).max():10.1e}"
                f"{np.abs(get('native_map') - native).max():12.1e}"
                f"{np.abs(get('logits') - served[f'{name}|serve|logits']).max():10.1e}  {native.shape[1:]}"
            )


if __name__ == "__main__":
    main()
