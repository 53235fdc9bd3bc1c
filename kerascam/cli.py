"""Command lines of train.py and evaluate.py.

Errors a user can fix end the program with one line on stderr and exit code 2
(usage, bad values) or 1 (a failure while running); ``--debug`` shows the
traceback instead.
"""

import argparse
import dataclasses
import os
import sys
import tempfile
import time

from kerascam import configs, precision
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


def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def check_writable(folder, flag="--workdir"):
    """Fails now, not after hours of work, if ``folder`` cannot be written (``flag``: the option that named it)."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UsageError(f"cannot write to {folder!r}: {e.strerror}; choose another {flag}") from None


def _first_line(error, message=None):
    """The first line of ``message`` (default: the error's own), or the error's type name when empty."""
    text = str(error if message is None else message).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_cli(main, argv, prog):
    """Runs ``main(argv)`` and turns expected failures into one-line errors."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend != "tensorflow":
        # Training, the CAM engine and the exports are TensorFlow code; under
        # another backend they would fail deep inside Keras.
        print(f"{prog}: error: kerascam's commands run on Keras' TensorFlow backend, but KERAS_BACKEND is "
              f"{backend!r}; unset it or set it to tensorflow", file=sys.stderr)
        return 2
    try:
        return main(argv) or 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  (the point is to catch everything)
        from kerascam.training import TrainingError, TrainingInterrupted

        if isinstance(e, TrainingInterrupted):  # saved: not an error, and no traceback even with --debug
            print(e, file=sys.stderr)
            return e.exit_code
        if debug:
            raise

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


def train_parser(prog="train.py"):
    p = _Parser(prog=prog, description="Train the paper's classifiers and export them.", epilog=TRAIN_EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--mixed-precision", nargs="?", const="mixed_float16", choices=precision.REQUESTS,
                   help="auto: mixed_bfloat16 where the hardware computes bfloat16 natively (GPUs of compute "
                        "capability 8.0 on, CPUs with avx512_bf16 or amx_bf16), else float32; none: float32; "
                        "mixed_bfloat16; mixed_float16 (GPUs, with loss scaling; also the flag without a value). "
                        "Default: the preset's (paper224 auto; demo auto for vgg16 and resnet50, none for the "
                        "U-Nets; imagenet and smoke none)")
    p.add_argument("--jit", action="store_true", help="compile the forward and backward pass with XLA")
    p.add_argument("--low-res-epochs", type=non_negative_int, metavar="N",
                   help="progressive resizing: the first N epochs train on images downscaled to --low-res-size "
                        "(default 0: every epoch at --image-size)")
    p.add_argument("--low-res-size", type=positive_int, metavar="S", help="side of the low-resolution epochs' images")
    p.add_argument("--unet-filters", type=positive_int, help="U-Net filters at the first level (paper: 64)")
    p.add_argument("--train-examples", type=positive_int, help="embedded dataset: training images")
    p.add_argument("--validation-examples", type=positive_int, help="embedded dataset: validation images")
    p.add_argument("--max-pixels", type=non_negative_int,
                   help="folder: datasets: images of more pixels (width x height, read from the file's header) "
                        "are skipped without being decoded (default: 89478485, Pillow's limit; 0 = no limit)")
    p.add_argument("--workdir", default="runs", help="folder of the runs (default: runs/)")
    p.add_argument("--strategy", choices=("auto", "default", "mirrored", "multiworker"),
                   help="tf.distribute strategy (default: auto; multiworker reads TF_CONFIG)")
    p.add_argument("--seed", type=int)
    p.add_argument("--weights", help="initial weights: imagenet (ResNet50/VGG16) or a .weights.h5 file")
    p.add_argument("--jobs", type=positive_int,
                   help="with --model all: models trained at the same time, each in its own process "
                        "(default: 2 on a machine without GPU, where one run leaves cores idle; 1 with GPUs)")
    p.add_argument("--checkpoint-every", type=non_negative_int, metavar="STEPS",
                   help="steps between checkpoints within an epoch (0: at epoch ends only; default: about every "
                        "10 minutes at the preset's expected speed)")
    p.add_argument("--target-accuracy", type=float, metavar="A",
                   help="stop at the first validation check (every quarter epoch) at or above A, in (0, 1]")
    p.add_argument("--cam-summaries", type=non_negative_int, metavar="N",
                   help="TensorBoard CAM overlays of the first N validation images after every epoch (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


TRAIN_EPILOG = """\
exit codes: 0 done; 1 failure (one line; --debug shows the traceback); 2 bad input;
  143 stopped by SIGTERM, 130 by SIGINT (Ctrl-C): the step under way finished and a checkpoint
  was written, the same command resumes at the next step; a second signal ends at once (no save).
"""


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

    from kerascam.training import available_cpus

    if strategy in ("mirrored", "multiworker") or tf.config.list_physical_devices("GPU"):
        return 1
    return 2 if available_cpus() >= 2 else 1


# In a training process of --jobs N: the parent asked to stop (SIGUSR1).
_stop_requested = []


def _train_in_child(config, workdir, verbose):
    from kerascam.training import TrainingInterrupted, train

    if _stop_requested:  # a model queued before the stop: left for the next run
        raise TrainingInterrupted(f"{config.model}: not started; the same command trains it", 143)
    try:
        return train(config, workdir, verbose=verbose)
    except TrainingInterrupted:
        _stop_requested.append(True)
        raise


def threads_per_job(jobs):
    """TensorFlow threads for each of ``jobs`` training processes: the cores split evenly, at least 1.

    Left alone, every process starts a pool as wide as the machine, so two
    processes on 2 cores run 4 busy threads that compete for them: measured
    here (``benchmarks/train_speed.py``, two copies at once, one or two
    threads each) one thread per process trains 1.06-1.14x more images per
    CPU-second (ResNet50 44 -> 50, VGG16 in bfloat16 30.5 -> 32.5, U-Net
    114 -> 128 images/s per process).
    """
    from kerascam.training import available_cpus

    return max(1, available_cpus() // jobs)


def _prepare_training_process(threads):
    import signal

    import tensorflow as tf

    # Before the first op: the pools are built when the runtime starts.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    # Ctrl-C reaches the whole process group: the parent passes it on as
    # SIGUSR1, the one request a training process acts on between models.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, lambda signum, frame: _stop_requested.append(signum))


def _train_in_parallel(run_configs, workdir, jobs, verbose):
    """Trains each config in a process of its own, ``jobs`` at a time.

    Each process gets ``threads_per_job(jobs)`` TensorFlow threads (recorded
    in ``run.json``), and each run is the same as a run alone with as many
    threads (same seed, same data order); with another number of threads
    oneDNN may sum in another order (VGG16's weights moved by 1e-5 after 4
    smoke steps with 1 thread instead of 2; ResNet50's did not), and over a
    demo run such differences grow into a few points of accuracy. A failed
    model does not stop the others; the failures are raised together at the
    end.

    SIGTERM or SIGINT to this process is passed on to the training processes
    as SIGUSR1 (each finishes its step, saves and stops; a signal they got
    straight from the terminal or the system counts the same, once), no
    model starts after it, and this process raises ``TrainingInterrupted``
    with its own code once they have saved. A second signal kills them all
    at once.
    """
    import concurrent.futures
    import multiprocessing
    import signal
    import threading

    from kerascam.training import TrainingError, TrainingInterrupted

    order = sorted(run_configs, key=lambda c: _TRAINING_ORDER.index(c.model))
    threads = threads_per_job(jobs)
    print(f"training {', '.join(c.model for c in order)}, {jobs} at a time, each in its own process "
          f"with {threads} thread{'s' if threads > 1 else ''} "
          f"(curves: {os.path.join(workdir, 'MODEL', 'history.csv')})", flush=True)
    summaries, failures = {}, []
    context = multiprocessing.get_context("spawn")  # a fresh TensorFlow in every process
    received = []

    def pass_on(signum, frame):
        children = multiprocessing.active_children()
        if received:  # the second signal: no more saving
            for child in children:
                os.kill(child.pid, signal.SIGKILL)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        received.append(signum)
        for future in list(futures):
            future.cancel()  # the models not started yet
        for child in children:
            os.kill(child.pid, signal.SIGUSR1)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, pass_on) for s in (signal.SIGTERM, signal.SIGINT)} if in_main_thread else {}
    futures = {}
    try:
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                                                    initializer=_prepare_training_process, initargs=(threads,)) as pool:
            for config in order:
                futures[pool.submit(_train_in_child, config, workdir, verbose)] = config.model
            _collect(futures, summaries, failures, TrainingInterrupted)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise TrainingInterrupted("train.py: interrupted; the models under way saved a checkpoint, "
                                  "the same command resumes", 128 + received[0])
    if failures:
        raise TrainingError("; ".join(failures))
    return [summaries[c.model] for c in run_configs]


