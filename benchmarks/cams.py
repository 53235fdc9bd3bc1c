"""Time and peak memory of the CAM backends ("kerascam" and "tf-keras-vis").

The paper's setting (more than ten minutes on a 2-core CPU):

    python benchmarks/cams.py

A quick check of the script (a few minutes; small models, noisy ratios):

    python benchmarks/cams.py --quick
    python benchmarks/cams.py --quick --models unet --methods gradcam,layercam-fused

Every (model, backend) pair runs in its own Python process so that memory
peaks do not mix. In it: a compiled forward pass of the batch (the unit of the
ratios) and a compiled forward pass plus the full backward pass (the gradient
of the class logits with respect to the input images: every activation
gradient of the network, the most any gradient CAM could need); then every
gradient method of `kerascam.cams.METHODS` at the model's default layer, the
fused variants ("layercam-fused": LayerCAM at
`kerascam.models.fusion_layer_names(model)`, which tf-keras-vis computes with
one `Layercam` call per layer) on the batch, and ScoreCAM of its first image,
all through `kerascam.cams.explain` with explicit classes (the predicted
ones), each after untimed warm-up calls. Peak memory is the process' peak
resident set size during the timed runs (Linux: VmHWM, reset through
/proc/self/clear_refs before each case; elsewhere psutil sampled every 5 ms).
ScoreCAM is compared with the time of its N + 1 forward passes (N masked
images in chunks of --scorecam-batch-size, plus the image itself).

With --keras-backends (e.g. tensorflow,jax) the script compares instead the
kerascam engine on Keras' backends, side by side: every (model, Keras
backend) pair runs in its own process under that KERAS_BACKEND, and reports
each case over a compiled forward pass of the same backend (`tf.function`, or
`jax.jit` over the model's `stateless_call`); tf-keras-vis is not run. JAX
needs no TensorFlow installed for it:

    python benchmarks/cams.py --keras-backends tensorflow,jax --models unet \
        --image-size 96 --unet-filters 16 --methods gradcam,gradcam++,scorecam

tf-keras-vis' ScoreCAM holds all N masked images (and two more arrays of the
same size) in memory at once; when that would exceed --reference-memory-gb, or
its time --reference-time-s, it is measured with a smaller max_N, the table
says so, and its speed-up is compared per forward pass.
"""

import argparse
import contextlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # this checkout's kerascam, installed or not
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _timing.py, also when a test loads this file by path
from _timing import timed  # noqa: E402
from kerascam.specs import MODEL_NAMES, applications_first  # noqa: E402

MODELS = applications_first(MODEL_NAMES)  # keras.applications models first, then the U-Nets
FUSED = "-fused"  # suffix of a method computed at the model's fusion layers
UNITS = ("forward", "forward+backward")
QUICK = dict(image_size=64, num_classes=10, unet_filters=16, batch_size=4, repeats=1, scorecam_max_n=8)
MIB = 2**20
KERAS_BACKENDS = ("tensorflow", "jax")


def _registry():
    sys.path.insert(0, ROOT)  # this checkout's kerascam, installed or not
    from kerascam import cams  # first: it quiets TensorFlow's start-up logs

    return cams


def available_cases():
    """Every case --methods takes, from the one registry: the methods, then
    the fused variant of each gradient method."""
    cams = _registry()
    fusable = [name for name, cls in cams.METHODS.items() if cls.supports_fusion]
    return [*cams.METHODS, *(name + FUSED for name in fusable)]


