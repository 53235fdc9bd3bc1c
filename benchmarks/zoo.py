"""The keras.applications zoo explained the three ways people build a classifier from it.

    nice python benchmarks/zoo.py --out benchmarks/results/zoo-2cpu          # every application
    python benchmarks/zoo.py --models ResNet50,MobileNetV2 --size 96 --out benchmarks/results/zoo-96-2cpu

The second line is the issue's independent check at a layer of 3x3 cells
(at the smallest input most applications' last layer is 1x1, a map that
min-max normalisation cannot define).

Every model that ``keras.applications`` ships (``weights=None``, at the
smallest input it accepts, ``include_top=False``) is given a fresh dense head
in three patterns (issue #27), the base object shared by the three:

* ``plain``: the application's own graph with the head on its output,
  ``Model(base.input, Dense(n, "softmax")(GlobalAveragePooling2D()(base.output)))``:
  one flat graph.
* ``guide``: Keras' transfer-learning guide, the base nested after its
  family's ``preprocess_input`` (raw ops in the graph: a channel flip and a
  mean subtraction for ResNet50 and VGG, a division for Xception, nothing for
  EfficientNet and ConvNeXt, which preprocess inside the base):
  ``x = preprocess_input(inputs); x = base(x, training=False);
  x = GlobalAveragePooling2D()(x); outputs = Dense(n)(x)``, logits out.
* ``sequential``: ``Sequential([Input, Rescaling(1 / 255), base,
  GlobalAveragePooling2D(), Dense(n, activation="softmax")])``.

Each model is explained with GradCAM, GradCAM++ and LayerCAM at its default
target layer (`kerascam.models.target_layer_name`) by `kerascam.cams.explain`,
and each raw map is checked against an independent computation
(`tape_reference`): the model run eagerly under a `tf.GradientTape`, the
target layer's output caught and watched by a hook on that layer's ``call``
(as pytorch-grad-cam's hooks do), so that no graph of kerascam's is involved.
A case is "ok" when the maps agree to ``TOLERANCE`` relative to the
reference map's peak; otherwise its reason is the error's first line or the
mismatch. It prints a table of model x pattern x method and the count, and
writes the records as JSON (atomically, after every model, so a long run
that is stopped keeps what it measured).
"""

import argparse
import gc
import re
import sys
import time

import numpy as np

METHODS = ("gradcam", "gradcam++", "layercam")
PATTERNS = ("plain", "guide", "sequential")
TOLERANCE = 1e-5  # of the reference map's peak
NUM_CLASSES = 3
NUM_IMAGES = 2
_MINIMUM_SIZE = re.compile(r"(?:at least|no smaller than)\D*(\d+)")


def applications():
    """{name: constructor} of every model keras.applications ships, by name."""
    import keras

    return {name: f for name, f in sorted(vars(keras.applications).items()) if name[:1].isupper() and callable(f)}


def preprocess_input_of(constructor):
    """The ``preprocess_input`` of the family `constructor` belongs to."""
    return sys.modules[constructor.__module__].preprocess_input


def build_base(constructor, size=32):
    """``constructor(include_top=False, weights=None)`` at the smallest square input it accepts.

    Starts at `size` and, when the constructor refuses it, retries at the
    minimum its error message states.

    Returns:
        (base, size).
    """
    while True:
        try:
            return constructor(include_top=False, weights=None, input_shape=(size, size, 3)), size
        except ValueError as e:
            found = _MINIMUM_SIZE.search(str(e))
            if not found or int(found.group(1)) <= size:
                raise
            size = int(found.group(1))


def build_patterns(base, preprocess_input, num_classes=NUM_CLASSES):
    """{pattern: classifier} of `base` in the three patterns of the module docstring."""
    import keras

    shape = tuple(base.inputs[0].shape[1:])
    plain_features = keras.layers.GlobalAveragePooling2D(name="head_pool")(base.output)
    plain = keras.Model(
        base.input, keras.layers.Dense(num_classes, activation="softmax", name="head")(plain_features), name="plain"
    )

    inputs = keras.Input(shape)
    x = preprocess_input(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    guide = keras.Model(inputs, keras.layers.Dense(num_classes, name="head")(x), name="guide")

    sequential = keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Rescaling(1 / 255, name="rescaling"),
            base,
            keras.layers.GlobalAveragePooling2D(name="head_pool"),
            keras.layers.Dense(num_classes, activation="softmax", name="head"),
        ],
        name="sequential",
    )
    return {"plain": plain, "guide": guide, "sequential": sequential}


def _layer_at(model, path):
    """The layer a "/"-joined path names, one `get_layer` per level."""
    layer = model
    for name in path.split("/"):
        layer = layer.get_layer(name)
    return layer