def _collect(futures, summaries, failures, interrupted_type):
    import concurrent.futures

    for future in concurrent.futures.as_completed(futures):
        model = futures[future]
        if future.cancelled():
            continue
        try:
            summaries[model] = s = future.result()
        except interrupted_type as e:
            print(e, flush=True)
            continue
        except Exception as e:  # noqa: BLE001  (reported with the others at the end)
            failures.append(f"{model}: {_first_line(e)}")
            print(f"{model} failed: {_first_line(e)}", flush=True)
            continue
        print(f"{model} done: val_accuracy {s['val_accuracy']:.4f} in {s['wall_seconds']:.0f} s", flush=True)


def _resolve_precision(run_configs, requested, workdir, preset=None):
    """Each config with ``--mixed-precision`` resolved, and the run's first line(s) saying which and why.

    ``requested``: the ``--mixed-precision`` request of each model, by name;
    ``preset``: the preset they are the defaults of (no flag given), named as
    the reason of a float32 choice.

    Returns:
        ``(configs, choices)``: the configs with ``mixed_precision`` set, and
        each model's ``kerascam.precision.PrecisionChoice``.
    """
    choices = {c.model: precision.resolve_for_run(requested[c.model], os.path.join(workdir, c.model))
               for c in run_configs}
    if preset:  # float32 was the preset's choice, not the user's
        choices = {model: dataclasses.replace(choice, reason=f"the {preset} preset's default")
                   if choice.requested == "none" else choice for model, choice in choices.items()}
    lines = {choice.describe() for choice in choices.values()}
    if len(lines) == 1:
        print(lines.pop(), flush=True)
    else:
        for model, choice in choices.items():
            print(f"{model}: {choice.describe()}", flush=True)
    for warning in dict.fromkeys(choice.warning for choice in choices.values() if choice.warning):
        print(f"train.py: {warning}", file=sys.stderr, flush=True)
    return [dataclasses.replace(c, mixed_precision=choices[c.model].policy) for c in run_configs], choices