def default_cases():
    """All methods, and the fused variants that the evaluation scores."""
    cams = _registry()
    return [*cams.METHODS, *(name + FUSED for name, cls in cams.METHODS.items() if cls.fused_in_experiment)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument(
        "--methods", default=None,
        help="comma-separated methods of kerascam.cams.METHODS and fused variants (e.g. layercam-fused); "
        "default: every method and the fused variants the evaluation scores",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="check the script in a few minutes: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items())
        + " unless given",
    )
    parser.add_argument("--image-size", type=int, default=None, help="default 224")
    parser.add_argument("--num-classes", type=int, default=None, help="default 1000")
    parser.add_argument("--unet-filters", type=int, default=None, help="default 64")
    parser.add_argument("--batch-size", type=int, default=None, help="images per gradient-method call; default 8")
    parser.add_argument("--scorecam-batch-size", type=int, default=32, help="masked images per forward pass")
    parser.add_argument("--scorecam-max-n", type=int, default=None, help="Faster-ScoreCAM's N; default all")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of each case; default 3")
    parser.add_argument("--reference-memory-gb", type=float, default=4.0)
    parser.add_argument("--reference-time-s", type=float, default=300.0)
    parser.add_argument(
        "--mixed-precision", nargs="?", const="mixed_float16", choices=("mixed_float16", "mixed_bfloat16"),
        help="build the models under this Keras dtype policy (for GPUs; default policy: float32)",
    )
    parser.add_argument(
        "--keras-backends", default=None,
        help="comma-separated Keras backends (tensorflow, jax): time the kerascam engine on each, side by side, "
        "instead of comparing it with tf-keras-vis",
    )
    parser.add_argument("--json", help="also write the raw measurements to this file")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "BACKEND"), help=argparse.SUPPRESS)
    parser.add_argument("--keras-worker", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--worker-max-n", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = dict(image_size=224, num_classes=1000, unet_filters=64, batch_size=8, repeats=3)
    for key, value in (QUICK if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    valid = available_cases()
    args.methods = default_cases() if args.methods is None else [m.strip().lower() for m in args.methods.split(",")]
    unknown = [m for m in args.methods if m not in valid]
    if unknown or not args.methods:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(valid)}")
    if args.keras_backends is not None:
        args.keras_backends = [b.strip() for b in args.keras_backends.split(",") if b.strip()]
        unsupported = sorted(set(args.keras_backends) - set(KERAS_BACKENDS))
        if unsupported or not args.keras_backends:
            parser.error(f"unknown Keras backends {unsupported}; choose from {', '.join(KERAS_BACKENDS)}")
    return args


# ----------------------------------------------------------------- memory


class PeakMemory:
    """Peak resident set size of this process during a `measure()` block, in bytes."""

    def __init__(self):
        self.peak = None
        self.before = None

    @staticmethod
    def _status(field):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(f"no {field} in /proc/self/status")

    @staticmethod
    def _reset_high_water_mark():
        """Linux: resets VmHWM to the current RSS; False where that is impossible."""
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
            return True
        except OSError:
            return False

    @contextlib.contextmanager
    def measure(self):
        if self._reset_high_water_mark():
            self.before = self._status("VmRSS")
            yield self
            self.peak = self._status("VmHWM")
            return
        import psutil

        process = psutil.Process()
        self.before = process.memory_info().rss
        peak = [self.before]
        done = threading.Event()

        def sample():
            while not done.wait(0.005):
                peak[0] = max(peak[0], process.memory_info().rss)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            done.set()
            thread.join()
            self.peak = max(peak[0], process.memory_info().rss)


# ----------------------------------------------------------------- worker


def _call(function):
    """Wall and CPU seconds of one call, and the peak memory during it."""
    memory = PeakMemory()
    with memory.measure():
        wall, cpu = timed(function)
    peak, rise = memory.peak / MIB, (memory.peak - memory.before) / MIB
    return dict(seconds=wall, cpu_seconds=cpu, peak_mib=peak, rise_mib=rise)


def _summary(samples):
    """Median times and largest memory of several calls of one case."""
    return dict(
        seconds=statistics.median(s["seconds"] for s in samples),
        cpu_seconds=statistics.median(s["cpu_seconds"] for s in samples),
        peak_mib=max(s["peak_mib"] for s in samples),
        rise_mib=max(s["rise_mib"] for s in samples),
    )


def _interleaved(functions, repeats, warm_up=2):
    """Calls the functions in turn, `repeats` rounds, after `warm_up` rounds.

    A slow spell of the shared machine then slows every case alike, and the
    ratios between them hold.
    """
    for _ in range(warm_up):
        for function in functions.values():
            function()
    samples = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            samples[name].append(_call(function))
    return samples


def run_worker(args):
    """Measures one (model, backend) pair; prints one JSON line."""
    cams = _registry()
    from kerascam.models import build_model, fusion_layer_names
    from kerascam.training import dtype_policy

    import keras
    import numpy as np
    import tensorflow as tf

    name, backend = args.worker
    keras.utils.set_random_seed(0)
    with dtype_policy(args.mixed_precision):
        model = build_model(name, args.image_size, args.num_classes, unet_filters=args.unet_filters)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.batch_size, args.image_size, args.image_size, 3)).astype(np.float32)
    spec = tf.TensorSpec((None, args.image_size, args.image_size, 3), tf.float32)
    forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    classes = np.argmax(forward(images).numpy(), axis=-1)
    batch, batch_classes = tf.constant(images), tf.constant(classes)

    @tf.function(input_signature=[spec, tf.TensorSpec((None,), tf.int64)])
    def forward_backward(x, chosen):
        # The full backward pass: the class logits differentiated down to the input.
        class_logits = tf.gather(model(x, training=False), chosen, batch_dims=1)
        return tf.gradients(tf.reduce_sum(tf.cast(class_logits, tf.float32)), x)[0]

    def runs(method):
        """A case's method exists with this backend (tf-keras-vis has no hirescam)."""
        return backend == "kerascam" or cams.METHODS[method].reference is not None

    fusion_layers = fusion_layer_names(model)

    def explainer(case):
        method, fused = (case[: -len(FUSED)], True) if case.endswith(FUSED) else (case, False)
        options = dict(target_layer=fusion_layers) if fused else {}
        return lambda: cams.explain(model, images, method, classes, backend=backend, **options)

    cases = {
        "forward": lambda: forward(batch).numpy(),
        "forward+backward": lambda: forward_backward(batch, batch_classes).numpy(),
    }
    measured = [c for c in args.methods if c != "scorecam" and runs(c.removesuffix(FUSED))]
    cases.update((case, explainer(case)) for case in measured)
    devices = [d.device_type for d in tf.config.list_logical_devices() if d.device_type != "CPU"]
    result = dict(model=name, backend=backend, devices=devices or ["CPU"], cases=measured, fusion_layers=fusion_layers)
    result.update((case, _summary(samples)) for case, samples in _interleaved(cases, args.repeats).items())
    if "scorecam" in args.methods:
        result["scorecam"] = _measure_scorecam(args, cams, model, images, classes, forward, backend)
        result["cases"].append("scorecam")
    print(json.dumps(result))