def tape_reference(model, target_path, images, classes, term_scales=None):
    """GradCAM, GradCAM++ and LayerCAM raw maps computed without kerascam's graphs.

    The model runs eagerly under one `tf.GradientTape`; a hook on the target
    layer's ``call`` watches its output A, and a hook on the head (a Dense
    layer, the model's last) catches its input, from which the logits are
    computed with the head's kernel and bias (a softmax head is explained at
    its logits). With g = d y^c / d A and y^c the class logit:

    * GradCAM (Selvaraju et al., ICCV 2017): ReLU(sum_k mean_ij(g_k) A_k);
    * GradCAM++ (Chattopadhay et al., WACV 2018, eq. 19 with Y^c = exp(y^c)),
      as tf-keras-vis computes it, divided by the positive factor e^y that
      cancels in the alphas (as kerascam computes it, gradcam_plus_plus.py):
      D1 = g, D2 = D1 g, D3 = D2 g, alpha = D2 / (2 D2 + sum_ab A_ab D3)
      (0 where D2 == 0), alpha divided by its spatial sum per channel,
      w_k = sum_ij alpha ReLU(D1);
    * LayerCAM (Jiang et al., IEEE TIP 2021): ReLU(sum_k ReLU(g_k) A_k).

    The weights are computed in float64 NumPy from the float32 A and g.

    Args:
        model: the classifier, ending in a Dense layer.
        target_path: the target layer's name, or its path in nested models.
        images: float32 (n, H, W, 3).
        classes: int (n,), the class explained per image.
        term_scales: a dict to fill with {method: max over pixels of
            sum_k |W_k A_k|}, the size of the terms each map sums; None to
            skip.

    Returns:
        {method: float64 (n, h, w)}.
    """
    import tensorflow as tf

    target, head = _layer_at(model, target_path), model.layers[-1]
    caught = {}

    def hooked(layer, key, catch):
        original = layer.call

        def call(*args, **kwargs):
            outputs = original(*args, **kwargs)
            caught[key] = catch(args, outputs)
            return outputs

        layer.call = call

    with tf.GradientTape() as tape:

        def watch(args, outputs):
            tape.watch(outputs)
            return outputs

        hooked(target, "activations", watch)
        hooked(head, "features", lambda args, outputs: args[0])
        try:
            model(tf.constant(images), training=False)
        finally:
            del target.call, head.call  # the class' own call again
        logits = tf.matmul(caught["features"], head.kernel) + head.bias
        scores = tf.gather(logits, tf.constant(classes, tf.int64), batch_dims=1)
        # The images are independent: the gradient of the sum is each image's own.
        total = tf.reduce_sum(scores)
    gradients = tape.gradient(total, caught["activations"])
    a = np.asarray(caught["activations"], np.float64)
    g = np.asarray(gradients, np.float64)

    # Without the factor e^y, which only scales each image's map (and which
    # overflows float32 beyond |y| of about 88).
    first = g
    second, third = first * g, first * g * g
    denominator = 2 * second + third * a.sum(axis=(1, 2), keepdims=True)
    alphas = second / np.where(second == 0, 1.0, denominator)
    alpha_sums = alphas.sum(axis=(1, 2), keepdims=True)
    alphas = alphas / np.where(alpha_sums == 0, 1.0, alpha_sums)
    weights = {
        "gradcam": g.mean(axis=(1, 2), keepdims=True),
        "gradcam++": (np.maximum(first, 0) * alphas).sum(axis=(1, 2), keepdims=True),
        "layercam": np.maximum(g, 0),
    }
    maps = {method: np.maximum((w * a).sum(-1), 0) for method, w in weights.items()}
    if term_scales is not None:
        # The size of the numbers the map sums: a map that is a small residue of
        # large terms of both signs carries float32 rounding of the terms' size.
        term_scales.update({method: float(np.abs(w * a).sum(-1).max()) for method, w in weights.items()})
    return maps


def relative_error(native, reference):
    """max |native - reference| / max |reference| (0 where both are all zero)."""
    peak = np.abs(reference).max()
    error = np.abs(np.asarray(native, np.float64) - reference).max()
    if peak > 0:
        return float(error / peak)
    return 0.0 if error == 0 else float("inf")


def _reason(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:160]


