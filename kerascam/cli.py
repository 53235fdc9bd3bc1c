"""Command lines of train.py and evaluate.py.

Errors a user can fix end the program with one line on stderr and exit code 2
(usage, bad values) or 1 (a failure while running); ``--debug`` shows the
traceback instead.
"""

import argparse
import os
import sys
import tempfile
import time

from kerascam import configs
from kerascam.models import MODEL_NAMES


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def check_writable(folder):
    """Fails now, not after hours of work, if ``folder`` cannot be written."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UsageError(f"cannot write to {folder!r}: {e.strerror}; choose another --workdir") from None


def _first_line(error, message=None):
    """The first line of ``message`` (default: the error's own), or the error's type name when empty."""
    text = str(error if message is None else message).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_cli(main, argv, prog):
    """Runs ``main(argv)`` and turns expected failures into one-line errors."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return main(argv) or 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  (the point is to catch everything)
        if debug:
            raise
        from kerascam.training import TrainingError

        # A missing file or folder the user named (data, a trained model) is
        # bad input too: exit code 2.
        code = 2 if isinstance(e, (UsageError, ValueError, FileNotFoundError)) else 1
        if not isinstance(e, (UsageError, ValueError, TrainingError, OSError)):
            message = f"{type(e).__name__}: {e}"
        else:
            message = str(e)
        first_line = _first_line(e, message)
        print(f"{prog}: error: {first_line} (--debug shows the traceback)" if code == 1 else f"{prog}: error: {first_line}", file=sys.stderr)
        return code


def train_parser():
    p = _Parser(prog="train.py", description="Train the paper's classifiers and export them.")
    p.add_argument("--model", default="unet", choices=(*MODEL_NAMES, "all"), help="model to train, or all four")
    p.add_argument("--preset", default="demo", choices=tuple(configs.PRESETS), help="base settings (default: demo)")
    p.add_argument("--dataset", help="shapes (embedded, the demo default), imagenet2012 or folder:PATH")
    p.add_argument("--data-dir", help="tensorflow-datasets data folder (ImageNet's prepared TFRecords)")
    p.add_argument("--manual-dir", help="folder with ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar")
    p.add_argument("--image-size", type=positive_int)
    p.add_argument("--batch-size", type=positive_int, help="global batch size")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--steps-per-epoch", type=positive_int, help="cap on the steps of one epoch")
    p.add_argument("--learning-rate", type=positive_float,
                   help="peak learning rate per --reference-batch-size images (preset: demo 1e-3 per 32, imagenet 0.1 per 256)")
    p.add_argument("--reference-batch-size", type=positive_int,
                   help="the batch size --learning-rate is given for")
    p.add_argument("--lr-scaling", choices=configs.LR_SCALINGS,
                   help="how the learning rate follows the global batch: linear (SGD, the imagenet preset), "
                        "sqrt (Adam, the demo preset) or none")
    p.add_argument("--mixed-precision", nargs="?", const="mixed_float16", choices=configs.MIXED_PRECISION_POLICIES,
                   help="train in mixed precision (GPUs): mixed_float16 (the default when the flag has no value) "
                        "or mixed_bfloat16")
    p.add_argument("--jit", action="store_true", help="compile the forward and backward pass with XLA")
    p.add_argument("--unet-filters", type=positive_int, help="U-Net filters at the first level (paper: 64)")
    p.add_argument("--train-examples", type=positive_int, help="embedded dataset: training images")
    p.add_argument("--validation-examples", type=positive_int, help="embedded dataset: validation images")
    p.add_argument("--workdir", default="runs", help="folder of the runs (default: runs/)")
    p.add_argument("--strategy", choices=("auto", "default", "mirrored", "multiworker"),
                   help="tf.distribute strategy (default: auto; multiworker reads TF_CONFIG)")
    p.add_argument("--seed", type=int)
    p.add_argument("--weights", help="initial weights: imagenet (ResNet50/VGG16) or a .weights.h5 file")
    p.add_argument("--jobs", type=positive_int,
                   help="with --model all: models trained at the same time, each in its own process "
                        "(default: 2 on a machine without GPU, where one run leaves cores idle; 1 with GPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


# Costliest first, so that a pool of processes finishes together.
_TRAINING_ORDER = ("vgg16", "resnet50", "unet", "unet_ablated")


def default_jobs(strategy):
    """Models to train at once: 2 on a CPU-only machine with 2+ cores, else 1.

    One training process keeps about 1.2 of 2 CPU cores busy here (small
    convolutions leave the second one idle much of the time); two at once use
    both (measured: ResNet50 and VGG16 together take 1.6x less wall time
    than one after the other). GPUs and multi-device strategies train one
    model at a time.
    """
    import tensorflow as tf

    if strategy in ("mirrored", "multiworker") or tf.config.list_physical_devices("GPU"):
        return 1
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def _train_in_child(config, workdir, verbose):
    from kerascam.training import train

    return train(config, workdir, verbose=verbose)


def _train_in_parallel(run_configs, workdir, jobs, verbose):
    """Trains each config in a process of its own, ``jobs`` at a time.

    Each run is the same as alone (same seed, same data order): only the wall
    time changes. A failed model does not stop the others; the failures are
    raised together at the end.
    """
    import concurrent.futures
    import multiprocessing

    from kerascam.training import TrainingError

    order = sorted(run_configs, key=lambda c: _TRAINING_ORDER.index(c.model))
    print(f"training {', '.join(c.model for c in order)}, {jobs} at a time, each in its own process "
          f"(curves: {os.path.join(workdir, 'MODEL', 'history.csv')})", flush=True)
    summaries, failures = {}, []
    context = multiprocessing.get_context("spawn")  # a fresh TensorFlow in every process
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(_train_in_child, config, workdir, verbose): config.model for config in order}
        for future in concurrent.futures.as_completed(futures):
            model = futures[future]
            try:
                summaries[model] = s = future.result()
            except Exception as e:  # noqa: BLE001  (reported with the others at the end)
                failures.append(f"{model}: {_first_line(e)}")
                print(f"{model} failed: {_first_line(e)}", flush=True)
                continue
            print(f"{model} done: val_accuracy {s['val_accuracy']:.4f} in {s['wall_seconds']:.0f} s", flush=True)
    if failures:
        raise TrainingError("; ".join(failures))
    return [summaries[c.model] for c in run_configs]


def train_main(argv):
    args = train_parser().parse_args(argv)
    if args.weights and args.weights != "imagenet" and not os.path.isfile(args.weights):
        raise UsageError(f"--weights {args.weights!r}: no such file (expected 'imagenet' or a .weights.h5 file)")
    if args.weights and args.model == "all":
        raise UsageError("--weights applies to one model; use it with --model resnet50 (or another single model)")
    check_writable(args.workdir)
    preset = configs.get_preset(args.preset)
    if args.dataset:
        from kerascam.data import check_dataset_name

        check_dataset_name(args.dataset)
    flags = {
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "manual_dir": args.manual_dir,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "learning_rate": args.learning_rate,
        "reference_batch_size": args.reference_batch_size,
        "lr_scaling": args.lr_scaling,
        "mixed_precision": args.mixed_precision,
        "jit": args.jit or None,
        "unet_filters": args.unet_filters,
        "train_examples": args.train_examples,
        "validation_examples": args.validation_examples,
        "strategy": args.strategy,
        "seed": args.seed,
        "weights": args.weights,
    }
    names = MODEL_NAMES if args.model == "all" else (args.model,)
    run_configs = [preset.for_model(name, **flags) for name in names]
    from kerascam.models import check_image_size
    from kerascam.training import train

    for config in run_configs:  # reject sizes a model cannot take before any training
        check_image_size(config.model, config.image_size)

    if (args.jobs or 1) > 1 and args.strategy in ("mirrored", "multiworker"):
        raise UsageError(f"--jobs {args.jobs} trains models side by side on one device; "
                         f"with --strategy {args.strategy} train them one at a time (--jobs 1)")
    started = time.time()
    jobs = min(args.jobs or default_jobs(run_configs[0].strategy), len(run_configs))
    if jobs > 1:
        # One line per epoch and model: progress bars of two processes would mix.
        summaries = _train_in_parallel(run_configs, args.workdir, jobs, verbose=0 if args.quiet else 2)
    else:
        summaries = [train(config, args.workdir, verbose=0 if args.quiet else 1) for config in run_configs]
    print()
    for s in summaries:
        if s.get("chief") is False:  # another worker of a cluster: the chief reports
            print(f"{s['model']}: worker done, val_accuracy {s['val_accuracy']:.4f}")
            continue
        print(
            f"{s['model']:>13}: val_accuracy {s['val_accuracy']:.4f} after {s['epochs_completed']} epochs, "
            f"{s['wall_seconds']:.0f} s, {s['parameters']:,} parameters -> {os.path.join(args.workdir, s['model'])}"
        )
    skipped = sorted({name for s in summaries for name in s.get("skipped_files", ())})
    if skipped:
        from kerascam.data import describe_skipped

        print(f"{describe_skipped(skipped)} (listed in run.json)")
    print(f"total: {time.time() - started:.0f} s")
    return 0


def evaluate_parser():
    from kerascam.evaluation import available_columns, available_scores

    p = _Parser(prog="evaluate.py", description="Explain the trained models and score how well the maps localize.")
    p.add_argument("--cam", nargs="+", default=["all"], choices=(*available_columns(), "all"), metavar="METHOD",
                   help="CAM methods, fused variants and model-free baselines to compare, or all "
                        f"(default): {', '.join(available_columns())}")
    p.add_argument("--scores", nargs="+", default=["all"], choices=(*available_scores(), "all"), metavar="SCORE",
                   help=f"scores to compute, or all (default): {', '.join(available_scores())}")
    p.add_argument("--models", nargs="+", choices=MODEL_NAMES, help="models to explain (default: all trained in --workdir)")
    p.add_argument("--workdir", default="runs", help="folder of the trained runs (default: runs/)")
    p.add_argument("--num-images", type=positive_int, default=200, help="images of the split to explain (default: 200)")
    p.add_argument("--dataset", help="dataset (default: the one the models were trained on)")
    p.add_argument("--split", default="validation", help="dataset split (default: validation)")
    p.add_argument("--boxes", help="ImageNet: folder of the validation box XMLs, scored as ground-truth masks")
    p.add_argument("--batch-size", type=positive_int, default=25)
    p.add_argument("--max-n", type=int, default=32, help="ScoreCAM channels, Faster-ScoreCAM (default: 32; 0 = all)")
    p.add_argument("--mask-threshold", type=float, default=0.5, help="threshold of the reference map (default: 0.5)")
    p.add_argument("--class-index", choices=("predicted", "true"), default="predicted", help="class to explain")
    p.add_argument("--figures", type=int, default=6, help="images in the overview figure (default: 6)")
    p.add_argument("--backend", choices=("kerascam", "tf-keras-vis"), default="kerascam",
                   help="CAM implementation: the compiled engine (default) or the tf-keras-vis reference")
    p.add_argument("--faithfulness-images", type=positive_int, default=25,
                   help="images scored by deletion and insertion (default: 25)")
    p.add_argument("--road-images", type=positive_int, default=10, help="images scored by ROAD (default: 10)")
    p.add_argument("--faithfulness-steps", type=positive_int, default=16,
                   help="steps K of the deletion and insertion curves (default: 16)")
    p.add_argument("--randomization-images", type=positive_int, default=20,
                   help="images scored by the randomization check (default: 20)")
    p.add_argument("--shard", type=int, default=0, help="this run's shard, 0 .. --num-shards - 1")
    p.add_argument("--num-shards", type=positive_int, default=1,
                   help="split the images into this many shards (run each, e.g. on its own machine)")
    p.add_argument("--merge", action="store_true", help="only build the tables from the finished shards")
    p.add_argument("--chunk", type=positive_int, default=10,
                   help="batches per saved part of the results: the same command after a kill resumes "
                        "after the last saved part (default: 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def evaluate_main(argv):
    from kerascam.evaluation import EvalConfig, available_columns, evaluate

    args = evaluate_parser().parse_args(argv)
    if not 0.0 < args.mask_threshold < 1.0:
        raise UsageError(f"--mask-threshold must lie in (0, 1), got {args.mask_threshold}")
    if not 0 <= args.shard < args.num_shards:
        raise UsageError(f"--shard must lie in 0..{args.num_shards - 1} for --num-shards {args.num_shards}, got {args.shard}")
    if args.max_n < 0:
        raise UsageError(f"--max-n must be 0 (all channels) or positive, got {args.max_n}")
    if not os.path.isdir(args.workdir):
        raise UsageError(f"--workdir {args.workdir!r} does not exist; train first: python train.py --model all")
    check_writable(os.path.join(args.workdir, "eval"))
    from kerascam.io import check_free_space

    # Records and their saved parts (a few hundred bytes per image, model and
    # method, twice), tables and figures.
    methods = tuple(available_columns()) if "all" in args.cam else tuple(dict.fromkeys(args.cam))
    scores = None if "all" in args.scores else tuple(dict.fromkeys(args.scores))
    check_free_space(os.path.join(args.workdir, "eval"), args.num_images * 4 * len(methods) * 1200 + 32 * 2**20,
                     "the evaluation's records, tables and figures")
    config = EvalConfig(
        workdir=args.workdir,
        models=args.models,
        methods=methods,
        scores=scores,
        faithfulness_images=args.faithfulness_images,
        faithfulness_steps=args.faithfulness_steps,
        road_images=args.road_images,
        randomization_images=args.randomization_images,
        num_images=args.num_images,
        split=args.split,
        dataset=args.dataset,
        batch_size=args.batch_size,
        max_N=args.max_n or None,
        mask_threshold=args.mask_threshold,
        class_index=args.class_index,
        num_figures=args.figures,
        boxes_dir=args.boxes,
        backend=args.backend,
        shard=args.shard,
        num_shards=args.num_shards,
        chunk=args.chunk,
    )
    if args.merge:
        from kerascam.evaluation import merge_shards

        table = merge_shards(config)
    else:
        table = evaluate(config, progress=not args.quiet)
    if "missing_shards" in table:
        print(f"shard {args.shard} of {args.num_shards} done; still to run: {table['missing_shards']}")
        return 0
    print()
    with open(os.path.join(args.workdir, "eval", "table.md"), encoding="utf-8") as f:
        print(f.read())
    seconds = f" ({table['seconds']:.0f} s)" if table.get("seconds") else ""
    print(f"records, tables and figures in {os.path.join(args.workdir, 'eval')}{seconds}")
    return 0