def _measure_scorecam(args, cams, model, images, classes, forward, backend, prepare=None):
    """ScoreCAM of the first image, and its unit: its N masked images, in the
    same chunks, plus the image, as compiled forward passes timed just before
    and just after its run. `prepare` puts an array on the backend's device
    (default: `tf.constant`)."""
    import numpy as np

    if prepare is None:
        import tensorflow as tf

        prepare = tf.constant
    channels = cams.get_method("scorecam")(model).channels
    n = min(args.worker_max_n or args.scorecam_max_n or channels, channels)
    full_chunks, remainder = divmod(n, args.scorecam_batch_size)
    sizes = ((args.scorecam_batch_size, full_chunks), (remainder, 1), (1, 1))
    counts = {size: count for size, count in sizes if size and count}
    chunks = {size: prepare(np.resize(images, (size, *images.shape[1:]))) for size in counts}
    passes = {size: (lambda chunk=chunk: np.asarray(forward(chunk))) for size, chunk in chunks.items()}

    def scorecam(max_N):
        options = dict(max_N=max_N, batch_size=args.scorecam_batch_size, backend=backend)
        return cams.explain(model, images[:1], "scorecam", classes[:1], **options)

    # Warm-up with one chunk of channels: the same compiled graphs in a fraction of
    # the time (TensorFlow's take any chunk size; JAX traces one per chunk size).
    scorecam(min(n, args.scorecam_batch_size))
    before = _interleaved(passes, args.repeats)
    record = _call(lambda: scorecam(n))
    after = _interleaved(passes, args.repeats, warm_up=0)
    pass_times = {size: _summary(before[size] + after[size]) for size in counts}
    record.update(
        n=n,
        channels=channels,
        reduced=n < min(args.scorecam_max_n or channels, channels),
        passes_seconds=sum(counts[size] * pass_times[size]["seconds"] for size in counts),
        passes_cpu_seconds=sum(counts[size] * pass_times[size]["cpu_seconds"] for size in counts),
    )
    return record


