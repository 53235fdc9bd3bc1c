"""Backend parity of the CAM engine on the whole matrix: four models x five methods and fused LayerCAM.

    python benchmarks/backend_parity.py > benchmarks/results/backend_parity.txt

Issue #25 asks that, for each model and method, the maps under Keras' JAX
backend equal TensorFlow's to 1e-5 (float32) on fixed weights and inputs.
`tests/test_jax_cams.py` checks every method on the U-Net and a few on the
others, within the suite's CPU budget; this script runs every pair with the
same helpers (`tests/helpers_parity.py`, `calls(..., full=True)`) and the
same mechanism: this process (TensorFlow) builds the models small with
random weights and saves them, a child process (`KERAS_BACKEND=jax`,
TensorFlow unimportable: `tests/helpers_jax.py`) loads them and explains the
same images, and this process compares. ResNet50's and VGG16's ScoreCAM keeps
`helpers_parity.SCORECAM_CHANNELS` channels (Faster-ScoreCAM); the U-Nets'
uses all of them.

The random weights are `helpers_parity.randomized`'s (seed 0, VGG16 seed 9:
why, and what the other seeds gave, is in benchmarks/README.md). The script
prints each model's `edge_margins`, the smallest gap of its max-poolings and
dense ReLUs to the points where the gradient jumps.

Per pair it prints the largest absolute difference of the normalised maps,
the largest difference of the raw maps divided by their peak |map|, where
(image, row, column) that raw difference is, how many of the maps min-max
normalise (the others are all zero or constant), whether both are within the
tolerance, and the CPU seconds of the first call on each backend
(compilation included: what the pair would add to the test). Exit status 1
if a pair fails.
"""

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # this process is the TensorFlow side
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's kerascam, installed or not
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the parity helpers the test uses

import keras  # noqa: E402
import numpy as np  # noqa: E402

import helpers_parity as parity  # noqa: E402
from helpers_jax import run_without_tensorflow  # noqa: E402
from kerascam.cams import map_status  # noqa: E402

TOLERANCE = 1e-5  # issue #25: float32 maps equal to 1e-5
MODELS = ("unet", "unet_ablated", "resnet50", "vgg16")

_CHILD = """
import json, os, sys
sys.path.insert(0, "tests")
import keras
import numpy as np
import helpers_parity as parity

parity.draw_zero_initial_weights()  # every weight is loaded from the parent's file
folder = sys.argv[1]
arrays, _, seconds, engines = parity.explain_all(sys.argv[2:], folder, full=True)
np.savez(os.path.join(folder, "maps.npz"), **arrays)
print(json.dumps({"backend": keras.backend.backend(), "seconds": seconds, "engines": sorted(engines)}))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    args = parser.parse_args(argv)
    names = [name for name in args.models.split(",") if name]
    unknown = sorted(set(names) - set(MODELS))
    if unknown or not names:
        parser.error(f"--models takes names of {', '.join(MODELS)}. Received: {args.models!r}")
    if keras.backend.backend() != "tensorflow":
        parser.error(f"this script is the TensorFlow side; run it without KERAS_BACKEND={keras.backend.backend()}")

    with tempfile.TemporaryDirectory() as folder:
        models = {}
        for name in names:
            models[name] = parity.randomized(name)
            models[name].save_weights(os.path.join(folder, f"{name}.weights.h5"))
        child = run_without_tensorflow(_CHILD, [folder, *names], timeout=3600)
        if child.returncode:
            sys.exit(f"the JAX process failed:\n{child.stderr[-3000:]}")
        report = json.loads(child.stdout.strip().splitlines()[-1])
        with np.load(os.path.join(folder, "maps.npz")) as maps:
            arrays = dict(maps)

    margins = {name: parity.edge_margins(models[name], parity.images(name)) for name in names}
    nearest = {name: min(found.items(), key=lambda item: item[1]) for name, found in margins.items() if found}
    print(f"JAX side: backend {report['backend']}, engines {report['engines']}, TensorFlow unimportable")
    print(f"images: 2 per model, sides {', '.join(f'{n} {parity.SIZES[n]}' for n in names)}; U-Net filters 4; "
          f"ScoreCAM on ResNet50/VGG16 with max_N={parity.SCORECAM_CHANNELS}; tolerance {TOLERANCE:g}")
    print("weight seeds " + ", ".join(f"{n} {parity.WEIGHT_SEEDS.get(n, 0)}" for n in names)
          + "; smallest gap to a max-pool tie or dense ReLU edge / layer peak: "
          + ", ".join(f"{n} {m:.1e} ({layer})" for n, (layer, m) in nearest.items()))
    header = f"{'model':<13} {'method':<18} {'maps |diff|':>12} {'raw |diff|/peak':>16} {'at (n,y,x)':>12} " \
             f"{'classes':>8} {'ok maps':>7} {'pass':>5} {'tf s':>6} {'jax s':>6}"
    print(header)
    print("-" * len(header))
    passed = total = 0
    for name in names:
        for found in parity.differences(name, models[name], arrays, full=True):
            same_classes = np.array_equal(found["received"].classes, found["expected"].classes)
            ok = same_classes and found["map_diff"] <= TOLERANCE and found["native_diff"] <= TOLERANCE
            passed += ok
            # Maps that min-max normalise (`kerascam.cams.map_status`); all-zero maps compare trivially.
            ok_maps = f"{int(np.sum(map_status(found['expected'].native) == 'ok'))}/{len(found['expected'].native)}"
            total += 1
            jax_seconds = report["seconds"][f"{name}|{found['label']}"]
            print(f"{name:<13} {found['label']:<18} {found['map_diff']:>12.2e} {found['native_diff']:>16.2e} "
                  f"{str(found['where']).replace(' ', ''):>12} {'same' if same_classes else 'DIFFER':>8} "
                  f"{ok_maps:>7} "
                  f"{'yes' if ok else 'NO':>5} {found['seconds']:>6.1f} {jax_seconds:>6.1f}")
    print(f"{passed} of {total} pairs within {TOLERANCE:g}")
    return 0 if passed == total else 1


if __name__ == "__main__":
    sys.exit(main())
