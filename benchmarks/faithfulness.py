"""Cost and peak memory of the deletion and insertion curves (kerascam/evaluation/scores/faithfulness.py).

On the demo's models (48x48, 5 classes, U-Net filters 16, VGG16 with batch
norm, random weights), about two minutes on a busy 2-core CPU:

    python benchmarks/faithfulness.py
    python benchmarks/faithfulness.py --models unet --images 4 --sizes 4 8 --repeats 1   # quick

Each model runs in fresh Python processes (this one imports no TensorFlow).

* Time, in one process per model, interleaved in rounds (median of
  ``--repeats``, after one untimed warm-up of each case), in wall-clock and
  in CPU time (``time.process_time``, all threads):

  - **forward**: the unit, 2 (K + 1) n images through a compiled forward pass
    (``tf.function`` around the model, logits out) in batches of
    ``--batch-size``, fed one ready batch from memory;
  - **curves**: ``deletion_insertion_curves`` of n images, the same number of
    forward passes, with the perturbed images made in the compiled graph;
  - **numpy**: the alternative design, the perturbed images of each map made
    in numpy (scipy blur) and run through the unit's forward pass.

  - **ROAD** (unless ``--no-road``): ``road.road_curves`` of n images, 18
    imputed images per map (MoRF and LeRF at 10 %, ..., 90 %), beside its
    unit, its 18 n forward passes; no target, the imputation is on the CPU.

  Target: curves / forward <= ``--max-ratio`` (1.2).
* Peak memory: ``deletion_insertion_curves`` of each of ``--sizes`` images in
  a fresh process, its ``ru_maxrss`` from ``os.wait4``; target: the larger
  size's peak at most ``--max-memory-ratio`` (1.05) times the smaller one's.
  All 2 (K + 1) perturbed images of one 48x48 image are 0.9 MiB, so a design
  holding them for every image would grow by that much per image.

The output ends with the seconds per image of each model (both curves, K
steps) and what ``--faithfulness-images`` (and ``--road-images``) images cost
for ``--methods`` methods, the numbers that size the scorers' ``max_images``.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # this checkout's kerascam, installed or not
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _timing.py, also when a test loads this file by path
from _timing import timed  # noqa: E402
from kerascam.specs import MODEL_NAMES  # noqa: E402

MODELS = MODEL_NAMES  # the model registry's order
MIB = 2**20
ROAD_FRACTIONS = 9  # len(kerascam.evaluation.scores.road.DEFAULT_FRACTIONS); this process imports no kerascam


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--num-classes", type=int, default=5)
    parser.add_argument("--unet-filters", type=int, default=16)
    parser.add_argument("--steps", type=int, default=16, help="K (default 16)")
    parser.add_argument("--batch-size", type=int, default=64, help="perturbed images per forward pass")
    parser.add_argument("--images", type=int, default=8, help="n, images of the timed runs (default 8)")
    parser.add_argument("--sizes", type=int, nargs=2, default=(8, 64), metavar=("SMALL", "LARGE"),
                        help="images of the two memory runs (default 8 64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-ratio", type=float, default=1.2, help="PASS threshold of curves / forward")
    parser.add_argument("--max-memory-ratio", type=float, default=1.05, help="PASS threshold of the peaks")
    parser.add_argument("--methods", type=int, default=8, help="methods per model, for the cost estimate")
    parser.add_argument("--faithfulness-images", type=int, default=25, help="images per method, for the estimate")
    parser.add_argument("--no-road", dest="road", action="store_false",
                        help="skip the ROAD timing (road_curves against its forward passes)")
    parser.add_argument("--road-images", type=int, default=10, help="ROAD images per method, for the estimate")
    parser.add_argument("--json", help="also write the raw measurements to this file")
    parser.add_argument("--child", choices=("time", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _setup(args, num_images):
    """The model and ``num_images`` random images, maps and classes."""
    sys.path.insert(0, ROOT)
    import kerascam  # noqa: F401  (quiets TensorFlow before it loads)
    import numpy as np

    from kerascam.models import build_model

    model = build_model(args.model, args.image_size, args.num_classes, unet_filters=args.unet_filters,
                        vgg_batch_norm=True)
    rng = np.random.default_rng(0)
    size = args.image_size
    images = rng.integers(0, 256, (num_images, size, size, 3), dtype=np.uint8)
    # Smooth maps, as CAMs are: a few random bumps each.
    y, x = np.mgrid[0:size, 0:size] / size
    centres = rng.random((num_images, 3, 2))
    maps = sum(np.exp(-((y - centres[:, j, 0, None, None]) ** 2 + (x - centres[:, j, 1, None, None]) ** 2) / 0.02)
               for j in range(3)).astype(np.float32)
    classes = rng.integers(0, args.num_classes, num_images)
    return model, images, maps, classes


def _numpy_curves(forward, images, maps, classes, steps, batch_size):
    """The curves with the perturbed images made in numpy, map by map (the design not taken)."""
    import numpy as np
    import scipy.ndimage

    from kerascam.evaluation import perturbation
    from kerascam.evaluation.scores import faithfulness as faith

    n, height, width, _ = images.shape
    changed = faith.pixels_changed(steps, height * width)
    sigma = faith.blur_sigma_for((height, width))
    curves = []
    for image, cam, label in zip(images.astype(np.float32), maps, classes):
        ranks = perturbation.pixel_ranks(cam[np.newaxis])[0]
        masks = (ranks[np.newaxis] < changed[:, np.newaxis, np.newaxis])[..., np.newaxis]
        blurred = scipy.ndimage.gaussian_filter(image, (sigma, sigma, 0), mode="reflect", truncate=perturbation.BLUR_TRUNCATE)
        perturbed = np.concatenate([np.where(masks, 0.0, image), np.where(masks, image, blurred)]).astype(np.float32)
        logits = np.concatenate([forward(perturbed[s : s + batch_size]).numpy()
                                 for s in range(0, len(perturbed), batch_size)])
        logits = logits - logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        curves.append(probabilities[:, label])
    return np.stack(curves)


def _time_child(args):
    model, images, maps, classes = _setup(args, args.images)
    import numpy as np
    import tensorflow as tf

    from kerascam.evaluation import perturbation
    from kerascam.evaluation.scores import faithfulness as faith
    from kerascam.evaluation.scores import road

    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)])
    total = 2 * (args.steps + 1) * args.images
    batch = np.random.default_rng(1).uniform(0, 255, (args.batch_size, *images.shape[1:])).astype(np.float32)

    def run_forward():
        for start in range(0, total, args.batch_size):
            forward(batch[: min(args.batch_size, total - start)]).numpy()

    def run_curves():
        faith.deletion_insertion_curves(model, images, maps, classes, steps=args.steps, batch_size=args.batch_size)

    def run_numpy():
        _numpy_curves(forward, images, maps, classes, args.steps, args.batch_size)

    road_total = 2 * len(road.DEFAULT_FRACTIONS) * args.images

    def run_road_forward():
        for start in range(0, road_total, args.batch_size):
            forward(batch[: min(args.batch_size, road_total - start)]).numpy()

    def run_road():
        road.road_curves(model, images, maps, classes, batch_size=args.batch_size)

    cases = {"forward": run_forward, "curves": run_curves, "numpy": run_numpy}
    if args.road:
        cases.update(road_forward=run_road_forward, road=run_road)
    for run in cases.values():
        run()  # warm-up: traces and first allocations
    # The two designs give the same curves (up to the blur's float rounding).
    deletion, insertion = faith.deletion_insertion_curves(model, images, maps, classes, steps=args.steps)
    reference = _numpy_curves(forward, images, maps, classes, args.steps, args.batch_size)
    difference = float(np.abs(np.concatenate([deletion, insertion], axis=1) - reference).max())
    timings = {name: {"wall": [], "cpu": []} for name in cases}
    for _ in range(args.repeats):
        for name, run in cases.items():
            wall, cpu = timed(run)
            timings[name]["wall"].append(wall)
            timings[name]["cpu"].append(cpu)
    print(json.dumps({"timings": timings, "max_difference": difference,
                      "tracing_count": perturbation.perturbed_forward(model).tracing_count}))


def _memory_child(args):
    model, images, maps, classes = _setup(args, args.images)
    from kerascam.evaluation.scores import faithfulness as faith

    faith.deletion_insertion_curves(model, images, maps, classes, steps=args.steps, batch_size=args.batch_size)


def _child(args, kind, model, images):
    """Runs a child process; returns its stdout."""
    command = [sys.executable, os.path.abspath(__file__), "--child", kind, "--model", model, "--images", str(images),
               "--image-size", str(args.image_size), "--num-classes", str(args.num_classes),
               "--unet-filters", str(args.unet_filters), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--repeats", str(args.repeats)]
    if not args.road:
        command.append("--no-road")
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    output, errors = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"{kind} child of {model} failed (exit {child.returncode}):\n{errors[-3000:]}")
    return output


def _measure_memory(args, model, images):
    """Peak RSS in bytes of a memory child (``os.wait4``: this child's rusage alone)."""
    command = [sys.executable, os.path.abspath(__file__), "--child", "memory", "--model", model,
               "--images", str(images), "--image-size", str(args.image_size), "--num-classes", str(args.num_classes),
               "--unet-filters", str(args.unet_filters), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size)]
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    errors = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"memory child of {model} failed (exit {child.returncode}):\n{errors[-3000:]}")
    return usage.ru_maxrss * 1024