def _compiled_forward(model):
    """(forward, prepare) on the Keras backend in use: the model's compiled
    inference forward pass, and the function that puts a NumPy batch on its
    device once, so that the timed calls do not copy it."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        @jax.jit
        def forward(variables, x):
            return model.stateless_call(*variables, x, training=False)[0]

        def run(x):
            variables = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
            return forward(variables, x)

        return run, jax.numpy.asarray
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
    return tf.function(lambda x: model(x, training=False), input_signature=[spec]), tf.constant


def run_keras_backend_worker(args):
    """Measures the kerascam engine on one model under this process' Keras backend; prints one JSON line."""
    cams = _registry()
    from kerascam.models import build_model, fusion_layer_names
    from kerascam.precision import dtype_policy  # not kerascam.training: it runs without TensorFlow

    import keras
    import numpy as np

    name = args.keras_worker
    keras.utils.set_random_seed(0)
    with dtype_policy(args.mixed_precision):
        model = build_model(name, args.image_size, args.num_classes, unet_filters=args.unet_filters)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.batch_size, args.image_size, args.image_size, 3)).astype(np.float32)
    forward, prepare = _compiled_forward(model)
    batch = prepare(images)
    classes = np.argmax(np.asarray(forward(batch)), axis=-1)
    fusion_layers = fusion_layer_names(model)

    def explainer(case):
        method, fused = (case[: -len(FUSED)], True) if case.endswith(FUSED) else (case, False)
        options = dict(target_layer=fusion_layers) if fused else {}
        return lambda: cams.explain(model, images, method, classes, **options)

    measured = [case for case in args.methods if case != "scorecam"]
    cases = {"forward": lambda: np.asarray(forward(batch))}
    cases.update((case, explainer(case)) for case in measured)
    result = dict(model=name, keras_backend=keras.backend.backend(), devices=_devices(), cases=measured,
                  fusion_layers=fusion_layers)
    result.update((case, _summary(samples)) for case, samples in _interleaved(cases, args.repeats).items())
    if "scorecam" in args.methods:
        result["scorecam"] = _measure_scorecam(args, cams, model, images, classes, forward, "kerascam", prepare)
        result["cases"].append("scorecam")
    print(json.dumps(result))


