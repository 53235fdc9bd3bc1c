"""Training images/s, FLOP/s and a CPU "MFU" of the real train step, per model and precision.

The demo's four models at the demo preset's settings (48x48, batch 32), in
float32 and in Keras' mixed_bfloat16 (a few minutes on 2 CPU cores):

    python benchmarks/train_speed.py
    python benchmarks/train_speed.py --models unet,vgg16 --precision float32,mixed_bfloat16 --rounds 5

For each model and precision the script builds the model, its optimizer and
``kerascam.training.make_train_step`` as ``kerascam.training.train`` builds
them (the preset's per-model settings, the dtype policy around the whole
build), and times the step on one batch of random images kept in memory,
reading the loss back after every step as the training loop does. The input
pipeline is left out (``benchmarks/pipeline.py`` measures it). Precisions
(and XLA on/off with ``--xla both``) are interleaved in rounds within one
process, so that a slow spell of a shared machine slows all of them; the
table gives the median and the range over the rounds, in wall-clock and in
CPU time (all threads of the process).

FLOPs are counted analytically from the layers: a convolution costs
2 x kernel height x kernel width x input channels x output channels per
output pixel (a transposed one per input pixel), a dense layer 2 x inputs x
outputs; the backward pass costs twice the forward one (the gradients with
respect to the inputs and to the weights), so a train step is 3x the forward
FLOPs. Normalization, activations, pooling and the optimizer update are left
out (a few percent of the convolutions). The peak is measured in the same
run: a square float32 and a bfloat16 matmul (``--peak-size``, default 2048),
best of several, before and after the steps. "MFU" is the step's FLOP/s over
the peak of its compute dtype (float32 steps over the float32 matmul,
mixed_bfloat16 over the bfloat16 one, mixed_float16 over a float16 one).

``--demo-time`` also runs ``python train.py --model all`` (the demo, 15+
minutes on 2 CPU cores) in a temporary workdir under ``/usr/bin/time -v`` and
reports its wall-clock and CPU time.
"""

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # this checkout's kerascam, installed or not
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _timing.py, also when a test loads this file by path
from _timing import timed  # noqa: E402
from kerascam.specs import MODEL_NAMES  # noqa: E402

MODELS = MODEL_NAMES  # the model registry's order
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# The dtype of the matmul whose peak each precision's step is compared with.
COMPUTE_DTYPE = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def _csv(choices, name):
    def parse(text):
        values = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in values if v not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"unknown {name} {unknown or text!r}; choose from {', '.join(choices)}")
        return values

    return parse


def parse_args(argv=None):
    sys.path.insert(0, ROOT)  # this checkout's kerascam, installed or not
    from kerascam import configs
    from kerascam.cli import positive_int as _positive

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="demo", choices=tuple(configs.PRESETS),
                        help="settings of the models (image size, batch, U-Net filters, per-model overrides); "
                             "default demo")
    parser.add_argument("--models", type=_csv(MODELS, "models"), default=list(MODELS),
                        help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--precision", type=_csv(PRECISIONS, "precision"), default=["float32", "mixed_bfloat16"],
                        help="comma-separated: " + ", ".join(PRECISIONS) + " (default float32,mixed_bfloat16)")
    parser.add_argument("--xla", choices=("off", "on", "both"), default="off",
                        help="compile the forward and backward pass with XLA: off (default), on, or both side by side")
    parser.add_argument("--image-size", type=_positive, help="default: the preset's")
    parser.add_argument("--batch-size", type=_positive, help="default: the preset's")
    parser.add_argument("--unet-filters", type=_positive, help="default: the preset's")
    parser.add_argument("--num-classes", type=_positive, default=5, help="outputs (default 5, the shapes dataset's)")
    parser.add_argument("--steps", type=_positive, default=5, help="timed steps per round (default 5)")
    parser.add_argument("--rounds", type=_positive, default=3,
                        help="rounds; medians and ranges are reported (default 3)")
    parser.add_argument("--warmup", type=_positive, default=2,
                        help="untimed rounds of one step per case after tracing (default 2)")
    parser.add_argument("--peak-size", type=_positive, default=2048, help="side of the peak matmul (default 2048)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=_positive,
                        help="TensorFlow's intra- and inter-op threads (default: TensorFlow's, one per core); "
                             "train.py --model all gives each process cores / jobs")
    parser.add_argument("--json", help="also write the measurements to this file")
    parser.add_argument("--demo-time", action="store_true",
                        help="also time `python train.py --model all` (demo preset, 15+ minutes on 2 CPUs) "
                             "under /usr/bin/time -v")
    return parser.parse_args(argv)