def _record_precision(workdir, summaries, choices):
    """Adds the precision, what was asked and why, to each finished run's ``run.json``."""
    from kerascam import io

    for summary in summaries:
        path = os.path.join(workdir, summary["model"], "run.json")
        if summary.get("chief") is False or summary["model"] not in choices or not os.path.exists(path):
            continue
        summary["precision"] = choices[summary["model"]].to_dict()
        io.write_json(path, {**io.read_json(path), "precision": summary["precision"]})


def train_main(argv, prog="train.py"):
    args = train_parser(prog).parse_args(argv)
    if args.weights and args.weights != "imagenet" and not os.path.isfile(args.weights):
        raise UsageError(f"--weights {args.weights!r}: no such file (expected 'imagenet' or a .weights.h5 file)")
    if args.weights and args.model == "all":
        raise UsageError("--weights applies to one model; use it with --model resnet50 (or another single model)")
    if args.target_accuracy is not None and not 0 < args.target_accuracy <= 1:
        raise UsageError(f"--target-accuracy must lie in (0, 1], got {args.target_accuracy}")
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
        "jit": args.jit or None,
        "low_resolution_epochs": args.low_res_epochs,
        "low_resolution_size": args.low_res_size,
        "unet_filters": args.unet_filters,
        "train_examples": args.train_examples,
        "validation_examples": args.validation_examples,
        "max_pixels": args.max_pixels,
        "strategy": args.strategy,
        "seed": args.seed,
        "weights": args.weights,
        "checkpoint_every": args.checkpoint_every,
        "target_accuracy": args.target_accuracy,
        "cam_summaries": args.cam_summaries,
    }
    names = MODEL_NAMES if args.model == "all" else (args.model,)
    run_configs = [preset.for_model(name, **flags) for name in names]
    from kerascam import progressive
    from kerascam.models import check_image_size
    from kerascam.training import train

    for config in run_configs:  # reject sizes a model cannot take before any training
        check_image_size(config.model, config.image_size)
        try:
            progressive.check_config(config)
        except ValueError as e:
            raise UsageError(f"{config.model}: {e} (--low-res-epochs, --low-res-size, --epochs)") from None

    if (args.jobs or 1) > 1 and args.strategy in ("mirrored", "multiworker"):
        raise UsageError(f"--jobs {args.jobs} trains models side by side on one device; "
                         f"with --strategy {args.strategy} train them one at a time (--jobs 1)")
    requested = {c.model: args.mixed_precision or configs.default_mixed_precision(args.preset, c.model)
                 for c in run_configs}
    run_configs, precisions = _resolve_precision(run_configs, requested, args.workdir,
                                                 preset=None if args.mixed_precision else args.preset)
    started = time.time()
    jobs = min(args.jobs or default_jobs(run_configs[0].strategy), len(run_configs))
    if jobs > 1:
        # One line per epoch and model: progress bars of two processes would mix.
        summaries = _train_in_parallel(run_configs, args.workdir, jobs, verbose=0 if args.quiet else 2)
    else:
        summaries = [train(config, args.workdir, verbose=0 if args.quiet else 1) for config in run_configs]
    _record_precision(args.workdir, summaries, precisions)
    print()
    for s in summaries:
        if s.get("chief") is False:  # another worker of a cluster: the chief reports
            print(f"{s['model']}: worker done, val_accuracy {s['val_accuracy']:.4f}")
            continue
        stop = s.get("stopped_at")
        trained = (f"stopped at the target, epoch {stop['epoch']} step {stop['step']}" if stop
                   else f"after {s['epochs_completed']} epochs")
        print(
            f"{s['model']:>13}: val_accuracy {s['val_accuracy']:.4f} {trained}, "
            f"{s['wall_seconds']:.0f} s, {s['parameters']:,} parameters -> {os.path.join(args.workdir, s['model'])}"
        )
    skipped = sorted({name for s in summaries for name in s.get("skipped_files", ())})
    if skipped:
        from kerascam.data import describe_skipped

        print(f"{describe_skipped(skipped)} (listed in run.json)")
    print(f"total: {time.time() - started:.0f} s")
    return 0


