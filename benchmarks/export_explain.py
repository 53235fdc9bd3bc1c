"""Does the SavedModel's explain signature cost little more than its serve signature?

    python benchmarks/export_explain.py                        # the four demo models: a few minutes
    python benchmarks/export_explain.py --models unet --repeats 5   # < 1 min
    python benchmarks/export_explain.py --json export-explain.json

For each of the demo's four models (`kerascam.configs.demo()`: 48x48, 5
classes, U-Net filters 16, VGG16 with batch norm), the trained
`WORKDIR/MODEL/model.keras` when it exists, else the model built with random
weights: `kerascam.export.export_saved_model` writes it to a temporary
folder with the default methods (GradCAM++, GradCAM), `tf.saved_model.load`
reads it back, and the signatures `serve` (logits and probabilities),
`explain` (GradCAM++) and `explain_gradcam` are called in turn on the same
float32 batch (batches of 1 and 32 by default), each result read back to
numpy. After `--warm-up` untimed rounds, `--repeats` rounds alternate the
three, so a slow spell of a shared machine slows all of them alike; the
table gives the median wall-clock and CPU time (all threads of this
process) per call and the ratio explain / serve. Target: at most 1.2 (one
forward pass plus a backward pass that stops at the CAM's target layer).
The export's own time is reported too.
"""

import argparse
import os
import shlex
import statistics
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # this checkout's kerascam, installed or not
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _timing.py, also when a test loads this file by path
from _timing import timed  # noqa: E402
from kerascam.specs import MODEL_NAMES  # noqa: E402

MODELS = MODEL_NAMES  # the model registry's order
SIGNATURES = ("serve", "explain", "explain_gradcam")
TARGET = 1.2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated batch sizes; default 1,32")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per batch size; default 15")
    parser.add_argument("--warm-up", type=int, default=3, help="untimed rounds first; default 3")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs"), help="where trained models are looked for")
    parser.add_argument("--json", help="also write the measurements to this file")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown or not args.models:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        parser.error(f"--batch-sizes must be comma-separated integers. Received: {args.batch_sizes!r}")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        parser.error(f"--batch-sizes must be positive. Received: {args.batch_sizes}")
    if args.repeats < 1 or args.warm_up < 0:
        parser.error(f"--repeats must be positive and --warm-up not negative. Received: {args.repeats}, {args.warm_up}")
    return args


def _model(name, workdir):
    """The trained demo model if there is one, else a random one; and which."""
    from kerascam import configs
    from kerascam.export import load_keras
    from kerascam.models import build_model

    path = os.path.join(workdir, name, "model.keras")
    if os.path.isfile(path):
        return load_keras(path), path
    config = configs.demo().for_model(name)
    model = build_model(
        name, config.image_size, 5, unet_filters=config.unet_filters, vgg_batch_norm=config.vgg_batch_norm
    )
    return model, "random weights"


def measure(name, args):
    """Export, load and the alternating timings of one model."""
    import numpy as np
    import tensorflow as tf

    from kerascam.export import export_saved_model

    model, source = _model(name, args.workdir)
    size = model.input_shape[1:3]
    with tempfile.TemporaryDirectory(prefix="kerascam-export-") as folder:
        export_seconds = timed(lambda: export_saved_model(model, os.path.join(folder, "saved_model")))
        signatures = tf.saved_model.load(os.path.join(folder, "saved_model")).signatures
        functions = {signature: signatures[signature] for signature in SIGNATURES}
        rng = np.random.default_rng(0)
        record = dict(model=name, source=source, image_size=list(size), export_seconds=export_seconds[0],
                      export_cpu_seconds=export_seconds[1], batches={})
        for batch_size in args.batch_sizes:
            images = tf.constant(rng.uniform(0, 255, (batch_size, *size, 3)).astype(np.float32))
            calls = {s: (lambda f=f: [v.numpy() for v in f(images=images).values()]) for s, f in functions.items()}
            for _ in range(args.warm_up):
                for call in calls.values():
                    call()
            samples = {s: [] for s in calls}
            for _ in range(args.repeats):
                for signature, call in calls.items():
                    samples[signature].append(timed(call))
            record["batches"][str(batch_size)] = {
                signature: dict(
                    seconds=statistics.median(w for w, _ in times),
                    cpu_seconds=statistics.median(c for _, c in times),
                )
                for signature, times in samples.items()
            }
    return record


def _ratios(batch):
    """explain / serve of each explain signature, in wall-clock and CPU time."""
    serve = batch["serve"]
    return {
        signature: tuple(batch[signature][key] / serve[key] for key in ("seconds", "cpu_seconds"))
        for signature in SIGNATURES[1:]
    }


def format_table(records):
    header = ("model", "batch", "serve ms", "explain ms", "explain_gradcam ms", "explain/serve", "gradcam/serve")
    widths = (13, 6, 16, 16, 19, 15, 15)
    lines = ["  ".join(f"{h:<{w}}" for h, w in zip(header, widths)),
             "  (ms: median wall / CPU per call; ratios: wall / CPU)"]
    for record in records:
        for batch_size, batch in record["batches"].items():
            ratios = _ratios(batch)
            cells = [record["model"], batch_size]
            cells += [f"{batch[s]['seconds'] * 1e3:.1f} / {batch[s]['cpu_seconds'] * 1e3:.1f}" for s in SIGNATURES]
            cells += [f"{ratios[s][0]:.2f} / {ratios[s][1]:.2f}" for s in SIGNATURES[1:]]
            lines.append("  ".join(f"{c:<{w}}" for c, w in zip(cells, widths)))
    return "\n".join(lines)


def verdicts(records):
    lines = [f"targets (explain / serve <= {TARGET}), wall-clock / CPU time:"]
    for record in records:
        for batch_size, batch in record["batches"].items():
            for signature, (wall, cpu) in _ratios(batch).items():
                verdict = f"{'PASS' if wall <= TARGET else 'FAIL'}/{'PASS' if cpu <= TARGET else 'FAIL'}"
                lines.append(
                    f"{verdict}  {record['model']} batch {batch_size} {signature}: {wall:.2f}x / {cpu:.2f}x serve"
                )
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    sys.path.insert(0, ROOT)  # this checkout's kerascam, installed or not
    import kerascam  # noqa: F401  (quiets TensorFlow's start-up logs)
    import tensorflow as tf

    print("$ python benchmarks/export_explain.py " + " ".join(shlex.quote(a) for a in argv), flush=True)
    devices = [d.device_type for d in tf.config.list_logical_devices() if d.device_type != "CPU"] or ["CPU"]
    print(
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}, devices "
        f"{','.join(devices)}, TensorFlow {tf.__version__}, {args.warm_up} warm-up + {args.repeats} timed rounds",
        flush=True,
    )
    records = []
    for name in args.models:
        record = measure(name, args)
        records.append(record)
        print(
            f"{name} ({record['source']}, {record['image_size'][0]}x{record['image_size'][1]}): export "
            f"{record['export_seconds']:.1f} s wall / {record['export_cpu_seconds']:.1f} s CPU",
            flush=True,
        )
    print(format_table(records))
    print(verdicts(records))
    print(f"load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        from kerascam import io

        io.write_json(args.json, dict(command=argv, records=records, cpus=os.cpu_count(), devices=devices))


if __name__ == "__main__":
    main()