# ----------------------------------------------------------------- FLOPs


def forward_flops(model):
    """Multiply-adds x 2 of one image through ``model``'s convolutions and dense layers.

    Args:
        model: A built Keras model with a fixed input size.

    Returns:
        A dict ``{"forward": flops, "by_layer_type": {class name: flops}}`` per image.
    """
    import numpy as np

    by_type = {}
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "Conv2DTranspose"):
            kernel = layer.kernel.shape  # (kh, kw, in, out), transposed: (kh, kw, out, in)
            if kind == "Conv2D":
                pixels = int(np.prod(layer.output.shape[1:3]))
                flops = 2 * pixels * int(np.prod(kernel))
            else:
                pixels = int(np.prod(layer.input.shape[1:3]))
                flops = 2 * pixels * int(np.prod(kernel))
        elif kind == "Dense":
            positions = int(np.prod(layer.input.shape[1:-1])) if len(layer.input.shape) > 2 else 1
            flops = 2 * positions * int(np.prod(layer.kernel.shape))
        else:
            continue
        by_type[kind] = by_type.get(kind, 0) + flops
    return {"forward": sum(by_type.values()), "by_layer_type": by_type}


def train_step_flops(model):
    """FLOPs of one image's train step: forward + backward, 3x the forward."""
    return 3 * forward_flops(model)["forward"]


# ----------------------------------------------------------------- timing


def matmul_peak(dtype, size, repeats=3, calls=4):
    """FLOP/s of a ``size`` x ``size`` matmul in ``dtype``: the best of ``repeats``.

    Returns:
        ``{"flops_per_s", "flops_per_cpu_s", "seconds", "cpu_seconds"}`` of
        the best repeat (FLOP/s in wall-clock and per second of CPU time of
        the process), or None when the device has no kernel for ``dtype``.
    """
    import tensorflow as tf

    a = tf.random.stateless_uniform((size, size), seed=(1, 2), dtype=tf.float32)
    # Entries of mean 1/size keep the chained products near 0.5, far from overflow.
    b = tf.random.stateless_uniform((size, size), seed=(3, 4), dtype=tf.float32) * (2.0 / size)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)

    @tf.function
    def chain(x, y):
        # Each product feeds the next: identical products would be merged by
        # the graph optimizer and counted more than once.
        for _ in range(calls):
            x = tf.matmul(x, y)
        return tf.cast(x[0, 0], tf.float32)  # a scalar back to the host, not the matrix

    try:
        float(chain(a, b))  # traces; fails where the device lacks the kernel
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.UnimplementedError):
        return None
    wall, cpu = min(timed(lambda: float(chain(a, b))) for _ in range(repeats))
    flops = calls * 2 * size**3
    return {"flops_per_s": flops / wall, "flops_per_cpu_s": flops / cpu, "seconds": wall, "cpu_seconds": cpu}


def build_case(config, precision, jit, num_classes, seed):
    """The model, optimizer and train step of ``train`` for ``config`` under ``precision``."""
    import dataclasses

    import keras

    from kerascam import training

    policy = None if precision == "float32" else precision
    config = dataclasses.replace(config, mixed_precision=policy, jit=jit)
    strategy = training.make_strategy("default")
    keras.utils.set_random_seed(seed)
    with training.dtype_policy(policy), strategy.scope():
        model = training.build_model_for(config, num_classes)
        optimizer = training.make_optimizer(config, 1000)
        optimizer.build(model.trainable_variables)
        step = training.make_train_step(
            model, optimizer, strategy, num_classes=num_classes, global_batch=config.batch_size,
            label_smoothing=config.label_smoothing, jit_compile=jit,
        )
    return model, step


