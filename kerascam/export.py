"""Saving trained models: the ``.keras`` file and a TensorFlow SavedModel that explains itself.

The SavedModel takes raw RGB pixels (0-255) of shape (batch, H, W, 3), as
float32 or uint8, and preprocesses them itself, so a serving client sends the
image as it is. Every signature's input is named ``images`` and every output
is named:

* ``serve`` (float32; also ``serving_default``) and ``serve_uint8``: the
  ``logits`` (batch, classes) and their softmax, ``probabilities``.
* ``explain_<key>`` (float32) and ``explain_<key>_uint8`` for each exported
  CAM method, ``<key>`` being ``gradcam_plus_plus`` for "gradcam++" and the
  method's name otherwise (``gradcam``, ``layercam``, ``hirescam``); and
  ``explain`` / ``explain_uint8``, the first method's (GradCAM++ by
  default). They return, from one forward pass and a backward pass that stops
  at the CAM's target layer, ``logits``, ``probabilities``, ``class`` (int64,
  the predicted class, the one explained), ``map`` (batch, H, W): the map at
  input resolution, min-max normalised per map to [0, 1] and all zeros where
  that is undefined, as ``kerascam.cams.explain`` returns it; and
  ``native_map`` (batch, h, w): the raw map at the target layer, after the
  method's ReLU, as ``explain(..., return_native=True)`` returns it.

Nothing of kerascam is needed to use it: TensorFlow alone loads it
(``tf.saved_model.load(path).signatures["explain"](images=...)``), and so do
``saved_model_cli`` (``images.npy``: a uint8 array (N, 48, 48, 3) for the
demo models; ``show`` lists the signatures and their shapes) and TensorFlow
Serving::

    saved_model_cli show --dir runs/unet/saved_model --tag_set serve --signature_def explain_uint8
    saved_model_cli run --dir runs/unet/saved_model --tag_set serve \\
        --signature_def explain_uint8 --inputs images=images.npy

TensorFlow Serving's REST predict request (model folder as
``MODEL_BASE/1/``) names the signature; ``instances`` holds one nested
H x W x 3 list of 0-255 integers per image::

    POST http://host:8501/v1/models/kerascam:predict
    {"signature_name": "explain_uint8", "instances": [[[[0, 0, 0], ...], ...]]}

and it answers one object per image, keyed by the output names:
``{"predictions": [{"logits": [...], "probabilities": [...], "class": 2,
"map": [[...]], "native_map": [[...]]}]}``.
"""

import os

import keras

from kerascam import io

DEFAULT_METHODS = ("gradcam++", "gradcam")
SERVE_OUTPUTS = ("logits", "probabilities")
EXPLAIN_OUTPUTS = ("logits", "probabilities", "class", "map", "native_map")


def save_keras(model, path):
    """Writes ``model`` to the ``.keras`` file ``path`` atomically."""
    with io.atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def load_keras(path):
    """Loads a ``.keras`` file in Keras safe mode (no arbitrary code, no Lambda).

    Raises:
        ValueError: one line naming the file, for a missing, truncated or
            corrupted file, or one that carries code (a Lambda layer) that
            safe mode refuses to run.
    """
    import kerascam.models  # noqa: F401  (registers ImagePreprocessing)

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such model file")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as e:  # noqa: BLE001  (Keras raises many types here)
        text = str(e)
        if "lambda" in text.lower() or "safe_mode" in text:
            reason = "it carries a Lambda layer (code), which safe mode refuses to run"
        else:
            from kerascam.training.errors import first_line  # here: kerascam.training imports this module

            # An empty message stays empty: the type name is already in the line.
            reason = f"not a readable .keras file ({type(e).__name__}: {first_line(e) if text.strip() else ''})"
        raise ValueError(f"{path}: cannot load model: {reason}") from e


def saved_model_holds(model, path):
    """Whether the SavedModel folder ``path`` holds exactly ``model``'s weights.

    Compares the exported variables (read from ``path/variables``, no graph
    loaded) with ``model.get_weights()`` as multisets of arrays, bit for bit,
    so neither file times nor variable names decide.

    Returns:
        True or False; None where it cannot tell: TensorFlow is not
        installed, or ``path`` holds no readable variables.
    """
    try:
        import tensorflow as tf
    except ImportError:
        return None
    import collections
    import hashlib

    import numpy as np

    def digest(array):
        array = np.ascontiguousarray(array)
        return hashlib.sha256(f"{array.dtype}{array.shape}".encode() + array.tobytes()).hexdigest()

    try:
        reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
    except (tf.errors.OpError, ValueError):
        return None
    # Each variable is listed once under "variables/" (and again under other
    # trackable paths, which would count it twice).
    names = [n for n in reader.get_variable_to_shape_map()
             if n.startswith("variables/") and n.endswith("/.ATTRIBUTES/VARIABLE_VALUE")]
    exported = collections.Counter(digest(reader.get_tensor(n)) for n in names)
    return exported == collections.Counter(digest(w) for w in model.get_weights())


def explain_signature_name(method, *, uint8=False):
    """The name of the SavedModel signature that explains with ``method``.

    Args:
        method: a gradient method of ``kerascam.cams.METHODS``, e.g.
            "gradcam++".
        uint8: the signature that takes uint8 images instead of float32.

    Returns:
        ``"explain_<key>"`` or ``"explain_<key>_uint8"``, where ``<key>`` is
        ``method`` with "++" spelled "_plus_plus" ("gradcam++":
        ``explain_gradcam_plus_plus``).
    """
    name = "explain_" + method.replace("++", "_plus_plus")
    return name + "_uint8" if uint8 else name


