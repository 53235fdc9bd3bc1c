"""Explaining anyone's images with anyone's classifier: ``kerascam explain``.

Three steps, each usable from Python:

* `load_model(spec)` finds the classifier a name stands for, in this order:
  a ``.keras`` file (loaded in Keras safe mode); a SavedModel folder exported
  by kerascam with its explain signatures; a run of the workdir
  (``WORKDIR/NAME/model.keras`` and the class names of its ``run.json``); a
  keras.applications constructor (``resnet50``, ``mobilenetv2``, ...,
  case-insensitive; ``keras.applications:NAME`` forces it when a run has the
  same name), whose ``preprocess_input`` is applied to the pixels before the
  model (outside it, so the model stays one flat graph, which the CAM
  gradients need).
* `find_images(patterns)` expands files, folders and globs.
* `explain_files(source, paths, ...)` reads each image at its own size,
  resizes it to the model's input when that is fixed (bilinear) or feeds it
  as it is, computes the maps and writes, per image, method and class, an
  overlay PNG at the image's resolution with a colour bar, the map as
  ``.npy`` (float32, the image's resolution) and as a 16-bit PNG, and one
  JSON line in ``OUT/explanations.jsonl``.

The map at the image's resolution is the layer's native map resized
bilinearly (half-pixel centres, `kerascam.cams.resize_maps`) to the image's
own height and width, then min-max normalised: the same convention as the maps
at the model's input size, one resize instead of two.
"""

import dataclasses
import glob
import importlib
import json
import os

import numpy as np

from kerascam import io

from kerascam.data.images import IMAGE_EXTENSIONS, MAX_PIXELS, ImageError, read_image

DEFAULT_METHOD = "gradcam++"
DEFAULT_COLORMAP = "viridis"  # perceptually uniform; jet stays available
DEFAULT_OUT = "explanations"
RECORDS_FILE = "explanations.jsonl"
APPLICATION_PREFIX = "keras.applications:"
_GLOB_CHARACTERS = "*?["


@dataclasses.dataclass
class ModelSource:
    """A classifier to explain, as `load_model` found it.

    Attributes:
        kind: "keras-file", "saved-model", "run" or "application".
        name: the model's short name, recorded with every map.
        description: one line saying which model this is and where it came from.
        model: the Keras model (for a SavedModel: the loaded object).
        class_names: names indexed by class, or None (the index is shown).
        preprocess: applied to float32 pixels (N, H, W, 3) in 0-255 before the
            model (keras.applications' ``preprocess_input``); None when the
            model takes raw pixels.
        input_size: the model's fixed (H, W), or None when it takes any size.
        signatures: SavedModel only: {method: signature}.
    """

    kind: str
    name: str
    description: str
    model: object
    class_names: list = None
    preprocess: object = None
    input_size: tuple = None
    signatures: dict = dataclasses.field(default_factory=dict)

    @property
    def methods(self):
        """The methods this model can be explained with."""
        from kerascam.cams import available_methods

        return list(self.signatures) if self.kind == "saved-model" else available_methods()

    def class_name(self, index):
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return str(self.class_names[index])
        return str(int(index))

    def inputs(self, pixels):
        """float32 model inputs from float32 pixels in 0-255."""
        pixels = np.asarray(pixels, dtype=np.float32)
        return pixels if self.preprocess is None else np.asarray(self.preprocess(pixels.copy()), np.float32)

    def probabilities(self, pixels, batch_size=None):
        """Class probabilities (N, classes): the softmax of the logits (a softmax head is read at its logits)."""
        import keras

        from kerascam.cams.logits import logits_model

        if self.kind == "saved-model":
            signature = next(iter(self.signatures.values()))
            return np.asarray(signature(images=_tensor(pixels))["probabilities"], np.float32)
        from kerascam.cams.base import _quiet_model_calls

        network, inputs, step = logits_model(self.model), self.inputs(pixels), batch_size or 32
        with _quiet_model_calls():  # Keras' warning about a single input given as a tensor, not a list
            logits = np.concatenate([np.asarray(network(inputs[i:i + step], training=False), np.float32)
                                     for i in range(0, len(inputs), step)])
        return np.asarray(keras.ops.softmax(logits, axis=-1))