def evaluate_parser(prog="evaluate.py"):
    from kerascam.evaluation import available_columns, available_scores

    p = _Parser(prog=prog, description="Explain the trained models and score how well the maps localize.")
    p.add_argument("--cam", nargs="+", default=["all"], choices=(*available_columns(), "all"), metavar="METHOD",
                   help="CAM methods, fused variants and model-free baselines to compare, or all "
                        f"(default): {', '.join(available_columns())}")
    p.add_argument("--scores", nargs="+", default=["all"], choices=(*available_scores(), "all"), metavar="SCORE",
                   help=f"scores to compute, or all (default): {', '.join(available_scores())}")
    p.add_argument("--models", nargs="+", metavar="MODEL",
                   help="runs of --workdir to explain, each a folder with a model.keras: "
                        f"{', '.join(MODEL_NAMES)} or your own (default: all of them)")
    p.add_argument("--workdir", default="runs", help="folder of the trained runs (default: runs/)")
    p.add_argument("--num-images", type=positive_int, default=200, help="images of the split to explain (default: 200)")
    p.add_argument("--dataset", help="dataset (default: the one the models were trained on)")
    p.add_argument("--split", default="validation", help="dataset split (default: validation)")
    p.add_argument("--boxes", help="ImageNet: folder of the validation box XMLs, scored as ground-truth masks")
    p.add_argument("--max-pixels", type=non_negative_int,
                   help="folder: datasets: images of more pixels (width x height) are skipped without being "
                        "decoded (default: the models' training limit; 0 = no limit)")
    p.add_argument("--batch-size", type=positive_int, default=25)
    p.add_argument("--max-n", type=int, default=32, help="ScoreCAM channels, Faster-ScoreCAM (default: 32; 0 = all)")
    p.add_argument("--mask-threshold", type=float, default=0.5, help="threshold of the reference map (default: 0.5)")
    p.add_argument("--class-index", choices=("predicted", "true"), default="predicted", help="class to explain")
    p.add_argument("--figures", type=int, default=6, help="images in the overview figure (default: 6)")
    p.add_argument("--backend", choices=("kerascam", "tf-keras-vis"), default="kerascam",
                   help="CAM implementation: the compiled engine (default) or the tf-keras-vis reference")
    p.add_argument("--faithfulness-images", type=positive_int, default=50,
                   help="images scored by deletion and insertion (default: 50)")
    p.add_argument("--road-images", type=positive_int, default=100, help="images scored by ROAD (default: 100)")
    p.add_argument("--faithfulness-steps", type=positive_int, default=16,
                   help="steps K of the deletion and insertion curves (default: 16)")
    p.add_argument("--tie-draws", type=positive_int, default=3,
                   help="deletion, insertion and ROAD break ties of a map at random; steps that cut a plateau are "
                        "averaged over this many draws (default: 3)")
    p.add_argument("--randomization-images", type=positive_int, default=25,
                   help="images scored by the randomization check (default: 25)")
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