def normalize_maps_in_graph(maps):
    """``kerascam.cams.normalize_maps`` in TensorFlow ops, for a graph.

    Per-map min-max normalisation to [0, 1]; a map for which it is undefined
    (some value non-finite, or all values equal: ``kerascam.metrics.map_status``
    other than "ok") becomes all zeros.

    Args:
        maps: float32 tensor (n, h, w).

    Returns:
        float32 tensor of the same shape.
    """
    import tensorflow as tf

    low = tf.reduce_min(maps, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(maps, axis=[1, 2], keepdims=True)
    finite = tf.reduce_all(tf.math.is_finite(maps), axis=[1, 2], keepdims=True)
    defined = finite & (high > low)
    # Undefined maps divide by 1 and are then replaced: no NaN is ever made.
    span = tf.where(defined, high - low, tf.ones_like(high))
    low = tf.where(defined, low, tf.zeros_like(low))
    return tf.where(defined, (maps - low) / span, tf.zeros_like(maps))


def _check_methods(methods):
    """``methods`` as a tuple of distinct gradient-method names."""
    from kerascam.cams import METHODS, GradientCAM

    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    for method in methods:
        if method not in METHODS:
            raise ValueError(
                f"Unknown CAM method {method!r} to export. Valid methods: "
                f"{[m for m, cls in METHODS.items() if issubclass(cls, GradientCAM)]}"
            )
        if not issubclass(METHODS[method], GradientCAM):
            raise ValueError(
                f"{method} cannot be exported: only the gradient methods run in one forward and one "
                f"backward pass. Received: methods={list(methods)}"
            )
    repeated = sorted({m for m in methods if methods.count(m) > 1})
    if repeated:
        raise ValueError(
            f"methods lists {', '.join(map(repr, repeated))} more than once. Received: methods={list(methods)}"
        )
    return methods


def _serve_outputs(logits):
    import tensorflow as tf

    logits = tf.cast(logits, tf.float32)
    return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}


def _explain_function(engine):
    """The float32 explain signature's function for one engine (one method)."""

    def explain(images):
        explained = engine.explain_tensors(images)
        outputs = _serve_outputs(explained["logits"])
        outputs["class"] = explained["classes"]
        outputs["map"] = normalize_maps_in_graph(explained["resized"])
        outputs["native_map"] = explained["native"]
        return outputs

    return explain


def _from_uint8(function):
    """A function of uint8 images that calls the float32 ``function`` (traced once, shared)."""
    import tensorflow as tf

    return lambda images: function(tf.cast(images, tf.float32))


def _same_as(function):
    """Another signature name for the traced ``function``."""
    return lambda images: function(images)


def export_saved_model(model, path, methods=DEFAULT_METHODS, *, target_layer=None):
    """Exports ``model`` as a SavedModel folder at ``path``, atomically.

    The signatures, their inputs and outputs are described in this module's
    docstring. Each (method, dtype) signature is one graph: the float32
    explanation is traced once per method and the uint8 and ``explain``
    signatures call it. A model that ends in a softmax serves and is
    explained at its logits (``kerascam.cams.logits``); ``probabilities`` is
    then its output.

    Args:
        model: a functional Keras classifier with one input, (H, W, 3) raw
            RGB pixels, and one output, as ``kerascam.cams.explain`` takes.
        path: the SavedModel folder to write; an existing one is replaced
            only once the new one is complete.
        methods: the gradient methods (names in ``kerascam.cams.METHODS``)
            to add explain signatures for, in order: the first is also
            ``explain``. Default ("gradcam++", "gradcam"); () exports the
            serve signatures only.
        target_layer: the layer the maps are computed at; None for
            ``kerascam.models.target_layer_name(model)``. A list of layers
            exports their fused map (``kerascam.cams.explain``'s
            ``target_layer``), which ``native_map`` then holds at input
            resolution.

    Raises:
        ValueError: for an unknown or non-gradient method (ScoreCAM), a
            method listed twice, or a target layer that the model lacks or
            that is not 4-D.
    """
    from kerascam.cams import get_method
    from kerascam.cams.engine import get_engine
    from kerascam.cams.logits import logits_model

    from kerascam import backend

    tf = backend.require_tensorflow("SavedModel export")
    methods = _check_methods(methods)
    # Built (and the target layer checked) before anything is traced or written.
    cams = [get_method(method)(model, target_layer) for method in methods]
    engines = [get_engine(cam.model, cam.target_layer, cam.name) for cam in cams]
    logits_net = logits_model(model)
    height, width = model.input_shape[1:3]
    float_spec = [tf.TensorSpec((None, height, width, 3), tf.float32, name="images")]
    uint8_spec = [tf.TensorSpec((None, height, width, 3), tf.uint8, name="images")]

    archive = keras.export.ExportArchive()
    archive.track(model)
    # The first endpoint is also written as "serving_default".
    serve = archive.add_endpoint(
        name="serve", fn=lambda images: _serve_outputs(logits_net(images, training=False)), input_signature=float_spec
    )
    archive.add_endpoint(name="serve_uint8", fn=_from_uint8(serve), input_signature=uint8_spec)
    for index, (method, engine) in enumerate(zip(methods, engines)):
        explain = archive.add_endpoint(
            name=explain_signature_name(method), fn=_explain_function(engine), input_signature=float_spec
        )
        from_uint8 = _from_uint8(explain)
        archive.add_endpoint(name=explain_signature_name(method, uint8=True), fn=from_uint8, input_signature=uint8_spec)
        if index == 0:
            archive.add_endpoint(name="explain", fn=_same_as(explain), input_signature=float_spec)
            archive.add_endpoint(name="explain_uint8", fn=from_uint8, input_signature=uint8_spec)
    with io.atomic_path(path) as tmp:
        archive.write_out(tmp, verbose=False)