def _tensor(pixels):
    import tensorflow as tf

    return tf.constant(np.asarray(pixels, np.float32))


# --- finding the model -----------------------------------------------------------------------------


def application_constructors():
    """{lower-case name: constructor} of every keras.applications model ("resnet50": ResNet50, ...)."""
    import inspect

    import keras

    found = {}
    for attribute in dir(keras.applications):
        value = getattr(keras.applications, attribute)
        if attribute[:1].isupper() and callable(value) and not inspect.ismodule(value):
            found[attribute.lower()] = value
    return found


def _imagenet_class_names():
    """The 1000 ImageNet class names if Keras has cached them (never downloads), else None."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    for folder in (home, os.path.join("/tmp", ".keras")):
        path = os.path.join(folder, "models", "imagenet_class_index.json")
        if os.path.isfile(path):
            try:
                index = io.read_json(path)
                return [index[str(i)][1] for i in range(1000)]
            except (OSError, ValueError, KeyError, IndexError):
                return None
    return None


def load_application(name, weights="imagenet", image_size=None):
    """A keras.applications classifier with its preprocessing, as a `ModelSource`.

    Args:
        name: the constructor's name, any case ("resnet50", "MobileNetV2").
        weights: "imagenet" (keras.applications downloads them once into
            ~/.keras), the path of a weights file of the same architecture,
            or None for random weights.
        image_size: side of a square input; None for the architecture's
            default (224 for most, 299 for InceptionV3 and Xception).

    Raises:
        ValueError: in one line, for an unknown name (listing the known
            ones), a missing weights file, or ImageNet weights that cannot be
            downloaded.
    """
    constructors = application_constructors()
    key = name.lower()
    if key not in constructors:
        raise ValueError(f"no keras.applications model named {name!r}; known: {', '.join(sorted(constructors))}")
    constructor = constructors[key]
    if weights not in (None, "imagenet") and not os.path.isfile(weights):
        raise ValueError(f"--weights {weights!r}: no such file (expected imagenet, none or a weights file)")
    from kerascam.training.errors import first_line  # here: kerascam.training is heavy to import

    kwargs = {"input_shape": (image_size, image_size, 3)} if image_size else {}
    try:
        model = constructor(weights=None if weights != "imagenet" else "imagenet", **kwargs)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001  (keras.utils.get_file raises a bare Exception when offline)
        if weights == "imagenet":
            raise ValueError(
                f"could not download the ImageNet weights of {constructor.__name__} ({first_line(e)[:120]}); "
                f"without network, pass a weights file: --weights FILE.weights.h5 (or --weights none for random weights)"
            ) from e
        raise
    if weights not in (None, "imagenet"):
        try:
            model.load_weights(weights)
        except Exception as e:  # noqa: BLE001  (h5py and Keras raise many types)
            raise ValueError(f"--weights {weights!r}: cannot load them into {constructor.__name__}: "
                             f"{first_line(e)}") from e
    family = importlib.import_module(constructor.__module__)
    outputs = model.output_shape[-1]
    class_names = _imagenet_class_names() if outputs == 1000 and weights is not None else None
    shown = {None: "random weights", "imagenet": "ImageNet weights"}.get(weights, f"weights {weights}")
    return ModelSource(
        kind="application",
        name=key,
        description=f"keras.applications {constructor.__name__} ({shown}, input {_size_text(model)})",
        model=model,
        class_names=class_names,
        preprocess=family.preprocess_input,
        input_size=_fixed_size(model),
    )


def _fixed_size(model):
    height, width = model.input_shape[1:3]
    return (int(height), int(width)) if height and width else None


def _size_text(model):
    size = _fixed_size(model)
    return "any size" if size is None else f"{size[0]}x{size[1]}"


def _keras_source(path, kind, name, description, class_names):
    from kerascam.export import load_keras

    model = load_keras(path)
    return ModelSource(kind=kind, name=name, description=f"{description}, input {_size_text(model)}", model=model,
                       class_names=class_names, input_size=_fixed_size(model))


def _run_class_names(run_dir):
    path = os.path.join(run_dir, "run.json")
    if not os.path.isfile(path):
        return None
    try:
        return io.read_json(path).get("class_names")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None


def load_saved_model(path):
    """A SavedModel folder exported with kerascam's explain signatures, as a `ModelSource`.

    Raises:
        ValueError: one line when the folder has no ``explain_*`` signatures
            (exported without them) or cannot be loaded.
    """
    import tensorflow as tf

    from kerascam.cams import available_methods
    from kerascam.export import explain_signature_name

    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001  (TensorFlow raises many types here)
        raise ValueError(f"{path}: cannot load the SavedModel ({type(e).__name__})") from e
    signatures = {}
    for method in available_methods():
        key = explain_signature_name(method)
        if key in loaded.signatures:
            signatures[method] = loaded.signatures[key]
    if not signatures:
        raise ValueError(
            f"{path}: this SavedModel was exported without the explain signatures "
            f"(it has: {', '.join(sorted(loaded.signatures)) or 'none'}); export it again with "
            f"kerascam.export.export_saved_model, or pass the .keras file"
        )
    spec = next(iter(signatures.values())).structured_input_signature[1]["images"]
    height, width = spec.shape[1:3]
    parent = os.path.dirname(os.path.abspath(path))
    return ModelSource(
        kind="saved-model",
        name=os.path.basename(os.path.normpath(path)),
        description=f"SavedModel {path} (methods {', '.join(signatures)}, input "
                    f"{f'{height}x{width}' if height and width else 'any size'})",
        model=loaded,
        class_names=_run_class_names(parent),
        input_size=(int(height), int(width)) if height and width else None,
        signatures=signatures,
    )


def load_model(spec, *, workdir="runs", weights=None, image_size=None):
    """The classifier ``spec`` names, as a `ModelSource`.

    Looked up in this order: a ``.keras`` file; a SavedModel folder; a run
    ``WORKDIR/SPEC/model.keras`` (or a run folder given as a path); a
    keras.applications name. When a run and an application share the name,
    the run wins and the description says so; ``keras.applications:NAME``
    forces the application.

    Args:
        spec: the file, folder, run or application name.
        workdir: the folder of the runs. Default "runs".
        weights: applications only: "imagenet" (the default when None),
            "none" or a weights file.
        image_size: applications only: the input side (default: the
            architecture's own).

    Raises:
        ValueError: in one line, when nothing matches (naming the runs and
            applications that exist), for a .keras file safe mode refuses
            (a Lambda layer), a SavedModel without explain signatures, or
            --weights/--image-size given for a model that is not an application.
    """
    forced = spec.startswith(APPLICATION_PREFIX)
    name = spec[len(APPLICATION_PREFIX):] if forced else spec
    keyword = str(weights).lower()
    application_weights = {"none": None, "imagenet": "imagenet"}.get(keyword, weights) if weights else "imagenet"
    if not forced:
        source = _load_local(spec, workdir)
        if source is not None:
            if weights is not None or image_size is not None:
                raise ValueError(f"--weights and --image-size apply to keras.applications models, not to {source.description}")
            if source.kind == "run" and spec.lower() in application_constructors():
                source.description += f"; {APPLICATION_PREFIX}{spec} would take the keras.applications model"
            return source
    try:
        return load_application(name, application_weights, image_size)
    except ValueError as e:
        if forced or not str(e).startswith("no keras.applications model"):
            raise
        runs = list_runs(workdir)
        raise ValueError(
            f"no model {spec!r}: not a .keras file, a SavedModel folder, a run in {workdir!r} "
            f"(runs: {', '.join(runs) or 'none'}) nor a keras.applications name "
            f"(known: {', '.join(sorted(application_constructors()))})"
        ) from None


def _load_local(spec, workdir):
    """A .keras file, SavedModel folder or run that ``spec`` names, or None."""
    if spec.endswith(".keras") or os.path.isfile(spec):
        return _keras_source(spec, "keras-file", os.path.splitext(os.path.basename(spec))[0], f"model file {spec}",
                             _run_class_names(os.path.dirname(os.path.abspath(spec))))
    if os.path.isdir(spec) and os.path.isfile(os.path.join(spec, "saved_model.pb")):
        return load_saved_model(spec)
    if os.path.isdir(spec) and os.path.isfile(os.path.join(spec, "model.keras")):  # a run folder given as a path
        path = os.path.join(spec, "model.keras")
        return _keras_source(path, "run", os.path.basename(os.path.normpath(spec)), f"run {spec} ({path})",
                             _run_class_names(spec))
    run_dir = os.path.join(workdir, spec)
    if os.sep not in spec and os.path.isfile(os.path.join(run_dir, "model.keras")):
        path = os.path.join(run_dir, "model.keras")
        return _keras_source(path, "run", spec, f"run {spec!r} in {workdir} ({path})", _run_class_names(run_dir))
    return None


def list_runs(workdir):
    """Names of the folders of ``workdir`` that hold a ``model.keras``, sorted."""
    if not os.path.isdir(workdir):
        return []
    return sorted(n for n in os.listdir(workdir) if os.path.isfile(os.path.join(workdir, n, "model.keras")))


# --- finding the images ----------------------------------------------------------------------------


def find_images(patterns):
    """The image files that ``patterns`` name, in order, each once.

    Args:
        patterns: files (any extension: a file named is tried), folders (their
            image files, ``IMAGE_EXTENSIONS``, recursively, sorted) and globs
            (``**`` recurses).

    Returns:
        A list of paths.

    Raises:
        FileNotFoundError: in one line naming the patterns that matched no file.
    """
    found, unmatched = [], []
    for pattern in patterns:
        pattern = os.fspath(pattern)
        if os.path.isdir(pattern):
            matches = [
                os.path.join(folder, name)
                for folder, subfolders, names in sorted(os.walk(pattern))
                for name in sorted(names)
                if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
            ]
        elif os.path.isfile(pattern):
            matches = [pattern]
        elif any(c in pattern for c in _GLOB_CHARACTERS):
            matches = [p for p in sorted(glob.glob(pattern, recursive=True)) if os.path.isfile(p)]
        else:
            matches = []
        if not matches:
            unmatched.append(pattern)
        found.extend(matches)
    if unmatched:
        raise FileNotFoundError(
            f"no image file matches {', '.join(repr(p) for p in unmatched)} "
            f"(give image files, folders of {'/'.join(e.lstrip('.') for e in IMAGE_EXTENSIONS[:3])} images or globs)"
        )
    unique = {}
    for path in found:
        unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


def output_stems(paths, out_dir):
    """One output path stem per image that no other image shares.

    The images' folders are mirrored below ``out_dir`` from their deepest
    common folder, and the file name keeps its extension, so ``a/x.jpg`` and
    ``b/x.jpg`` (or ``x.jpg`` and ``x.png``) never write to the same file.
    """
    folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
    root = os.path.commonpath(folders) if folders else ""
    return [
        os.path.normpath(os.path.join(out_dir, os.path.relpath(folder, root), os.path.basename(p)))
        for folder, p in zip(folders, paths)
    ]


# --- explaining ------------------------------------------------------------------------------------


def parse_class_choice(text, source):
    """``--class``: ("predicted", None), ("top", K) or ("index", i).

    Raises:
        ValueError: one line for an index out of range or an unknown name
            (listing a few known ones).
    """
    text = str(text).strip()
    outputs = _num_outputs(source)
    if text.lower() == "predicted":
        return "predicted", None
    if text.lower().startswith("top") and text[3:].isdigit() and int(text[3:]) >= 1:
        k = int(text[3:])
        if outputs is not None and k > outputs:
            raise ValueError(f"--class {text}: the model has only {outputs} classes")
        return "top", k
    if text.lstrip("-").isdigit():
        index = int(text)
        if outputs is not None and not 0 <= index < outputs:
            raise ValueError(f"--class {index}: outside the model's classes 0..{outputs - 1}")
        return "index", index
    names = [str(n) for n in source.class_names or ()]
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return "index", lowered.index(text.lower())
    if not names:
        raise ValueError(f"--class {text!r}: the model has no class names; give predicted, topK or a class index")
    raise ValueError(f"--class {text!r}: no such class; e.g. {', '.join(names[:8])}"
                     f"{f' ... ({len(names)} classes)' if len(names) > 8 else ''}; or predicted, topK, an index")


def _num_outputs(source):
    if source.kind == "saved-model":
        signature = next(iter(source.signatures.values()))
        return signature.structured_outputs["probabilities"].shape[-1]
    return source.model.output_shape[-1]


def check_methods(source, methods):
    """The methods to run, each once, in the order given (``"all"``: every method the model has).

    Raises:
        ValueError: one line for an unknown method, or one that the SavedModel
            was not exported with (naming those it was).
    """
    from kerascam.cams import available_methods, get_method

    wanted = []
    for method in methods or (DEFAULT_METHOD,):
        names = source.methods if method.lower() == "all" else [get_method(method).name]
        wanted.extend(n for n in names if n not in wanted)
    missing = [m for m in wanted if m not in source.methods]
    if missing:
        raise ValueError(
            f"--method {', '.join(missing)}: the SavedModel was exported with {', '.join(source.methods)} only "
            f"(all methods: {', '.join(available_methods())})"
        )
    return wanted


@dataclasses.dataclass
class Summary:
    """What `explain_files` did: the records written and the images skipped (path, reason)."""

    records: list
    skipped: list
    layers: dict


def explain_files(
    source,
    paths,
    *,
    methods=(DEFAULT_METHOD,),
    class_choice="predicted",
    target_layer=None,
    out_dir=DEFAULT_OUT,
    alpha=0.5,
    colormap=DEFAULT_COLORMAP,
    max_N=32,
    batch_size=8,
    max_pixels=MAX_PIXELS,
    progress=True,
    log=print,
):
    """Explains image files and writes the maps, overlays and records.

    Args:
        source: a `ModelSource` (`load_model`).
        paths: image files (`find_images`).
        methods: names of `kerascam.cams.available_methods()` or "all".
            Default ("gradcam++",).
        class_choice: "predicted" (default), "topK" (one map per each of the
            K most probable classes), a class index or a class name.
        target_layer: the layer to explain (a path such as
            "resnet50/conv5_block3_out" inside a nested model); None for
            `kerascam.models.target_layer_name(model)`.
        out_dir: output folder. Default "explanations".
        alpha, colormap: of the overlay (`kerascam.figures.overlay`).
        max_N: ScoreCAM's channels (Faster-ScoreCAM); None or 0 for all.
        batch_size: images per model call.
        max_pixels: larger images are skipped, known from their header
            before decoding; None or 0 for no limit.
        progress: show a progress bar beyond a few images.
        log: where the lines about the model and layer go.

    Returns:
        A `Summary`. Unreadable images are skipped and listed in it; the
        others are explained.
    """
    import keras

    from kerascam import cams

    methods = check_methods(source, methods)
    mode, value = parse_class_choice(class_choice, source)
    if source.kind == "saved-model":
        if mode != "predicted":
            raise ValueError("--class: a SavedModel explains the predicted class only; use --class predicted "
                             "or the .keras file")
        if target_layer:
            raise ValueError("--target-layer: a SavedModel explains the layer it was exported with; "
                             "use the .keras file for another layer")
    layers = {}
    bound = {}
    if source.kind != "saved-model":
        for method in methods:
            bound[method] = cams.get_method(method)(source.model, target_layer)
            layers[method] = _layer_text(bound[method])
        log(f"layer: {', '.join(sorted(set(layers.values())))}")
    else:
        layers = {m: "as exported" for m in methods}
    stems = output_stems(paths, out_dir)
    os.makedirs(out_dir, exist_ok=True)
    records_path = os.path.join(out_dir, RECORDS_FILE)
    bar = keras.utils.Progbar(len(paths), verbose=1 if progress and len(paths) > 3 else 0, unit_name="image")
    records, skipped = [], []
    done = 0
    for start in range(0, len(paths), batch_size):
        images, chunk_stems, chunk_paths = [], [], []
        for path, stem in zip(paths[start:start + batch_size], stems[start:start + batch_size]):
            try:
                images.append(read_image(path, max_pixels=max_pixels))
            except ImageError as e:
                skipped.append((path, e.reason))
                continue
            chunk_paths.append(path)
            chunk_stems.append(stem)
        for group in _groups(images, source.input_size):
            pixels = np.stack([_fit(images[i], source.input_size) for i in group]).astype(np.float32)
            probabilities = source.probabilities(pixels, batch_size)
            ranked = np.argsort(-probabilities, axis=-1, kind="stable")
            if mode == "predicted":
                class_columns = [ranked[:, 0]]
            elif mode == "top":
                class_columns = [ranked[:, k] for k in range(value)]
            else:
                class_columns = [np.full(len(group), value, np.int64)]
            for method in methods:
                for rank, classes in enumerate(class_columns, start=1):
                    native = _native_maps(source, bound.get(method), method, pixels, classes, max_N, batch_size)
                    for row, i in enumerate(group):
                        records.append(_write_outputs(
                            source, images[i], native[row], chunk_paths[i], chunk_stems[i], records_path,
                            method=method, class_index=int(classes[row]),
                            probability=float(probabilities[row, classes[row]]),
                            rank=rank if mode == "top" else None, layer=layers[method],
                            alpha=alpha, colormap=colormap, max_N=max_N,
                        ))
        done = min(start + batch_size, len(paths))
        bar.update(done)
    return Summary(records, skipped, layers)


def _layer_text(cam):
    layer = cam.target_layer
    return "+".join(layer) if isinstance(layer, (list, tuple)) else str(layer)


def _groups(images, input_size):
    """Indices of the images fed together: all of them for a fixed input, else those of equal shape."""
    if input_size is not None:
        return [list(range(len(images)))] if images else []
    by_shape = {}
    for i, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(i)
    return list(by_shape.values())


def _fit(image, input_size):
    """The image resized bilinearly to the model's fixed input, or as it is."""
    if input_size is None or image.shape[:2] == tuple(input_size):
        return image
    import cv2

    height, width = input_size
    return cv2.resize(image.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def _native_maps(source, cam, method, pixels, classes, max_N, batch_size):
    """Raw maps (N, h, w) at the target layer (fused layers: at input resolution)."""
    if source.kind == "saved-model":
        outputs = source.signatures[method](images=_tensor(pixels))
        explained = np.asarray(outputs["class"]).astype(np.int64).reshape(-1)
        if not np.array_equal(explained, classes):
            raise ValueError(f"the SavedModel explained classes {explained.tolist()}, expected {classes.tolist()}")
        return np.asarray(outputs["native_map"], np.float32)
    kwargs = {}
    if cam.supports_max_N and max_N and max_N < cam.channels:
        kwargs["max_N"] = max_N
    result = cam.compute(source.inputs(pixels), classes, batch_size=batch_size, **kwargs)
    return result.native


def _write_outputs(source, image, native, path, stem, records_path, *, method, class_index, probability, rank, layer,
                   alpha, colormap, max_N):
    """Writes one map's overlay, .npy and 16-bit PNG, appends its record, and returns the record."""
    import cv2

    from kerascam import cams, figures, metrics

    height, width = image.shape[:2]
    status = str(metrics.map_status(native[np.newaxis])[0])
    cam = cams.normalize_maps(cams.resize_maps(native[np.newaxis], (height, width)))[0]
    class_name = source.class_name(class_index)
    base = f"{stem}.{method}" + (f".top{rank}" if rank is not None else "") + f".class{class_index}"
    outputs = {"overlay": base + ".png", "map_npy": base + ".npy", "map_png16": base + ".map16.png"}
    title = f"{class_name} ({probability:.1%}) - {method}" + ("" if status == metrics.OK else f" - map {status}")
    figures.plot_overlay(outputs["overlay"], image, cam, title=title, colormap=colormap, alpha=alpha)
    with io.atomic_path(outputs["map_npy"], suffix=".npy") as tmp:
        np.save(tmp, cam.astype(np.float32))
    with io.atomic_path(outputs["map_png16"], suffix=".png") as tmp:
        if not cv2.imwrite(tmp, np.rint(cam * 65535.0).astype(np.uint16)):
            raise OSError(f"cannot write {outputs['map_png16']}")
    record = {
        "file": path,
        "image_size": [height, width],
        "class_index": class_index,
        "class_name": class_name,
        "probability": probability,
        "method": method,
        "model": source.name,
        "layer": layer,
        "map_status": status,
        "outputs": outputs,
    }
    if rank is not None:
        record["rank"] = rank
    if method == "scorecam":
        record["max_N"] = max_N or None
    # One write of one line in append mode: a kill leaves whole lines before it.
    with open(records_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return record
