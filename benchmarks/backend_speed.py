"""Train-step images/s and MFU of the paper's models under Keras' JAX backend.

For a GPU machine that has JAX but not TensorFlow's CUDA build (the H200
lent to this project has JAX and PyTorch, no TensorFlow, and no registry to
install it from): the same Keras models that ``train.py`` trains
(``kerascam.models.build_model``: the U-Net and its ablated twin,
keras.applications' ResNet50, VGG16 with batch normalization), trained
through Keras' own jit-compiled train step (``model.compile(jit_compile=True)``
+ ``train_on_batch``: XLA, as JAX always compiles) instead of kerascam's
TensorFlow loop. It tells what the architectures cost on the accelerator;
the TensorFlow loop, the CAM engine and the input pipeline need
``benchmarks/gpu_check.sh`` on a machine with TensorFlow's GPU build.

    KERAS_BACKEND=jax python benchmarks/backend_speed.py --image-size 224 --unet-filters 64 \\
        --batch-size 64 --precision float32,mixed_bfloat16,mixed_float16 --models unet,resnet50

Each case (model, precision, batch) is built and compiled once, then the
cases are timed in interleaved rounds of ``--steps`` steps on one batch of
random images kept on the device; the loss is read back after every step,
as a training loop does. FLOPs per image are counted from the layers as in
``benchmarks/train_speed.py`` (3x the forward convolutions and dense
layers); the peak is a chain of square matmuls in each compute dtype,
measured in the same run. float32 means JAX's default matmul precision,
which on an NVIDIA GPU from Ampere on is TF32 for matmuls and convolutions,
in the steps and in the peak alike.

``--estimate PRESET`` also gives, from the measured bfloat16 (or float32)
images/s at that preset's batch size, the compute time of that preset's
training (epochs x training images per model): an estimate that leaves out
drawing the images, validation, start-up and export. ``--deadline-s`` stops
building new cases once that many seconds have passed, so that a run on a
rented machine ends in time; the cases built are still timed.
"""

import argparse
import dataclasses
import functools
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's kerascam, installed or not
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # train_speed's FLOP count, _timing
from _timing import timed  # noqa: E402

# The models, precisions and FLOP count of train_speed.py (stdlib-only at import).
from train_speed import COMPUTE_DTYPE, MODELS, PRECISIONS, _csv, forward_flops  # noqa: E402


def _int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def parse_args(argv=None):
    from kerascam import configs

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="demo", choices=tuple(configs.PRESETS),
                        help="per-model settings (U-Net filters, VGG16's batch norm); default demo")
    parser.add_argument("--models", type=_csv(MODELS, "models"), default=list(MODELS))
    parser.add_argument("--precision", type=_csv(PRECISIONS, "precision"), default=["float32", "mixed_bfloat16"])
    parser.add_argument("--batch-size", type=_int_list, help="comma-separated; default: the preset's")
    parser.add_argument("--image-size", type=int, help="default: the preset's")
    parser.add_argument("--unet-filters", type=int, help="default: the preset's")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--peak-size", type=int, default=8192, help="side of the peak's matmuls (default 8192)")
    parser.add_argument("--estimate", choices=tuple(configs.PRESETS),
                        help="also estimate this preset's training compute time from the measured steps")
    parser.add_argument("--deadline-s", type=float, default=0, help="stop building cases after this many seconds")
    parser.add_argument("--json", help="write the results here")
    return parser.parse_args(argv)


def _sync(value):
    import keras

    return float(keras.ops.convert_to_numpy(value))


def matmul_peak(dtype, size, calls=8, repeats=3):
    """FLOP/s of a chain of ``calls`` square matmuls in ``dtype``: the best of ``repeats``."""
    import keras

    ops = keras.ops
    a = ops.cast(keras.random.uniform((size, size), seed=1), dtype)
    b = ops.cast(keras.random.uniform((size, size), seed=2) * (2.0 / size), dtype)

    def chain():
        x = a
        for _ in range(calls):
            x = ops.matmul(x, b)  # each feeds the next, values stay near 0.5
        return _sync(ops.cast(x[0, 0], "float32"))

    chain()
    best = min(timed(chain)[0] for _ in range(repeats))
    return calls * 2 * size**3 / best


def _train_step(model, x, y):
    return _sync(model.train_on_batch(x, y))