def evaluate_main(argv, prog="evaluate.py"):
    from kerascam.evaluation import EvalConfig, available_columns, evaluate

    args = evaluate_parser(prog).parse_args(argv)
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
        tie_draws=args.tie_draws,
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
        max_pixels=args.max_pixels,
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


def _method_name(text):
    from kerascam.cams import available_methods

    if text.lower() == "all" or text.lower() in available_methods():
        return text.lower()
    raise argparse.ArgumentTypeError(f"unknown method {text!r}; choose from {', '.join(available_methods())} or all")


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def explain_parser(prog="kerascam explain"):
    from kerascam import explain

    p = _Parser(
        prog=prog,
        description="Explain images with a classifier: an overlay PNG, the map (.npy, 16-bit PNG) and a JSON line "
                    "per image and method.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders (searched recursively) or globs")
    p.add_argument("--model", required=True,
                   help="a .keras file, a SavedModel folder, a run of --workdir (unet, resnet50, ...) or a "
                        "keras.applications name (resnet50, mobilenetv2, efficientnetb0, ...); "
                        "keras.applications:NAME when a run has the same name")
    p.add_argument("--workdir", default="runs", help="folder of the trained runs (default: runs/)")
    p.add_argument("--weights", help="keras.applications models: imagenet (default; downloads once), none, or a "
                                     "weights file")
    p.add_argument("--image-size", type=positive_int,
                   help="keras.applications models: side of the input (default: the architecture's own)")
    p.add_argument("--method", action="append", type=_method_name, metavar="METHOD",
                   help="CAM method, repeatable, or all (default: gradcam++)")
    p.add_argument("--class", dest="class_choice", default="predicted", metavar="CLASS",
                   help="class to explain: predicted (default), topK (a map for each of the K most probable), "
                        "a class index or a class name")
    p.add_argument("--target-layer", help="layer to explain, e.g. conv5_block3_out or resnet50/conv5_block3_out "
                                          "(default: the model's declared or last convolutional layer)")
    p.add_argument("--out", default=explain.DEFAULT_OUT, help=f"output folder (default: {explain.DEFAULT_OUT}/)")
    p.add_argument("--alpha", type=_fraction, default=0.5, help="weight of the map over the image (default: 0.5)")
    p.add_argument("--colormap", default=explain.DEFAULT_COLORMAP,
                   help=f"matplotlib colormap (default: {explain.DEFAULT_COLORMAP}, perceptually uniform; "
                        "jet, turbo, magma, ...)")
    p.add_argument("--max-n", type=int, default=32, help="ScoreCAM channels, Faster-ScoreCAM (default: 32; 0 = all)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per model call (default: 8)")
    p.add_argument("--max-pixels", type=int, default=explain.MAX_PIXELS,
                   help=f"skip images with more pixels, known from their header (default: {explain.MAX_PIXELS:,}; "
                        "0 = no limit)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def explain_main(argv, prog="kerascam explain"):
    """``kerascam explain``: exit 0 if any image was explained, 1 if none could be read."""
    args = explain_parser(prog).parse_args(argv)
    if args.max_n < 0:
        raise UsageError(f"--max-n must be 0 (all channels) or positive, got {args.max_n}")
    if args.max_pixels < 0:
        raise UsageError(f"--max-pixels must be 0 (no limit) or positive, got {args.max_pixels}")
    import matplotlib

    if args.colormap not in matplotlib.colormaps:
        raise UsageError(f"--colormap {args.colormap!r}: no such matplotlib colormap (e.g. viridis, turbo, jet, magma)")
    from kerascam import explain

    paths = explain.find_images(args.images)
    check_writable(args.out, "--out")
    source = explain.load_model(args.model, workdir=args.workdir, weights=args.weights, image_size=args.image_size)
    print(f"model: {source.description}", flush=True)
    summary = explain.explain_files(
        source,
        paths,
        methods=args.method,
        class_choice=args.class_choice,
        target_layer=args.target_layer,
        out_dir=args.out,
        alpha=args.alpha,
        colormap=args.colormap,
        max_N=args.max_n or None,
        batch_size=args.batch_size,
        max_pixels=args.max_pixels or None,
        progress=not args.quiet,
    )
    explained = len({r["file"] for r in summary.records})
    print(f"{explained} image{'s' * (explained != 1)} explained, {len(summary.records)} maps -> {args.out} "
          f"(records: {os.path.join(args.out, explain.RECORDS_FILE)})")
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} unreadable image{'s' * (len(summary.skipped) != 1)}: "
              + "; ".join(f"{path} ({reason})" for path, reason in summary.skipped), file=sys.stderr)
    return 0 if explained else 1


