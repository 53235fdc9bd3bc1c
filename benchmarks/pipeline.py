"""Images/s of the training input pipeline, of the train step, and of both.

The paper's setting (ResNet50 at 224x224, 1000 classes, batch 32; three to
seven minutes on a shared 2-core CPU):

    python benchmarks/pipeline.py

A quick check (under a minute on 2 CPU cores):

    python benchmarks/pipeline.py --quick

The data are a generated ILSVRC-shaped set: photo-like JPEGs of ImageNet's
sizes (mostly 500 pixels on the long side, 4:3, 3:2, 1:1, ...), written as an
``ILSVRC2012_img_train.tar`` of ``<wnid>.tar`` archives (by
``tests/helpers_ilsvrc.py``) and prepared by the real TFDS ``imagenet2012``
builder through ``kerascam.data.imagenet.load_imagenet``: what a user's
ImageNet run reads, at a few hundred images instead of 1.28 million. The set
lives in a temporary folder, or in ``--data DIR``, where it is kept and reused.

One process measures, in interleaved rounds (pipeline, step, together,
pipeline, ...) so that a slow spell of a shared machine slows every case:

* the pipeline alone: ``kerascam.data.pipeline.training_batches`` at the
  model's size (random-resized-crop and flip, parallel decoding, prefetch),
  repeated so that it never runs dry, iterated as the training loop does
  (``strategy.experimental_distribute_dataset``);
* the train step alone (``kerascam.training.make_train_step``, the step of
  ``train``), on one batch of that pipeline kept in memory;
* both together: the pipeline feeding the step, as in ``train``.

Each case starts a fresh iterator and runs a few untimed batches first, so no
case finds batches that another one prefetched. Times are wall-clock and CPU
(all threads of the process): on a shared machine other processes stretch the
wall-clock, while CPU time measures the work. The pipeline is not the
bottleneck when it delivers more images/s than the step consumes.
"""

import argparse
import contextlib
import gc
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # this checkout's kerascam, installed or not
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _timing.py, also when a test loads this file by path
from _timing import timed  # noqa: E402
from kerascam.specs import MODEL_NAMES, applications_first  # noqa: E402