def build_case(config, model_name, precision, num_classes, seed):
    """A compiled Keras model of ``model_name`` under ``precision``: (model, compile-and-first-step seconds)."""
    import keras

    from kerascam.models import build_model
    from kerascam.precision import dtype_policy

    config = config.for_model(model_name)
    keras.utils.set_random_seed(seed)
    with dtype_policy(None if precision == "float32" else precision):
        model = build_model(
            model_name, config.image_size, num_classes, unet_filters=config.unet_filters,
            batch_norm=config.batch_norm, vgg_batch_norm=config.vgg_batch_norm,
        )
        # mixed_float16: Keras wraps the optimizer in a LossScaleOptimizer itself.
        model.compile(
            optimizer=keras.optimizers.AdamW(config.effective_learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=True,
        )
    return model, config


def run(args):
    import keras
    import numpy as np

    from kerascam import configs

    start = time.perf_counter()
    base = configs.get_preset(args.preset)
    overrides = {k: v for k, v in dict(image_size=args.image_size, unet_filters=args.unet_filters).items() if v}
    base = dataclasses.replace(base, **overrides)
    batches = args.batch_size or [base.batch_size]
    rng = np.random.default_rng(0)
    peaks = {}
    for precision in args.precision:
        dtype = COMPUTE_DTYPE[precision]
        if dtype not in peaks:
            peaks[dtype] = matmul_peak(dtype, args.peak_size)
    cases, skipped = [], []
    for model_name in args.models:
        for precision in args.precision:
            for batch in batches:
                if args.deadline_s and time.perf_counter() - start > args.deadline_s:
                    skipped.append(dict(model=model_name, precision=precision, batch=batch))
                    continue
                model, config = build_case(base, model_name, precision, args.num_classes, seed=0)
                x = keras.ops.convert_to_tensor(rng.uniform(0, 255, (batch, config.image_size, config.image_size, 3))
                                                .astype("float32"))
                y = keras.ops.convert_to_tensor(rng.integers(0, args.num_classes, batch).astype("int32"))
                step = functools.partial(_train_step, model, x, y)
                compile_s = timed(step)[0]  # traces, compiles (and autotunes) the step
                step()
                flops = forward_flops(model)
                cases.append(dict(
                    model=model_name, precision=precision, batch=batch, image_size=config.image_size,
                    unet_filters=config.unet_filters if model_name.startswith("unet") else None,
                    parameters=int(model.count_params()), step_flops_per_image=3 * flops["forward"],
                    compile_seconds=compile_s, step=step, rates=[],
                ))
                print(f"built {model_name} {precision} batch {batch}: {compile_s:.1f} s to compile", flush=True)
    for _ in range(args.rounds):
        for case in cases:
            seconds = timed(lambda: [case["step"]() for _ in range(args.steps)])[0]
            case["rates"].append(args.steps * case["batch"] / seconds)
    results = []
    for case in cases:
        rate = statistics.median(case["rates"])
        flops_per_s = rate * case["step_flops_per_image"]
        results.append(dict(
            {k: v for k, v in case.items() if k not in ("step", "rates")},
            images_per_s=rate, images_per_s_range=[min(case["rates"]), max(case["rates"])],
            flops_per_s=flops_per_s, mfu=flops_per_s / peaks[COMPUTE_DTYPE[case["precision"]]],
        ))
    return dict(
        backend=keras.backend.backend(), devices=_devices(), peaks_flops_per_s=peaks, peak_size=args.peak_size,
        steps=args.steps, rounds=args.rounds, results=results, skipped=skipped,
        estimate=estimate(args.estimate, results) if args.estimate else None,
        seconds=time.perf_counter() - start,
    )


def _devices():
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return [f"{d.platform}: {getattr(d, 'device_kind', d)}" for d in jax.devices()]
    return []


def estimate(preset, results):
    """Compute time of ``preset``'s training per model, from the fastest measured precision at its batch size."""
    from kerascam import configs

    base = configs.get_preset(preset)
    rows = {}
    for model_name in MODELS:
        config = base.for_model(model_name)
        measured = [r for r in results if r["model"] == model_name and r["batch"] == config.batch_size
                    and r["image_size"] == config.image_size]
        if not measured:
            continue
        best = max(measured, key=lambda r: r["images_per_s"])
        images = config.epochs * config.train_examples
        rows[model_name] = dict(precision=best["precision"], epochs=config.epochs, images=images,
                                images_per_s=best["images_per_s"], seconds=images / best["images_per_s"])
    return dict(preset=preset, models=rows, seconds=sum(r["seconds"] for r in rows.values()))


def format_report(report):
    lines = [f"backend {report['backend']}, devices: {', '.join(report['devices']) or '?'}",
             "peak (chained square matmuls, side %d): %s" % (report["peak_size"], ", ".join(
                 f"{dtype} {value / 1e12:.0f} TFLOP/s" for dtype, value in report["peaks_flops_per_s"].items()))]
    lines.append(f"{'model':<13}{'precision':<16}{'batch':>6}{'size':>6}{'GFLOP/img':>10}{'compile s':>10}"
                 f"{'images/s (range)':>26}{'TFLOP/s':>9}{'MFU':>7}")
    for r in report["results"]:
        low, high = r["images_per_s_range"]
        lines.append(f"{r['model']:<13}{r['precision']:<16}{r['batch']:>6}{r['image_size']:>6}"
                     f"{r['step_flops_per_image'] / 1e9:>10.1f}{r['compile_seconds']:>10.1f}"
                     f"{r['images_per_s']:>10.0f} ({low:.0f}-{high:.0f}){'':>4}"
                     f"{r['flops_per_s'] / 1e12:>9.1f}{r['mfu']:>7.1%}")
    for s in report["skipped"]:
        lines.append(f"{s['model']:<13}{s['precision']:<16}{s['batch']:>6}  skipped: --deadline-s reached")
    est = report["estimate"]
    if est and not est["models"]:
        lines.append(f"estimate: no case measured at {est['preset']}'s batch size and image size")
    elif est:
        lines.append(f"estimate: {est['preset']}'s training compute, {est['seconds'] / 60:.1f} min for "
                     f"{', '.join(est['models'])} (steps alone: no image drawing, validation, start-up or export)")
        for name, row in est["models"].items():
            lines.append(f"  {name}: {row['epochs']} epochs x {row['images'] // row['epochs']} images at "
                         f"{row['images_per_s']:.0f}/s ({row['precision']}): {row['seconds']:.0f} s")
    lines.append(f"({report['seconds']:.0f} s in all)")
    return "\n".join(lines)


def main(argv=None):
    os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports Keras
    args = parse_args(argv)
    report = run(args)
    print(format_report(report))
    if args.json:
        from kerascam.io import write_text  # here: kerascam imports Keras, after the backend is chosen

        write_text(args.json, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
