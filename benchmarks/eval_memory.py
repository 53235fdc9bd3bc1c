"""Peak resident memory of evaluate.py at two numbers of images.

On the models of a trained workdir (its eval/ folder is left alone):

    python benchmarks/eval_memory.py --workdir runs

Without --workdir, smoke models (all four, 32x32, a few training steps) are
trained in a temporary folder first (about two minutes on a 2-core CPU):

    python benchmarks/eval_memory.py

Each size runs ``evaluate.py`` in a fresh process, in its own temporary
workdir whose model folders link to the trained ones, so the two runs share
nothing and neither resumes the other's parts. Peak memory is the child's
``ru_maxrss`` as ``os.wait4`` reports it for that one process (Linux: KiB).
Linux carries the parent's resident size at the fork into the child's
``ru_maxrss``, so this process stays small: it imports no TensorFlow and
trains the smoke models in a child process of their own.
The evaluation streams: what it keeps per image (a few floats per model,
method and score for the table's intervals) is small, so the two peaks should
be nearly equal; the output ends with PASS when the larger run's peak is at
most ``--max-ratio`` times the smaller one's.
"""

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # this checkout's kerascam, installed or not
from kerascam.specs import MODEL_NAMES, applications_first  # noqa: E402

MODELS = applications_first(MODEL_NAMES)  # keras.applications models first, then the U-Nets
MIB = 2**20


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", help="trained runs (default: train smoke models in a temporary folder)")
    parser.add_argument("--sizes", type=int, nargs=2, default=(100, 400), metavar=("SMALL", "LARGE"),
                        help="the two --num-images (default: 100 400)")
    parser.add_argument("--models", nargs="+", choices=MODELS, help="models to evaluate (default: all trained)")
    parser.add_argument("--cam", default="all", help="evaluate.py --cam (default: all)")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--max-n", type=int, default=4, help="evaluate.py --max-n (default: 4, to keep it short)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--image-size", type=int, default=32, help="smoke models' input size (default: 32)")
    parser.add_argument("--max-ratio", type=float, default=1.1, help="PASS threshold of large / small peak")
    parser.add_argument("--train-into", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def train_smoke_models(workdir, image_size, num_images):
    """Smoke models on a shapes validation split of ``num_images``, in a child process."""
    command = [sys.executable, os.path.abspath(__file__), "--train-into", workdir,
               "--image-size", str(image_size), "--sizes", str(num_images), str(num_images)]
    subprocess.run(command, cwd=ROOT, check=True)


def _train(workdir, image_size, num_images):
    sys.path.insert(0, ROOT)
    import kerascam  # noqa: F401  (quiets TensorFlow before it loads)
    from kerascam import configs
    from kerascam.training import train

    for name in MODELS:
        config = dataclasses.replace(
            configs.smoke(), model=name, image_size=image_size, steps_per_epoch=1, validation_examples=num_images
        )
        train(config, workdir, verbose=0)


def linked_workdir(trained, folder):
    """A fresh workdir whose model folders are links to those of ``trained``."""
    os.makedirs(folder)
    for name in MODELS:
        source = os.path.join(os.path.abspath(trained), name)
        if os.path.exists(os.path.join(source, "model.keras")):
            os.symlink(source, os.path.join(folder, name))
    return folder


def measure(workdir, num_images, args):
    """Runs evaluate.py in a child process; returns (peak RSS in bytes, seconds)."""
    command = [
        sys.executable, os.path.join(ROOT, "evaluate.py"), "--workdir", workdir, "--num-images", str(num_images),
        "--cam", args.cam, "--batch-size", str(args.batch_size), "--max-n", str(args.max_n),
        "--split", args.split, "--figures", "2", "--quiet",
    ]
    if args.models:
        command += ["--models", *args.models]
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    # wait4 returns the resource usage of this child alone (getrusage's
    # RUSAGE_CHILDREN would give the largest peak of all children so far).
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"evaluate.py failed (exit {child.returncode}):\n{output}")
    images = _images_evaluated(workdir)
    if images != num_images:
        raise SystemExit(f"evaluate.py explained {images} images, not {num_images}: is the split large enough?")
    return usage.ru_maxrss * 1024, seconds


def _images_evaluated(workdir):
    import json

    with open(os.path.join(workdir, "eval", "table.json"), encoding="utf-8") as f:
        return json.load(f)["settings"]["images"]


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.train_into:
        _train(args.train_into, args.image_size, max(args.sizes))
        return 0
    print("$ python benchmarks/eval_memory.py " + " ".join(shlex.quote(a) for a in argv), flush=True)
    small, large = sorted(args.sizes)
    with tempfile.TemporaryDirectory(prefix="eval-memory-") as tmp:
        trained = args.workdir
        if trained is None:
            trained = os.path.join(tmp, "trained")
            started = time.perf_counter()
            train_smoke_models(trained, args.image_size, large)
            print(f"trained smoke models in {time.perf_counter() - started:.0f} s", flush=True)
        peaks = {}
        for size in (small, large):
            workdir = linked_workdir(trained, os.path.join(tmp, f"eval-{size}"))
            peak, seconds = measure(workdir, size, args)
            peaks[size] = peak
            print(f"{size:>6} images: peak RSS {peak / MIB:8.1f} MiB ({seconds:.0f} s)", flush=True)
    ratio = peaks[large] / peaks[small]
    per_image = (peaks[large] - peaks[small]) / (large - small)
    print(f"ratio {large}/{small}: {ratio:.3f}; {per_image / 1024:+.1f} KiB per further image")
    verdict = "PASS" if ratio <= args.max_ratio else "FAIL"
    print(f"{verdict}: peak RSS at {large} images is {ratio:.3f}x the peak at {small} (target <= {args.max_ratio})")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