def explain_patterns(models, images, classes, methods=METHODS):
    """Explains each classifier with each method at its default layer and checks it.

    Returns:
        A list of records {pattern, method, layer, ok, reason, relative_error
        (to the reference's peak), native_shape, map_status (counts of
        `kerascam.cams.map_status`), seconds}, and error_to_terms for a
        mismatch.
    """
    from kerascam import cams

    records = []
    for pattern, model in models.items():
        try:
            layer = cams.METHODS["gradcam"](model).target_layer
            scales = {}
            reference = tape_reference(model, layer, images, classes, scales)
        except Exception as e:  # noqa: BLE001  (a failure is a result here)
            records += [dict(pattern=pattern, method=m, layer=None, ok=False, reason=_reason(e)) for m in methods]
            continue
        for method in methods:
            start = time.perf_counter()
            record = dict(pattern=pattern, method=method, layer=layer)
            try:
                _, native = cams.explain(model, images, method, classes, return_native=True)
                error = relative_error(native, reference[method])
                statuses, counts = np.unique(cams.map_status(native), return_counts=True)
                record.update(native_shape=list(native.shape[1:]), relative_error=error, ok=error <= TOLERANCE,
                              map_status=dict(zip(statuses.tolist(), counts.tolist())))
                if not record["ok"]:
                    absolute = np.abs(np.asarray(native, np.float64) - reference[method]).max()
                    to_terms = absolute / scales[method] if scales[method] > 0 else float("inf")
                    record["error_to_terms"] = float(to_terms)
                    record["reason"] = (f"map differs from the tape reference by {error:.2g} of its peak "
                                        f"({to_terms:.2g} of its terms' size)")
                else:
                    record["reason"] = ""
            except Exception as e:  # noqa: BLE001
                record.update(ok=False, reason=_reason(e))
            record["seconds"] = round(time.perf_counter() - start, 2)
            records.append(record)
    return records


def run_model(name, constructor, seed=0, size=32):
    """All cases of one application: its base built once, three patterns, three methods.

    `size` is the input side tried first; an application that needs more
    gets the least it accepts.
    """
    import keras

    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    try:
        base, size = build_base(constructor, size)
        models = build_patterns(base, preprocess_input_of(constructor))
    except Exception as e:  # noqa: BLE001
        reason = _reason(e)
        return [dict(model=name, pattern=p, method=m, ok=False, reason=reason) for p in PATTERNS for m in METHODS]
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (NUM_IMAGES, size, size, 3)).astype(np.float32)
    classes = np.arange(NUM_IMAGES) % NUM_CLASSES
    records = [dict(model=name, size=size, **r) for r in explain_patterns(models, images, classes)]
    for record in records:
        record["model_seconds"] = round(time.perf_counter() - start, 1)
    return records


def table(records):
    """The text table model x pattern x method, then the count."""
    lines = [f"{'model':<20} {'pattern':<11} " + " ".join(f"{m:<10}" for m in METHODS) + " layer / reason"]
    cases = {}
    for r in records:
        cases.setdefault((r["model"], r["pattern"]), {})[r["method"]] = r
    for (model, pattern), by_method in cases.items():
        cells = [("ok" if by_method[m]["ok"] else "FAIL") if m in by_method else "-" for m in METHODS]
        reasons = sorted({r["reason"] for r in by_method.values() if not r["ok"]})
        layer = next((r.get("layer") for r in by_method.values() if r.get("layer")), "")
        tail = "; ".join(reasons) if reasons else f"{layer} {tuple(by_method[METHODS[0]].get('native_shape', ()))}"
        undefined = sum(n for r in by_method.values() for status, n in r.get("map_status", {}).items() if status != "ok")
        if undefined:
            tail += f", {undefined} of {sum(sum(r.get('map_status', {}).values()) for r in by_method.values())} maps undefined"
        lines.append(f"{model:<20} {pattern:<11} " + " ".join(f"{c:<10}" for c in cells) + " " + tail)
    ok = sum(r["ok"] for r in records)
    lines.append(f"{ok} of {len(records)} cases explained and equal to the tape reference (to {TOLERANCE:g} of the peak)")
    undefined = sum(any(s != "ok" for s in r.get("map_status", {})) for r in records if r["ok"])
    lines.append(f"{undefined} of those {ok} have a map that cannot be min-max normalised (constant: a 1x1 target "
                 "layer at the smallest input, or zero), which explain returns as zeros")
    return "\n".join(lines)


def main(argv=None):
    import kerascam  # noqa: F401  (quiets TensorFlow)
    from kerascam.io import write_json, write_text

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="all", help="comma-separated application names, or all")
    parser.add_argument("--out", default=None, help="writes OUT.json and OUT.txt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=32,
                        help="input side (default 32: the smallest most applications accept; larger where one needs it)")
    args = parser.parse_args(argv)
    known = applications()
    names = list(known) if args.models == "all" else [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"--models: unknown {unknown}; known: {', '.join(known)}")
    records = []
    for name in names:
        start = time.perf_counter()
        records += run_model(name, known[name], args.seed, args.size)
        mine = [r for r in records if r["model"] == name]
        print(f"{name}: {sum(r['ok'] for r in mine)}/{len(mine)} ok in {time.perf_counter() - start:.0f} s", flush=True)
        if args.out:
            write_json(args.out + ".json", dict(tolerance=TOLERANCE, size=args.size, models=names, records=records))
            write_text(args.out + ".txt", table(records) + "\n")
        import keras

        keras.backend.clear_session()
        gc.collect()
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