def run_model(config, cases, args):
    """Interleaved rounds of every (precision, XLA) case of one model."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(args.seed)
    shape = (config.batch_size, config.image_size, config.image_size, 3)
    batch = {
        "image": tf.constant(rng.uniform(0, 255, shape), tf.float32),
        "label": tf.constant(rng.integers(0, args.num_classes, config.batch_size), tf.int64),
    }
    built = {}
    for precision, jit in cases:
        model, step = build_case(config, precision, jit, args.num_classes, args.seed)
        seconds = timed(lambda: [float(v) for v in step(batch)])[0]  # traces (and compiles)
        built[(precision, jit)] = dict(model=model, step=step, trace_seconds=seconds)
    # Untimed steps, interleaved as the rounds are: the first steps after the
    # other cases' builds ran slow (the first measured case lost up to 3x).
    for _ in range(args.warmup):
        for case in cases:
            [float(v) for v in built[case]["step"](batch)]
    flops = forward_flops(next(iter(built.values()))["model"])
    samples = {case: [] for case in cases}
    for _ in range(args.rounds):
        for case in cases:
            step = built[case]["step"]
            wall, cpu = timed(lambda: [[float(v) for v in step(batch)] for _ in range(args.steps)])
            samples[case].append(dict(wall=wall, cpu=cpu))
    images = args.steps * config.batch_size
    results = []
    for precision, jit in cases:
        rates = [images / s["wall"] for s in samples[(precision, jit)]]
        cpu_rates = [images / s["cpu"] for s in samples[(precision, jit)]]
        results.append(dict(
            model=config.model, precision=precision, xla=jit,
            parameters=int(built[(precision, jit)]["model"].count_params()),
            forward_flops=flops["forward"], forward_flops_by_layer_type=flops["by_layer_type"],
            step_flops_per_image=3 * flops["forward"], trace_seconds=built[(precision, jit)]["trace_seconds"],
            images_per_s=statistics.median(rates), images_per_s_range=[min(rates), max(rates)],
            images_per_cpu_s=statistics.median(cpu_rates), images_per_cpu_s_range=[min(cpu_rates), max(cpu_rates)],
            rounds=samples[(precision, jit)],
        ))
    return results


# ----------------------------------------------------------------- report


def _machine():
    import keras
    import tensorflow as tf

    from kerascam import precision

    cpu_flags = precision.cpu_bfloat16_flags()
    gpus = [
        f"{tf.config.experimental.get_device_details(d).get('device_name', d.name)}"
        for d in tf.config.list_physical_devices("GPU")
    ]
    return dict(
        cpus=os.cpu_count(),
        usable_cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        load_average=os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
        cpu_bfloat16_flags=list(cpu_flags), gpus=gpus, tensorflow=tf.__version__, keras=keras.__version__,
    )


def _si(value, unit):
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if value >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def format_table(results, peaks):
    header = (f"{'model':<13}{'precision':<16}{'XLA':<5}{'images/s (range)':>22}{'images/CPU-s':>14}"
              f"{'GFLOP/img':>11}{'GFLOP/s':>9}{'MFU':>8}{'MFU CPU':>9}{'x float32':>11}{'x CPU':>7}")
    rows = [header]
    for r in results:
        base = next((b for b in results if b["model"] == r["model"] and b["precision"] == "float32"
                     and b["xla"] == r["xla"]), None)
        low, high = r["images_per_s_range"]
        speedup = f"{r['images_per_s'] / base['images_per_s']:.2f}" if base else "-"
        cpu_speedup = f"{r['images_per_cpu_s'] / base['images_per_cpu_s']:.2f}" if base else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        cpu_mfu = f"{100 * r['mfu_cpu']:.1f}%" if r.get("mfu_cpu") is not None else "-"
        rate = f"{r['images_per_s']:.1f} ({low:.1f}-{high:.1f})"
        rows.append(
            f"{r['model']:<13}{r['precision']:<16}{'on' if r['xla'] else 'off':<5}"
            f"{rate:>22}{r['images_per_cpu_s']:>14.1f}"
            f"{r['step_flops_per_image'] / 1e9:>11.3f}{r['flops_per_s'] / 1e9:>9.1f}{mfu:>8}{cpu_mfu:>9}"
            f"{speedup:>11}{cpu_speedup:>7}"
        )
    peak_line = ", ".join(
        f"{dtype} {_si(p['flops_per_s'], 'FLOP/s')} ({_si(p['flops_per_cpu_s'], 'FLOP')} per CPU-s)" if p
        else f"{dtype} none" for dtype, p in peaks.items()
    )
    return "\n".join(rows) + f"\npeak (best square matmul of this run): {peak_line}"


def demo_time(workdir):
    """Runs the demo's ``train.py --model all`` under ``/usr/bin/time -v``; returns wall and CPU seconds."""
    command = ["/usr/bin/time", "-v", sys.executable, os.path.join(ROOT, "train.py"), "--model", "all",
               "--workdir", workdir, "--quiet"]
    print("$ " + " ".join(shlex.quote(c) for c in command), flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    fields = {}
    for line in done.stderr.splitlines():
        key, _, value = line.strip().rpartition(": ")
        fields[key] = value
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"train.py --model all failed (exit {done.returncode}): {' / '.join(tail)}")
    wall_text = fields.get("Elapsed (wall clock) time (h:mm:ss or m:ss)", "0:0")
    wall = sum(float(part) * 60**i for i, part in enumerate(reversed(wall_text.split(":"))))
    user, system = float(fields.get("User time (seconds)", 0)), float(fields.get("System time (seconds)", 0))
    return dict(wall_seconds=wall, user_seconds=user, system_seconds=system, cpu_seconds=user + system,
                max_resident_kb=int(fields.get("Maximum resident set size (kbytes)", 0)),
                summary=done.stdout.strip().splitlines()[-6:])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    print("$ python benchmarks/train_speed.py " + " ".join(shlex.quote(a) for a in argv), flush=True)

    import kerascam  # noqa: F401  (first: it quiets TensorFlow's start-up logs)
    from kerascam import configs

    if args.threads:  # before the runtime starts
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    machine = _machine()
    print(
        f"machine: {machine['cpus']} CPUs ({machine['usable_cpus']} usable, "
        f"load average {machine['load_average']:.1f}), "
        f"CPU bfloat16 flags: {', '.join(machine['cpu_bfloat16_flags']) or 'none'}; "
        f"GPUs: {', '.join(machine['gpus']) or 'none'}; TensorFlow {machine['tensorflow']} "
        f"(threads: {args.threads or 'the default'}), Keras {machine['keras']}",
        flush=True,
    )
    preset = configs.get_preset(args.preset)
    xla = {"off": [False], "on": [True], "both": [False, True]}[args.xla]
    cases = [(p, j) for j in xla for p in args.precision]
    dtypes = sorted({COMPUTE_DTYPE[p] for p in args.precision} | {"float32"}, key=list(COMPUTE_DTYPE.values()).index)

    def measure_peaks():
        return {dtype: matmul_peak(dtype, args.peak_size) for dtype in dtypes}

    started = time.perf_counter()
    peak_runs = [measure_peaks()]
    print("peak before: " + ", ".join(f"{d} {_si(p['flops_per_s'], 'FLOP/s')}" if p else f"{d} none"
                                      for d, p in peak_runs[0].items()), flush=True)
    results = []
    for name in args.models:
        config = preset.for_model(name, image_size=args.image_size, batch_size=args.batch_size,
                                  unet_filters=args.unet_filters, seed=args.seed)
        model_started = time.perf_counter()
        model_results = run_model(config, cases, args)
        results += model_results
        rates = ", ".join(
            f"{r['precision']}{' XLA' if r['xla'] else ''} {r['images_per_s']:.1f}" for r in model_results
        )
        print(f"... {name} ({config.image_size}x{config.image_size}, batch {config.batch_size}): images/s {rates} "
              f"({time.perf_counter() - model_started:.0f} s)", flush=True)
    peak_runs.append(measure_peaks())
    peaks = {}
    for dtype in dtypes:
        found = [run[dtype] for run in peak_runs if run[dtype]]
        peaks[dtype] = (
            {key: max(p[key] for p in found) for key in ("flops_per_s", "flops_per_cpu_s")} if found else None
        )
    for r in results:
        r["flops_per_s"] = r["step_flops_per_image"] * r["images_per_s"]
        peak = peaks.get(COMPUTE_DTYPE[r["precision"]])
        r["mfu"] = r["flops_per_s"] / peak["flops_per_s"] if peak else None
        r["mfu_cpu"] = r["step_flops_per_image"] * r["images_per_cpu_s"] / peak["flops_per_cpu_s"] if peak else None
    print()
    print(format_table(results, peaks))
    print(
        f"medians (ranges) of {args.rounds} round(s) of {args.steps} steps of the batch; FLOPs counted from the "
        "convolution and dense layers, forward x3 for forward+backward;\nMFU = the step's FLOP/s over the peak of its "
        "compute dtype; MFU CPU = the same per second of CPU time (what a shared machine disturbs least);\n"
        "x float32, x CPU: images/s and images/CPU-s over the float32 step's "
        f"({time.perf_counter() - started:.0f} s)"
    )
    record = dict(args={k: v for k, v in vars(args).items()}, machine=machine, peaks=peaks, peak_runs=peak_runs,
                  results=results)
    if args.demo_time:
        with tempfile.TemporaryDirectory(prefix="kerascam-demo-time-") as workdir:
            record["demo_time"] = timing = demo_time(workdir)
        print(f"\npython train.py --model all: wall {timing['wall_seconds']:.0f} s, CPU {timing['cpu_seconds']:.0f} s "
              f"(user {timing['user_seconds']:.0f} + system {timing['system_seconds']:.0f}), "
              f"peak resident {timing['max_resident_kb'] / 1024:.0f} MiB")
        print("\n".join(timing["summary"]))
    if args.json:
        sys.path.insert(0, ROOT)
        from kerascam import io

        io.write_json(args.json, record)
    return record


if __name__ == "__main__":
    main()
