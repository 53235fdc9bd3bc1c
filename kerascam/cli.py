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


# The commands (by their program name) that run under Keras' JAX backend as well as TensorFlow's.
JAX_READY_COMMANDS = ("train.py", "kerascam train", "evaluate.py", "kerascam evaluate", "kerascam explain",
                      "kerascam")  # the last: --help and --version


def run_cli(main, argv, prog):
    """Runs ``main(argv)`` and turns expected failures into one-line errors."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    from kerascam import backend

    try:
        backend.check_supported()
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    if backend.name() != "tensorflow" and prog not in JAX_READY_COMMANDS:
        # A command not declared ready has not been made to run without
        # TensorFlow; under another backend it would fail deep inside Keras.
        print(f"{prog}: error: {prog} runs on Keras' TensorFlow backend for now (training, evaluate and "
              f"explain run on {backend.name()} too), but KERAS_BACKEND is {backend.name()!r}; unset it or set it to tensorflow",
              file=sys.stderr)
        return 2
    try:
        return main(argv) or 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  (the point is to catch everything)
        from kerascam.training.errors import TrainingError, TrainingInterrupted, first_line

        if isinstance(e, TrainingInterrupted):  # saved: not an error, and no traceback even with --debug
            print(e, file=sys.stderr)
            return e.exit_code
        if debug:
            raise

        # A missing file or folder the user named (data, a trained model) is
        # bad input too: exit code 2; so is a TensorFlow-only feature asked
        # for where TensorFlow is not installed (kerascam.backend.require_tensorflow).
        code = 2 if isinstance(e, (UsageError, ValueError, FileNotFoundError, ImportError)) else 1
        if not isinstance(e, (UsageError, ValueError, TrainingError, OSError, ImportError)):
            message = f"{type(e).__name__}: {e}"
        else:
            message = str(e)
        line = first_line(e, message)
        print(f"{prog}: error: {line} (--debug shows the traceback)" if code == 1 else f"{prog}: error: {line}", file=sys.stderr)
        return code


class Flag:
    """One command-line option, declared once: its flag, argparse's settings and the config field it sets.

    Args:
        flag: The option, e.g. ``"--low-res-epochs"``.
        field: The config field it sets (``TrainConfig``, ``EvalConfig``); default: the flag's name
            with ``_`` for ``-`` (``--image-size`` -> ``image_size``). None:
            the command reads it itself (``--model``, ``--workdir``, ...).
        convert: A function from the parsed value to the field's, if they
            differ (``--max-n 0`` -> ``max_N=None``).
        **settings: ``argparse.ArgumentParser.add_argument``'s keywords
            (``type``, ``default``, ``choices``, ``metavar``, ``help``, ...).
    """

    def __init__(self, flag, field="", convert=None, **settings):
        self.flag = flag
        self.dest = flag[2:].replace("-", "_")
        self.field = self.dest if field == "" else field
        self.convert = convert
        self.settings = settings

    def value(self, args):
        """The option's value for the config: None (the preset's) when not given; a switch not set is None too."""
        value = getattr(args, self.dest)
        if self.convert is not None:
            return self.convert(value)
        return (value or None) if self.settings.get("action") == "store_true" else value


# train.py's options, in --help's order. A new option: one line here and its
# TrainConfig field.
TRAIN_FLAGS = (
    Flag("--model", None, default="unet", choices=(*MODEL_NAMES, "all"), help="model to train, or all four"),
    Flag("--preset", None, choices=tuple(configs.PRESETS),
         help="base settings (default: demo; markers with --dataset markers)"),
    Flag("--dataset", help="shapes (embedded, the demo default), markers (embedded, evidence known), "
                           "imagenet2012 or folder:PATH"),
    Flag("--data-dir", help="tensorflow-datasets data folder (ImageNet's prepared TFRecords)"),
    Flag("--manual-dir", help="folder with ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar"),
    Flag("--image-size", type=positive_int),
    Flag("--batch-size", type=positive_int, help="global batch size"),
    Flag("--epochs", type=positive_int),
    Flag("--steps-per-epoch", type=positive_int, help="cap on the steps of one epoch"),
    Flag("--learning-rate", type=positive_float,
         help="peak learning rate per --reference-batch-size images (preset: demo 1e-3 per 32, imagenet 0.1 per 256)"),
    Flag("--reference-batch-size", type=positive_int, help="the batch size --learning-rate is given for"),
    Flag("--lr-scaling", choices=configs.LR_SCALINGS,
         help="how the learning rate follows the global batch: linear (SGD, the imagenet preset), "
              "sqrt (Adam, the demo preset) or none"),
    # Resolved per model by kerascam.precision (_resolve_precision), not set as given.
    Flag("--mixed-precision", None, nargs="?", const="mixed_float16", choices=precision.REQUESTS,
         help="auto: mixed_bfloat16 where the hardware computes bfloat16 natively (GPUs of compute "
              "capability 8.0 on, CPUs with avx512_bf16 or amx_bf16), else float32; none: float32; "
              "mixed_bfloat16; mixed_float16 (GPUs, with loss scaling; also the flag without a value). "
              "Default: the preset's (paper224 auto; demo auto for vgg16 and resnet50, none for the "
              "U-Nets; imagenet and smoke none)"),
    Flag("--jit", action="store_true", help="compile the forward and backward pass with XLA"),
    Flag("--low-res-epochs", "low_resolution_epochs", type=non_negative_int, metavar="N",
         help="progressive resizing: the first N epochs train on images downscaled to --low-res-size "
              "(default 0: every epoch at --image-size)"),
    Flag("--low-res-size", "low_resolution_size", type=positive_int, metavar="S",
         help="side of the low-resolution epochs' images"),
    Flag("--unet-filters", type=positive_int, help="U-Net filters at the first level (paper: 64)"),
    Flag("--train-examples", type=positive_int, help="embedded dataset: training images"),
    Flag("--validation-examples", type=positive_int, help="embedded dataset: validation images"),
    Flag("--max-pixels", type=non_negative_int,
         help="folder: datasets: images of more pixels (width x height, read from the file's header) "
              "are skipped without being decoded (default: 89478485, Pillow's limit; 0 = no limit)"),
    Flag("--workdir", None, default="runs", help="folder of the runs (default: runs/)"),
    Flag("--strategy", choices=("auto", "default", "mirrored", "multiworker"),
         help="tf.distribute strategy (default: auto; multiworker reads TF_CONFIG)"),
    Flag("--seed", type=int),
    Flag("--weights", help="initial weights: imagenet (ResNet50/VGG16) or a .weights.h5 file"),
    Flag("--jobs", None, type=positive_int,
         help="with --model all: models trained at the same time, each in its own process "
              "(default: 2 on a machine without GPU, where one run leaves cores idle; 1 with GPUs)"),
    Flag("--checkpoint-every", type=non_negative_int, metavar="STEPS",
         help="steps between checkpoints within an epoch (0: at epoch ends only; default: about every "
              "10 minutes at the preset's expected speed)"),
    Flag("--target-accuracy", type=float, metavar="A",
         help="stop at the first validation check (every quarter epoch) at or above A, in (0, 1]"),
    Flag("--cam-summaries", type=non_negative_int, metavar="N",
         help="TensorBoard CAM overlays of the first N validation images after every epoch (default: 0)"),
    Flag("--no-saved-model", "saved_model", convert=lambda skip: False if skip else None, action="store_true",
         help="write model.keras only, no saved_model/ (its export takes 4-15 s per model on a CPU; "
              "kerascam.export.export_saved_model writes it later)"),
    Flag("--quiet", None, action="store_true", help="no progress bars"),
    Flag("--debug", None, action="store_true", help="show tracebacks"),
)


def train_parser(prog="train.py"):
    p = _Parser(prog=prog, description="Train the paper's classifiers and export them.", epilog=TRAIN_EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    for option in TRAIN_FLAGS:
        p.add_argument(option.flag, **option.settings)
    return p


TRAIN_EPILOG = """\
exit codes: 0 done; 1 failure (one line; --debug shows the traceback); 2 bad input;
  143 stopped by SIGTERM, 130 by SIGINT (Ctrl-C): the step under way finished and a checkpoint
  was written, the same command resumes at the next step; a second signal ends at once (no save).