MODELS = applications_first(MODEL_NAMES)  # keras.applications models first, then the U-Nets
# The paper's setting, and a run of under two minutes on a 2-core CPU. Flags
# given on the command line win over both.
DEFAULTS = dict(
    model="resnet50", batch_size=32, unet_filters=64, images=512, classes=4,
    pipeline_batches=32, steps=3, rounds=3,
)
QUICK = dict(
    model="unet", batch_size=16, unet_filters=8, images=128, classes=4,
    pipeline_batches=16, steps=3, rounds=2,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODELS, help=f"default {DEFAULTS['model']} ({QUICK['model']} with --quick)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, help=f"global batch; default {DEFAULTS['batch_size']}")
    parser.add_argument("--unet-filters", type=int, help=f"default {DEFAULTS['unet_filters']} (the paper's)")
    parser.add_argument("--images", type=int, help=f"images of the generated set; default {DEFAULTS['images']}")
    parser.add_argument("--classes", type=int, help=f"wnids of the generated set; default {DEFAULTS['classes']}")
    parser.add_argument("--data", help="folder that keeps the generated set for later runs (default: a temporary one)")
    parser.add_argument("--pipeline-batches", type=int, help="timed batches of the pipeline alone, per round")
    parser.add_argument("--steps", type=int, help="timed steps of the step alone and of both together, per round")
    parser.add_argument("--rounds", type=int, help="rounds of the three cases; the medians are reported")
    parser.add_argument("--mixed-precision", nargs="?", const="mixed_float16", choices=("mixed_float16", "mixed_bfloat16"),
                        help="Keras dtype policy of the model (mixed_float16 when the flag has no value)")
    parser.add_argument("--jit", action="store_true", help="compile the forward and backward pass with XLA")
    parser.add_argument("--quick", action="store_true", help="a small U-Net and few steps: under two minutes on 2 CPUs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the raw measurements to this file")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("batch_size", "unet_filters", "images", "classes", "pipeline_batches", "steps", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not args.classes <= min(args.images, 1000):
        parser.error(f"--classes must be at most --images and 1000 (ImageNet's wnids), got {args.classes}")
    if args.images // args.batch_size < 1:
        parser.error(f"--images {args.images} is less than one batch of {args.batch_size}")
    return args


# ----------------------------------------------------------------- data


def photo_like_image(rng):
    """A uint8 image of ImageNet's sizes whose JPEG costs what a photo's does.

    Most ILSVRC2012 images are 500 pixels on the long side with a 4:3 or 3:2
    aspect ratio; some are smaller or larger. The content mixes smooth colour
    fields, flat shapes with edges, a texture and sensor-like noise, so that
    the JPEG is neither trivially compressible nor pure noise (about 80 KB on
    average at quality 75; ImageNet's average file is about 110 KB).
    """
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    long_side = 500 if rng.random() < 0.8 else int(rng.integers(300, 801))
    short_side = int(round(long_side / rng.choice([4 / 3, 3 / 2, 1.0, 5 / 4, 16 / 9])))
    height, width = (short_side, long_side) if rng.random() < 0.75 else (long_side, short_side)

    def colour_field(cells):
        small = rng.uniform(0, 255, (cells, max(1, cells * width // height), 3)).astype(np.uint8)
        return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), np.float32)

    base = 0.5 * colour_field(3) + 0.3 * colour_field(int(rng.integers(12, 40)))
    picture = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(int(rng.integers(3, 9))):
        left, top = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [left, top, left + int(rng.integers(20, width // 2)), top + int(rng.integers(20, height // 2))]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    image = np.asarray(picture.filter(ImageFilter.GaussianBlur(1.0)), np.float32)
    image += 0.4 * (colour_field(int(rng.integers(height // 6, height // 3))) - 128)
    image += rng.normal(0, 18, (height, width, 1)) + rng.normal(0, 6, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _write_archives(manual_dir, args, wnids):
    """Writes the set's ``ILSVRC2012_img_train.tar``, and a val tar of four
    images (the builder opens one even to prepare the train split alone);
    returns the train set's statistics."""
    import numpy as np

    from kerascam.data import imagenet
    from kerascam.io import atomic_path

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from helpers_ilsvrc import encode, write_train_tar, write_val_tar

    shapes, file_sizes = [], []

    def class_images(label, count):
        for number in range(count):
            image = photo_like_image(np.random.default_rng([args.seed, label, number]))
            shapes.append(image.shape[:2])
            file_sizes.append(len(encode(image)))  # the helper encodes it the same way
            yield image

    path = os.path.join(manual_dir, imagenet.ARCHIVES["train"])
    counts = [args.images // len(wnids) + (label < args.images % len(wnids)) for label in range(len(wnids))]
    validation = [photo_like_image(np.random.default_rng([args.seed, len(wnids), n])) for n in range(4)]
    write_val_tar(os.path.join(manual_dir, imagenet.ARCHIVES["validation"]), validation)
    # Last and atomically, so that a run stopped while writing leaves no archive to trust.
    with atomic_path(path) as partial:
        write_train_tar(partial, {wnid: class_images(label, n) for label, (wnid, n) in enumerate(zip(wnids, counts))})
    return dict(
        images=len(shapes),
        mean_height=float(np.mean([s[0] for s in shapes])),
        mean_width=float(np.mean([s[1] for s in shapes])),
        mean_file_kb=float(np.mean(file_sizes) / 1000),
        archive_mb=os.path.getsize(path) / 1e6,
    )


def prepare_data(args, root):
    """The generated set, prepared by TFDS' imagenet2012 builder under ``root``.

    Returns:
        ``(examples, num_examples, num_classes, stats)``: the unbatched train
        split, its size, the builder's 1000 classes and the set's statistics.
    """
    import tensorflow_datasets as tfds

    from kerascam.data import imagenet

    folder = os.path.join(root, f"ilsvrc-{args.images}-images-{args.classes}-classes-seed{args.seed}")
    manual_dir, data_dir = os.path.join(folder, "manual"), os.path.join(folder, "tfds")
    stats_path = os.path.join(folder, "set.json")
    reused = tfds.builder("imagenet2012", data_dir=data_dir).is_prepared()
    if not reused:
        os.makedirs(manual_dir, exist_ok=True)
        # Real wnids (the builder looks labels up in its labels.txt): the first ones.
        wnids = tfds.core.tfds_path("datasets/imagenet2012/labels.txt").read_text().split()[: args.classes]
        stats = _write_archives(manual_dir, args, wnids)
        with open(stats_path, "w") as out:
            json.dump(stats, out)
    # The path of a user's run: checks the archive, prepares it once.
    _, num_examples, num_classes, _ = imagenet.load_imagenet("train", data_dir, manual_dir)
    with open(stats_path) as f:
        stats = json.load(f)
    stats.update(folder=folder, reused=reused)
    # load_imagenet's own dataset, but without TFDS' auto-cache: TFDS keeps a
    # set under 250 MiB decoded in memory after its first pass, so from then on
    # no JPEG would be decoded. The real train split (~140 GB) is never cached.
    examples = tfds.builder("imagenet2012", data_dir=data_dir).as_dataset(
        split="train", shuffle_files=False, read_config=tfds.ReadConfig(try_autocache=False)
    )
    return examples, num_examples, num_classes, stats


# ----------------------------------------------------------------- timing


def _timed(function, images):
    wall, cpu = timed(function)
    return dict(images=images, seconds=wall, cpu_seconds=cpu, images_per_s=images / wall, images_per_cpu_s=images / cpu)


def _summary(samples):
    """Medians over the rounds of one case."""
    summary = {key: statistics.median(s[key] for s in samples) for key in ("images_per_s", "images_per_cpu_s")}
    summary["rounds"] = samples
    return summary


def measure(args, batches, train_step, cached_batch):
    """Interleaved rounds of the three cases; returns their per-round samples."""
    images_per_step = args.batch_size

    def run_step(batch):
        # As the training loop: it reads the loss back after every step.
        return [float(v) for v in train_step(batch)]

    def pipeline_alone():
        iterator = iter(batches)
        for _ in range(4):  # untimed: the first batch waits for the shuffle buffer
            next(iterator)

        def consume():
            for _ in range(args.pipeline_batches):
                next(iterator)

        return _timed(consume, args.pipeline_batches * images_per_step)

    def step_alone():
        return _timed(lambda: [run_step(cached_batch) for _ in range(args.steps)], args.steps * images_per_step)

    def together():
        iterator = iter(batches)
        run_step(next(iterator))  # untimed: fills the shuffle buffer and the prefetch
        return _timed(lambda: [run_step(next(iterator)) for _ in range(args.steps)], args.steps * images_per_step)

    cases = {"pipeline": pipeline_alone, "step": step_alone, "together": together}
    samples = {name: [] for name in cases}
    for round_ in range(args.rounds):
        for name, case in cases.items():
            samples[name].append(case())
            gc.collect()  # the case's iterator, and its threads, are gone before the next one
        rates = ", ".join(f"{name} {s[-1]['images_per_s']:.1f}" for name, s in samples.items())
        print(f"... round {round_ + 1}/{args.rounds}: images/s {rates}", flush=True)
    return {name: _summary(s) for name, s in samples.items()}


# ----------------------------------------------------------------- report


def _machine():
    import keras
    import tensorflow as tf
    import tensorflow_datasets as tfds

    devices = []
    for device in tf.config.list_physical_devices():
        name = device.name.replace("/physical_device:", "")
        if device.device_type == "GPU":
            name += f" ({tf.config.experimental.get_device_details(device).get('device_name', '?')})"
        devices.append(name)
    return dict(
        cpus=os.cpu_count(),
        usable_cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        load_average=os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
        tensorflow=tf.__version__, keras=keras.__version__, tensorflow_datasets=tfds.__version__, devices=devices,
        accelerated=any(not name.startswith("CPU") for name in devices),
    )


def _ratios(results):
    """pipeline/step and together/step, in wall-clock and in CPU time."""
    ratios = {}
    for case in ("pipeline", "together"):
        ratios[f"{case}/step"] = {
            key: results[case][key] / results["step"][key] for key in ("images_per_s", "images_per_cpu_s")
        }
    return ratios


def _rate(value):
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _format_table(results):
    rows = [f"{'case':<10}{'images/s':>12}{'images/CPU-s':>15}{'x step':>9}{'x step CPU':>12}"]
    step = results["step"]
    for case in ("pipeline", "step", "together"):
        wall, cpu = results[case]["images_per_s"], results[case]["images_per_cpu_s"]
        rows.append(
            f"{case:<10}{_rate(wall):>12}{_rate(cpu):>15}"
            f"{wall / step['images_per_s']:>9.2f}{cpu / step['images_per_cpu_s']:>12.2f}"
        )
    return "\n".join(rows)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    print("$ python benchmarks/pipeline.py " + " ".join(shlex.quote(a) for a in argv), flush=True)

    import kerascam  # noqa: F401  (first: it quiets TensorFlow's start-up logs)

    import keras
    import tensorflow_datasets as tfds

    from kerascam import configs, training
    from kerascam.data import pipeline

    tfds.disable_progress_bar()
    machine = _machine()
    print(
        f"machine: {machine['cpus']} CPUs ({machine['usable_cpus']} usable, "
        f"load average {machine['load_average']:.1f}), "
        f"TensorFlow {machine['tensorflow']}, Keras {machine['keras']}, TFDS {machine['tensorflow_datasets']}; "
        f"devices: {', '.join(machine['devices'])}",
        flush=True,
    )
    started = time.perf_counter()
    root = args.data or tempfile.mkdtemp(prefix="kerascam-pipeline-bench-")
    with contextlib.ExitStack() as stack:
        if not args.data:
            stack.callback(shutil.rmtree, root, ignore_errors=True)
        examples, num_examples, num_classes, stats = prepare_data(args, root)
        print(
            f"data: {num_examples} JPEGs in {args.classes} classes, mean {stats['mean_width']:.0f}x"
            f"{stats['mean_height']:.0f} pixels, {stats['mean_file_kb']:.0f} KB; ILSVRC2012_img_train.tar prepared by "
            f"TFDS' imagenet2012 builder through kerascam.data.imagenet.load_imagenet (TFDS auto-cache off), "
            f"{'reused from' if stats['reused'] else 'written to'} {stats['folder']} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )

        # The imagenet preset's recipe (SGD, label smoothing 0.1, ...) at this
        # model and batch; model, optimizer and step built as train() builds them.
        config = configs.imagenet().for_model(
            args.model, batch_size=args.batch_size, unet_filters=args.unet_filters, image_size=args.image_size,
            seed=args.seed, mixed_precision=args.mixed_precision, jit=args.jit,
        )
        strategy = training.make_strategy(config.strategy)
        keras.utils.set_random_seed(args.seed)
        # The rest of the run under the dtype policy, as all of train() is.
        stack.enter_context(training.dtype_policy(config.mixed_precision))
        with strategy.scope():
            model = training.build_model_for(config, num_classes)
            optimizer = training.make_optimizer(config, num_examples // args.batch_size)
            optimizer.build(model.trainable_variables)
        train_step = training.make_train_step(
            model, optimizer, strategy, num_classes=num_classes, global_batch=args.batch_size,
            label_smoothing=config.label_smoothing, jit_compile=config.jit,
        )
        loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        print(
            f"model: {args.model}{f' (filters {args.unet_filters})' if args.model.startswith('unet') else ''}, "
            f"{args.image_size}x{args.image_size}, {num_classes} classes (the imagenet2012 builder's), "
            f"{model.count_params():,} parameters, random weights, {config.optimizer} optimizer"
            f"{' with loss scaling' if loss_scaled else ''}; global batch "
            f"{args.batch_size} over {strategy.num_replicas_in_sync} replica(s); "
            f"{args.mixed_precision or 'float32'}{', XLA' if args.jit else ''}",
            flush=True,
        )

        # Training's pipeline, repeated so that it never runs dry.
        batches = pipeline.training_batches(
            examples, args.batch_size, epoch=0, seed=args.seed, augment=True,
            crop_size=args.image_size, num_examples=num_examples,
        ).repeat()
        batches = strategy.experimental_distribute_dataset(batches)
        cached_batch = next(iter(batches))
        warm_up = time.perf_counter()
        for _ in range(2):  # traces (and compiles) the step
            [float(v) for v in train_step(cached_batch)]
        print(f"... warm-up steps done ({time.perf_counter() - warm_up:.0f} s)", flush=True)

        results = measure(args, batches, train_step, cached_batch)
    ratios = _ratios(results)
    print()
    print(_format_table(results))
    pipeline_ratio, together_ratio = ratios["pipeline/step"], ratios["together/step"]
    shared = 1 / (1 / results["pipeline"]["images_per_cpu_s"] + 1 / results["step"]["images_per_cpu_s"])
    print(
        f"medians of {args.rounds} round(s): pipeline over {args.pipeline_batches} batches, step and together over "
        f"{args.steps} steps of {args.batch_size} images, each after untimed batches.\n"
        "images/CPU-s: images per second of CPU time of the whole process (all threads).\n"
        f"pipeline/step: {pipeline_ratio['images_per_s']:.2f} (wall) / {pipeline_ratio['images_per_cpu_s']:.2f} (CPU); "
        f"together/step: {together_ratio['images_per_s']:.2f} / {together_ratio['images_per_cpu_s']:.2f}."
    )
    if not machine["accelerated"]:
        print(
            "No accelerator: the pipeline and the step share the CPU cores, so together cannot reach the step\n"
            f"  alone; at a CPU cost of 1/pipeline + 1/step per image it would run at {_rate(shared)} images/CPU-s "
            f"({shared / results['step']['images_per_cpu_s']:.2f}x the step)."
        )
    print()
    ok = [pipeline_ratio[key] > 1 for key in ("images_per_s", "images_per_cpu_s")]
    verdict = "/".join("PASS" if x else "FAIL" for x in ok)
    print(
        f"{verdict}  pipeline is not the bottleneck (wall / CPU): it delivers {pipeline_ratio['images_per_s']:.2f}x / "
        f"{pipeline_ratio['images_per_cpu_s']:.2f}x the images/s the step consumes (> 1)"
    )
    if args.json:
        with open(args.json, "w") as out:
            record = dict(args=vars(args), machine=machine, data=stats, results=results, ratios=ratios)
            json.dump(record, out, indent=1)


if __name__ == "__main__":
    main()