def _median(values):
    return statistics.median(values)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child == "time":
        _time_child(args)
        return 0
    if args.child == "memory":
        _memory_child(args)
        return 0
    print("$ python benchmarks/faithfulness.py " + " ".join(shlex.quote(a) for a in argv), flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} CPUs, load average {load:.1f}; {args.image_size}x{args.image_size}, "
          f"{args.num_classes} classes, K={args.steps}, batch {args.batch_size}, n={args.images}, "
          f"median of {args.repeats}", flush=True)
    small, large = sorted(args.sizes)
    results, verdicts = {}, []
    header = (f"{'model':<13} {'forward s':>10} {'curves s':>10} {'ratio':>6} {'numpy ratio':>11} "
              f"{'s/image':>8} {'peak ' + str(small):>10} {'peak ' + str(large):>10} {'ratio':>6}")
    rows = []
    for model in args.models:
        measured = json.loads(_child(args, "time", model, args.images).strip().splitlines()[-1])
        peaks = {size: _measure_memory(args, model, size) for size in (small, large)}
        timings = {case: {clock: _median(values) for clock, values in clocks.items()}
                   for case, clocks in measured["timings"].items()}
        ratio = {clock: timings["curves"][clock] / timings["forward"][clock] for clock in ("wall", "cpu")}
        numpy_ratio = {clock: timings["numpy"][clock] / timings["forward"][clock] for clock in ("wall", "cpu")}
        per_image = {clock: timings["curves"][clock] / args.images for clock in ("wall", "cpu")}
        memory_ratio = peaks[large] / peaks[small]
        results[model] = {**measured, "median": timings, "ratio": ratio, "numpy_ratio": numpy_ratio,
                          "seconds_per_image": per_image, "peak_rss": {str(k): v for k, v in peaks.items()},
                          "memory_ratio": memory_ratio}
        rows.append(
            f"{model:<13} {timings['forward']['wall']:>4.2f}/{timings['forward']['cpu']:<5.2f} "
            f"{timings['curves']['wall']:>4.2f}/{timings['curves']['cpu']:<5.2f} "
            f"{ratio['wall']:>4.2f}/{ratio['cpu']:<4.2f} {numpy_ratio['wall']:>5.2f}/{numpy_ratio['cpu']:<5.2f} "
            f"{per_image['wall']:>4.3f}/{per_image['cpu']:<4.3f} {peaks[small] / MIB:>8.1f}M "
            f"{peaks[large] / MIB:>8.1f}M {memory_ratio:>6.3f}"
        )
        print(f"{model}: done (curves vs numpy design differ by at most {measured['max_difference']:.1e}; "
              f"{measured['tracing_count']} traces of {1 + args.road} compiled functions)", flush=True)
    print()
    print("times wall/CPU in seconds; s/image: both curves of one image")
    print(header)
    print("\n".join(rows))
    print()
    for model, result in results.items():
        for clock in ("wall", "cpu"):
            passed = result["ratio"][clock] <= args.max_ratio
            verdicts.append(passed)
            print(f"{'PASS' if passed else 'FAIL'}: {model} curves cost {result['ratio'][clock]:.2f}x their "
                  f"{2 * (args.steps + 1) * args.images} forward passes in {clock} time (target <= {args.max_ratio})")
        passed = result["memory_ratio"] <= args.max_memory_ratio
        verdicts.append(passed)
        growth = (result["peak_rss"][str(large)] - result["peak_rss"][str(small)]) / (large - small) / 1024
        print(f"{'PASS' if passed else 'FAIL'}: {model} peak RSS at {large} images is {result['memory_ratio']:.3f}x "
              f"the peak at {small} ({growth:+.0f} KiB per further image; target <= {args.max_memory_ratio})")
    print()
    per_method = {clock: sum(r["seconds_per_image"][clock] for r in results.values()) for clock in ("wall", "cpu")}
    estimate = {clock: per_method[clock] * args.methods * args.faithfulness_images for clock in per_method}
    print(f"faithfulness of {args.faithfulness_images} images x {args.methods} methods x {len(results)} models: "
          f"{estimate['wall']:.0f} s wall / {estimate['cpu']:.0f} s CPU "
          f"({per_method['wall']:.3f} s wall per image per method over all models)")
    if args.road:
        fractions = 2 * ROAD_FRACTIONS
        print()
        print(f"ROAD (noisy linear imputation, {fractions} imputed images per map), wall/CPU:")
        for model, result in results.items():
            t = result["median"]
            per = {clock: t["road"][clock] / args.images for clock in ("wall", "cpu")}
            result["road_seconds_per_image"] = per
            print(f"  {model:<13} {t['road']['wall'] / t['road_forward']['wall']:5.2f}x / "
                  f"{t['road']['cpu'] / t['road_forward']['cpu']:5.2f}x its {fractions * args.images} forward "
                  f"passes; {per['wall']:.3f} / {per['cpu']:.3f} s per image")
        road_total = {clock: sum(r["road_seconds_per_image"][clock] for r in results.values())
                      * args.methods * args.road_images for clock in ("wall", "cpu")}
        print(f"ROAD of {args.road_images} images x {args.methods} methods x {len(results)} models: "
              f"{road_total['wall']:.0f} s wall / {road_total['cpu']:.0f} s CPU")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"argv": argv, "results": results}, f, indent=1)
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