"""


def threads_per_job(jobs):
    """TensorFlow threads for each of ``jobs`` training processes (``kerascam.training.jobs.threads_per_job``)."""
    from kerascam.training.jobs import threads_per_job

    return threads_per_job(jobs)


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
    preset_name = configs.preset_for(args.preset, args.dataset)
    preset = configs.get_preset(preset_name)
    if args.dataset:
        from kerascam.data import check_dataset_name

        check_dataset_name(args.dataset)
    flags = {option.field: option.value(args) for option in TRAIN_FLAGS if option.field}
    names = MODEL_NAMES if args.model == "all" else (args.model,)
    run_configs = [preset.for_model(name, **flags) for name in names]
    from kerascam import progressive
    from kerascam.models import check_image_size
    from kerascam.training import train
    from kerascam.training.jobs import default_jobs, train_in_parallel

    for config in run_configs:  # reject sizes a model cannot take before any training
        check_image_size(config.model, config.image_size)
        try:
            progressive.check_config(config)
        except ValueError as e:
            raise UsageError(f"{config.model}: {e} (--low-res-epochs, --low-res-size, --epochs)") from None

    from kerascam import backend

    if (args.jobs or 1) > 1 and backend.name() == "jax":
        raise UsageError(f"--jobs {args.jobs} runs on Keras' TensorFlow backend; under KERAS_BACKEND=jax "
                         "train one model at a time (--jobs 1)")
    if (args.jobs or 1) > 1 and args.strategy in ("mirrored", "multiworker"):
        raise UsageError(f"--jobs {args.jobs} trains models side by side on one device; "
                         f"with --strategy {args.strategy} train them one at a time (--jobs 1)")
    requested = {c.model: args.mixed_precision or configs.default_mixed_precision(preset_name, c.model)
                 for c in run_configs}
    run_configs, precisions = _resolve_precision(run_configs, requested, args.workdir,
                                                 preset=None if args.mixed_precision else preset_name)
    started = time.time()
    jobs = min(args.jobs or default_jobs(run_configs[0].strategy), len(run_configs))
    if jobs > 1:
        # One line per epoch and model: progress bars of two processes would mix.
        summaries = train_in_parallel(run_configs, args.workdir, jobs, verbose=0 if args.quiet else 2)
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


def evaluate_flags():
    """evaluate.py's options, in --help's order, each with the ``EvalConfig`` field it sets.

    A function: the choices of ``--cam`` and ``--scores`` come from the
    registries of ``kerascam.evaluation``, imported only when needed.
    """
    from kerascam.evaluation import EvalConfig, available_columns, available_scores

    columns = available_columns()
    # The image counts' defaults are EvalConfig's, declared once there.
    defaults = {field.name: field.default for field in dataclasses.fields(EvalConfig)}
    return (
        Flag("--cam", "methods", nargs="+", default=["all"], choices=(*columns, "all"), metavar="METHOD",
             convert=lambda cams: tuple(columns) if "all" in cams else tuple(dict.fromkeys(cams)),
             help=f"CAM methods, fused variants and model-free baselines to compare, or all (default): {', '.join(columns)}"),
        Flag("--scores", nargs="+", default=["all"], choices=(*available_scores(), "all"), metavar="SCORE",
             convert=lambda scores: None if "all" in scores else tuple(dict.fromkeys(scores)),
             help=f"scores to compute, or all (default): {', '.join(available_scores())}"),
        Flag("--models", nargs="+", metavar="MODEL",
             help="runs of --workdir to explain, each a folder with a model.keras: "
                  f"{', '.join(MODEL_NAMES)} or your own (default: all of them)"),
        Flag("--workdir", default="runs", help="folder of the trained runs (default: runs/)"),
        Flag("--num-images", type=positive_int, default=200, help="images of the split to explain (default: 200)"),
        Flag("--dataset", help="dataset (default: the one the models were trained on)"),
        Flag("--split", default="validation", help="dataset split (default: validation)"),
        Flag("--boxes", "boxes_dir", help="ImageNet: folder of the validation box XMLs, scored as ground-truth masks"),
        Flag("--max-pixels", type=non_negative_int,
             help="folder: datasets: images of more pixels (width x height) are skipped without being "
                  "decoded (default: the models' training limit; 0 = no limit)"),
        Flag("--batch-size", type=positive_int, default=25),
        Flag("--max-n", "max_N", type=int, default=16, convert=lambda n: n or None,
             help="ScoreCAM channels, the same on every model: Faster-ScoreCAM(N) (default: 16; 0 = all)"),
        Flag("--mask-threshold", type=float, default=0.5, help="threshold of the reference map (default: 0.5)"),
        Flag("--class-index", choices=("predicted", "true"), default="predicted", help="class to explain"),
        Flag("--figures", "num_figures", type=int, default=6, help="images in the overview figure (default: 6)"),
        Flag("--backend", choices=("kerascam", "tf-keras-vis"), default="kerascam",
             help="CAM implementation: the compiled engine (default) or the tf-keras-vis reference"),
        Flag("--faithfulness-images", type=positive_int, default=defaults["faithfulness_images"],
             help=f"images scored by deletion and insertion (default: {defaults['faithfulness_images']})"),
        Flag("--road-images", type=positive_int, default=defaults["road_images"],
             help=f"images scored by ROAD (default: {defaults['road_images']})"),
        Flag("--faithfulness-steps", type=positive_int, default=defaults["faithfulness_steps"],
             help=f"steps K of the deletion and insertion curves (default: {defaults['faithfulness_steps']})"),
        Flag("--tie-draws", type=positive_int, default=defaults["tie_draws"],
             help="deletion, insertion and ROAD break ties of a map at random; steps that cut a plateau are "
                  f"averaged over this many draws (default: {defaults['tie_draws']})"),
        Flag("--randomization-images", type=positive_int, default=defaults["randomization_images"],
             help=f"images scored by the randomization check (default: {defaults['randomization_images']})"),
        Flag("--grid-pointing-images", type=positive_int, default=defaults["grid_pointing_images"],
             help="images scored by the grid pointing game, each in a 2x2 mosaic with three other classes "
                  f"(default: {defaults['grid_pointing_images']})"),
        Flag("--shard", type=int, default=0, help="this run's shard, 0 .. --num-shards - 1"),
        Flag("--num-shards", type=positive_int, default=1,
             help="split the images into this many shards (run each, e.g. on its own machine)"),
        Flag("--merge", None, action="store_true", help="only build the tables from the finished shards"),
        Flag("--chunk", type=positive_int, default=10,
             help="batches per saved part of the results: the same command after a kill resumes "
                  "after the last saved part (default: 10)"),
        Flag("--quiet", None, action="store_true", help="no progress bar"),
        Flag("--debug", None, action="store_true", help="show tracebacks"),
    )


def evaluate_parser(prog="evaluate.py", flags=None):
    p = _Parser(prog=prog, description="Explain the trained models and score how well the maps localize.")
    for option in flags or evaluate_flags():
        p.add_argument(option.flag, **option.settings)
    return p


def evaluate_main(argv, prog="evaluate.py"):
    from kerascam.evaluation import EvalConfig, evaluate

    flags = evaluate_flags()
    args = evaluate_parser(prog, flags).parse_args(argv)
    from kerascam import backend

    if args.backend == "tf-keras-vis" and backend.name() != "tensorflow":
        raise UsageError(f"--backend tf-keras-vis runs on Keras' TensorFlow backend only, but KERAS_BACKEND is "
                         f"{backend.name()!r}; leave --backend out (the compiled engine gives the same maps)")
    if not 0.0 < args.mask_threshold < 1.0:
        raise UsageError(f"--mask-threshold must lie in (0, 1), got {args.mask_threshold}")
    if not 0 <= args.shard < args.num_shards:
        raise UsageError(f"--shard must lie in 0..{args.num_shards - 1} for --num-shards {args.num_shards}, got {args.shard}")
    if args.max_n < 0:
        raise UsageError(f"--max-n must be 0 (all channels) or positive, got {args.max_n}")
    if args.dataset:
        from kerascam.data import check_dataset_name

        check_dataset_name(args.dataset)  # before any model is loaded
    if not os.path.isdir(args.workdir):
        raise UsageError(f"--workdir {args.workdir!r} does not exist; train first: python train.py --model all")
    check_writable(os.path.join(args.workdir, "eval"))
    from kerascam.io import check_free_space

    # Records and their saved parts (a few hundred bytes per image, model and
    # method, twice), tables and figures.
    fields = {option.field: option.value(args) for option in flags if option.field}
    check_free_space(os.path.join(args.workdir, "eval"),
                     args.num_images * 4 * len(fields["methods"]) * 1200 + 32 * 2**20,
                     "the evaluation's records, tables and figures")
    config = EvalConfig(**fields)
    print(f"backend: Keras on {backend.name()}, CAMs by {args.backend}", flush=True)
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
    p.add_argument("--max-n", type=int, default=16,
                   help="ScoreCAM channels, the same on every model: Faster-ScoreCAM(N) (default: 16; 0 = all)")
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
    from kerascam import backend

    print(f"model: {source.description} (Keras backend: {backend.name()})", flush=True)
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