def _devices():
    """The accelerators the Keras backend in use computes on (["CPU"] if none)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        devices = [d.platform.upper() for d in jax.devices() if d.platform != "cpu"]
    else:
        import tensorflow as tf

        devices = [d.device_type for d in tf.config.list_logical_devices() if d.device_type != "CPU"]
    return devices or ["CPU"]


# ----------------------------------------------------------------- parent


def _run_worker(args, argv, name, backend, max_n=None):
    command = [sys.executable, os.path.abspath(__file__), *argv, "--worker", name, backend]
    if max_n is not None:
        command += ["--worker-max-n", str(max_n)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise RuntimeError(f"worker {name}/{backend} failed with exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _reference_estimate(args, ours):
    """Estimated memory (GiB) and time (s) of tf-keras-vis' ScoreCAM at the
    requested N, and the N to run it with: all of them, or the largest power
    of two within the limits."""
    scorecam = ours["scorecam"]
    # Float32 arrays it holds at once, per channel: the upsampled and the
    # normalised channel (H x W each), tiled copies of the image, the masks tiled
    # over the colours, the masked images and model.predict's copy of them
    # (H x W x 3 each).
    gib_per_channel = args.image_size**2 * 4 * (2 + 4 * 3) / 2**30
    seconds_per_channel = 1.5 * scorecam["seconds"] / (scorecam["n"] + 1)  # 1.5: its own overhead
    n = scorecam["n"]
    fits = min(args.reference_memory_gb / gib_per_channel, args.reference_time_s / seconds_per_channel)
    max_n = n if fits >= n else 2 ** max(0, int(fits).bit_length() - 1)
    return n * gib_per_channel, n * seconds_per_channel, max_n


def _ratios(record):
    """Wall and CPU time of each case over its unit, within one process: the
    forward pass for the batch cases (forward+backward included), the N + 1
    forward passes for scorecam."""
    ratios = {}
    for case in ("forward+backward", *record["cases"]):
        if case == "scorecam":
            scorecam = record["scorecam"]
            ratios[case] = (
                scorecam["seconds"] / scorecam["passes_seconds"],
                scorecam["cpu_seconds"] / scorecam["passes_cpu_seconds"],
            )
        else:
            ratios[case] = tuple(record[case][key] / record["forward"][key] for key in ("seconds", "cpu_seconds"))
    return ratios


def _row(cells):
    widths = (12, 16, 12, 12)  # model, case, backend, N; then 12 each
    return "  ".join(f"{cell:<{widths[i] if i < len(widths) else 12}}" for i, cell in enumerate(cells))


def _memory(measurement):
    return f"{measurement['peak_mib']:.0f} (+{measurement['rise_mib']:.0f})"


def _format_table(results, args):
    header = ("model", "case", "backend", "N", "time (s)", "x unit", "x unit CPU")
    header += ("speed-up", "(CPU)", "peak RSS MiB")
    lines = [_row(header)]
    for name in args.models:
        ours, reference = results[name]["kerascam"], results[name]["tf-keras-vis"]
        ratios = {"kerascam": _ratios(ours), "tf-keras-vis": _ratios(reference)}
        for unit in UNITS:
            wall, cpu = ratios["kerascam"][unit] if unit != "forward" else (1.0, 1.0)
            cells = (name, unit, "compiled", f"b={args.batch_size}", f"{ours[unit]['seconds']:.3f}")
            lines.append(_row((*cells, f"{wall:.2f}", f"{cpu:.2f}", "", "", _memory(ours[unit]))))
        for case in ours["cases"]:
            has_reference = case in reference["cases"]
            if has_reference:
                speedups = [ratios["tf-keras-vis"][case][i] / ratios["kerascam"][case][i] for i in (0, 1)]
            for record in (ours, reference) if has_reference else (ours,):
                backend = record["backend"]
                wall, cpu = ratios[backend][case]
                n = f"b={args.batch_size}"
                if case == "scorecam":
                    reduced = "*" if record[case]["reduced"] else ""
                    n = f"{record[case]['n']}{reduced}/{record[case]['channels']}"
                elif case.endswith(FUSED):
                    n = f"b={args.batch_size},{len(record['fusion_layers'])}L"
                if not has_reference:
                    shown = ("(kerascam", "only)")
                elif backend == "kerascam":
                    shown = tuple(f"{x:.1f}x" for x in speedups)
                else:
                    shown = ("", "")
                cells = (name, case, backend, n, f"{record[case]['seconds']:.3f}", f"{wall:.2f}", f"{cpu:.2f}")
                lines.append(_row((*cells, *shown, _memory(record[case]))))
    return "\n".join(lines)


def _verdict(wall_ok, cpu_ok):
    return f"{'PASS' if wall_ok else 'FAIL'}/{'PASS' if cpu_ok else 'FAIL'}"


def _targets(results, args):
    """PASS/FAIL lines for the engine's targets, in wall-clock / CPU time."""
    lines = ["targets, judged in wall-clock / CPU time:"]
    for name in args.models:
        ours, reference = results[name]["kerascam"], results[name]["tf-keras-vis"]
        ratios, reference_ratios = _ratios(ours), _ratios(reference)
        both = ratios["forward+backward"]
        for case in ours["cases"]:
            if case == "scorecam":
                continue
            wall, cpu = ratios[case]
            speedups = None
            if case in reference["cases"]:
                speedups = (reference_ratios[case][0] / wall, reference_ratios[case][1] / cpu)
            fast = (True, True) if speedups is None else (speedups[0] >= 3.0, speedups[1] >= 3.0)
            compared = ""
            if speedups is not None:
                compared = f", {speedups[0]:.1f}x / {speedups[1]:.1f}x faster than tf-keras-vis (>= 3)"
            if case.endswith(FUSED):
                # One forward and one backward pass however many layers: at most
                # what the full backward costs, and within 3 forward passes.
                verdict = _verdict(wall <= min(3.0, both[0]) and fast[0], cpu <= min(3.0, both[1]) and fast[1])
                lines.append(
                    f"{verdict}  {name} {case} ({len(ours['fusion_layers'])} layers): {wall:.2f}x / {cpu:.2f}x "
                    f"a forward pass (<= forward+backward, {both[0]:.2f}x / {both[1]:.2f}x, and <= 3){compared}"
                )
            else:
                verdict = _verdict(wall <= 1.2 and fast[0], cpu <= 1.2 and fast[1])
                lines.append(f"{verdict}  {name} {case}: {wall:.2f}x / {cpu:.2f}x a forward pass (<= 1.2){compared}")
        if "scorecam" not in ours["cases"]:
            continue
        (wall, cpu), case = ratios["scorecam"], ours["scorecam"]
        lines.append(
            f"{_verdict(wall <= 1.15, cpu <= 1.15)}  {name} scorecam (N={case['n']}): "
            f"{wall:.2f}x / {cpu:.2f}x its N+1 forward passes (<= 1.15)"
        )
        if name == "resnet50" and case["n"] == case["channels"]:
            verdict = "PASS" if case["peak_mib"] < 2048 else "FAIL"
            lines.append(
                f"{verdict}       resnet50 scorecam, all {case['channels']} channels: "
                f"peak RSS {case['peak_mib']:.0f} MiB (< 2048)"
            )
    return "\n".join(lines)