COMMANDS = {
    "train": (train_main, "train the classifiers and export them (the flags of train.py)"),
    "evaluate": (evaluate_main, "explain the trained models and score the maps (the flags of evaluate.py)"),
    "explain": (explain_main, "explain your images with a trained run, a .keras file, a SavedModel or a "
                              "keras.applications model"),
}


def _top_parser():
    from kerascam import __version__

    p = _Parser(
        prog="kerascam",
        description="High-resolution explanation maps for CNN classifiers.",
        epilog="commands:\n" + "\n".join(f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items())
               + "\n\n'kerascam COMMAND --help' shows a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"kerascam {__version__}")
    p.add_argument("command", choices=tuple(COMMANDS), metavar="COMMAND", help="train, evaluate or explain")
    return p


def _no_command(argv):
    _top_parser().parse_args(argv)  # --help, --version, or an error naming the commands
    raise UsageError("a command is required: " + ", ".join(COMMANDS) + " (see --help)")


def main(argv=None):
    """The installed ``kerascam`` command (also ``python -m kerascam``): ``kerascam COMMAND ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        command = argv[0]
        prog = f"kerascam {command}"
        handler = COMMANDS[command][0]
        return run_cli(lambda rest: handler(rest, prog=prog), argv[1:], prog)
    return run_cli(_no_command, argv, "kerascam")