def _run_keras_backend_worker(argv, name, keras_backend):
    command = [sys.executable, os.path.abspath(__file__), *argv, "--keras-worker", name]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": keras_backend})
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise RuntimeError(f"worker {name} on Keras' {keras_backend} backend failed with exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _format_keras_backends(results, args):
    """One row per (model, case, Keras backend): time, and time over the unit of the same backend."""
    lines = [_row(("model", "case", "keras", "N", "time (s)", "x unit", "x unit CPU", "peak RSS MiB"))]
    for name in args.models:
        for case in ("forward", *results[name][args.keras_backends[0]]["cases"]):
            for keras_backend in args.keras_backends:
                record = results[name][keras_backend]
                if case == "forward":
                    wall = cpu = 1.0
                elif case == "scorecam":
                    wall, cpu = (record[case][key] / record[case][f"passes_{key}"] for key in ("seconds", "cpu_seconds"))
                else:
                    wall, cpu = (record[case][key] / record["forward"][key] for key in ("seconds", "cpu_seconds"))
                n = f"b={args.batch_size}"
                if case == "scorecam":
                    n = f"{record[case]['n']}/{record[case]['channels']}"
                elif case.endswith(FUSED):
                    n = f"b={args.batch_size},{len(record['fusion_layers'])}L"
                cells = (name, case, keras_backend, n, f"{record[case]['seconds']:.3f}", f"{wall:.2f}", f"{cpu:.2f}")
                lines.append(_row((*cells, _memory(record[case]))))
    return "\n".join(lines)


def main_keras_backends(args, argv):
    """The kerascam engine on each Keras backend of --keras-backends, side by side."""
    results = {}
    started = time.perf_counter()
    for name in args.models:
        results[name] = {}
        for keras_backend in args.keras_backends:
            results[name][keras_backend] = _run_keras_backend_worker(argv, name, keras_backend)
            devices = ", ".join(results[name][keras_backend]["devices"])
            print(f"... {name} on {keras_backend} ({devices}) ({time.perf_counter() - started:.0f} s)", flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)
    print()
    print(_format_keras_backends(results, args))
    print(
        "x unit: time over the compiled forward pass of the batch on the same Keras backend (gradient\n"
        "  methods), or over the N+1 forward passes in chunks (scorecam), in wall-clock and CPU time.\n"
        "peak RSS: the process' peak resident memory during the case (+ its rise during the case)."
    )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    if args.keras_worker:
        run_keras_backend_worker(args)
        return
    print("$ python benchmarks/cams.py " + " ".join(shlex.quote(a) for a in argv), flush=True)
    print(
        f"image {args.image_size}x{args.image_size}, {args.num_classes} classes, random weights, "
        f"U-Net filters {args.unet_filters}, gradient methods on a batch of {args.batch_size}, "
        f"ScoreCAM on one image in chunks of {args.scorecam_batch_size}, {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}, "
        f"dtype policy {args.mixed_precision or 'float32'}, methods {','.join(args.methods)}",
        flush=True,
    )
    if args.keras_backends:
        main_keras_backends(args, argv)
        return
    results, notes = {}, []
    started = time.perf_counter()
    for name in args.models:
        ours = _run_worker(args, argv, name, "kerascam")
        max_n = None
        if "scorecam" in ours:
            gib, seconds, max_n = _reference_estimate(args, ours)
        if max_n is not None and max_n < ours["scorecam"]["n"]:
            notes.append(
                f"* {name}: tf-keras-vis' ScoreCAM with N={ours['scorecam']['n']} would need about "
                f"{gib:.1f} GiB and {seconds:.0f} s here (limits {args.reference_memory_gb:g} GB, "
                f"{args.reference_time_s:g} s), so it ran with max_N={max_n}; speed-up per masked image."
            )
        reference = _run_worker(args, argv, name, "tf-keras-vis", max_n)
        results[name] = {"kerascam": ours, "tf-keras-vis": reference}
        devices = ", ".join(sorted(set(ours.get("devices", ["CPU"]))))
        print(f"... {name} measured on {devices} ({time.perf_counter() - started:.0f} s)", flush=True)
    print()
    print(_format_table(results, args))
    print("\n".join(notes))
    print(
        "x unit: time over the compiled forward pass of the batch (gradient methods, fused or not, and\n"
        "  forward+backward: the gradient of the class logits down to the input) or over the N+1\n"
        "  forward passes in chunks (scorecam), both measured in the same process, in wall-clock and in\n"
        "  CPU time (the machine is shared: CPU time is what other processes disturb least).\n"
        "N: b=batch size (xL: fused over x layers, tf-keras-vis one Layercam call per layer).\n"
        "speed-up: tf-keras-vis' 'x unit' over kerascam's (each backend runs in its own process).\n"
        "peak RSS: the process' peak resident memory during the case (+ its rise during the case)."
    )
    print()
    print(_targets(results, args))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)


if __name__ == "__main__":
    main()
