"""Explaining anyone's images with anyone's classifier: ``kerascam explain``.

Three steps, each usable from Python:

* `load_model(spec)` (`kerascam.model_sources`) finds the classifier a name
  stands for, in this order: a ``.keras`` file, a SavedModel folder exported
  by kerascam with its explain signatures, a run of the workdir, a
  keras.applications constructor (``keras.applications:NAME`` forces it); it
  returns one object of the source's kind, whose methods the steps below call.
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
import json
import os

import numpy as np

from kerascam import io

from kerascam.data.images import IMAGE_EXTENSIONS, MAX_PIXELS, ImageError, read_image
# Finding the model is its own module; its public names stay reachable from here, the command's one import.
from kerascam.model_sources import (
    APPLICATION_PREFIX,
    ModelSource,
    application_constructors,
    list_runs,
    load_application,
    load_model,
    load_saved_model,
)

DEFAULT_METHOD = "gradcam++"
DEFAULT_COLORMAP = "viridis"  # perceptually uniform; jet stays available
DEFAULT_OUT = "explanations"
RECORDS_FILE = "explanations.jsonl"
_GLOB_CHARACTERS = "*?["

__all__ = [
    "APPLICATION_PREFIX", "DEFAULT_COLORMAP", "DEFAULT_METHOD", "DEFAULT_OUT", "MAX_PIXELS", "ModelSource",
    "RECORDS_FILE", "Summary", "application_constructors", "check_methods", "explain_files", "find_images",
    "list_runs", "load_application", "load_model", "load_saved_model", "output_stems", "parse_class_choice",
]


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
    outputs = source.num_outputs
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

    request = _prepare(source, methods, class_choice, target_layer, out_dir, alpha=alpha, colormap=colormap,
                       max_N=max_N, batch_size=batch_size, log=log)
    stems = output_stems(paths, out_dir)
    os.makedirs(out_dir, exist_ok=True)
    bar = keras.utils.Progbar(len(paths), verbose=1 if progress and len(paths) > 3 else 0, unit_name="image")
    records, skipped = [], []
    for start in range(0, len(paths), batch_size):
        readable, unreadable = _read_images(paths[start:start + batch_size], stems[start:start + batch_size],
                                            max_pixels)
        skipped.extend(unreadable)
        for group in _groups([image for _, _, image in readable], source.input_size):
            records.extend(_explain_group(source, [readable[i] for i in group], request))
        bar.update(min(start + batch_size, len(paths)))
    return Summary(records, skipped, request.layers)


@dataclasses.dataclass(frozen=True)
class _Request:
    """What `explain_files` was asked for, checked against the model, as its steps need it."""

    methods: list
    class_mode: str  # "predicted", "top" or "index" (`parse_class_choice`)
    class_value: object  # K for "top", the class index for "index", None for "predicted"
    layers: dict  # {method: the layer it explains, as text}
    records_path: str
    alpha: float
    colormap: str
    max_N: object
    batch_size: int


def _prepare(source, methods, class_choice, target_layer, out_dir, *, alpha, colormap, max_N, batch_size, log):
    """Checks the methods, class and layer against the model and binds the methods, before any image is read.

    Raises:
        ValueError: in one line, for what this model cannot explain.
    """
    methods = check_methods(source, methods)
    class_mode, class_value = parse_class_choice(class_choice, source)
    source.check_choices(class_mode, target_layer)
    layers = source.bind_methods(methods, target_layer, log)
    return _Request(methods, class_mode, class_value, layers, os.path.join(out_dir, RECORDS_FILE), alpha, colormap,
                    max_N, batch_size)


def _read_images(paths, stems, max_pixels):
    """Reads images at their own size: [(path, stem, image)] of those read, [(path, reason)] of the others."""
    readable, unreadable = [], []
    for path, stem in zip(paths, stems):
        try:
            readable.append((path, stem, read_image(path, max_pixels=max_pixels)))
        except ImageError as e:
            unreadable.append((path, e.reason))
    return readable, unreadable


def _explain_group(source, group, request):
    """Explains images fed together (`_groups`): each method, then each class, then each image; returns the records.

    Args:
        source: a `ModelSource`, its methods bound (`_prepare`).
        group: [(path, output stem, image)], the images of one shape unless the model's input is fixed.
        request: the `_Request`.
    """
    pixels = np.stack([_fit(image, source.input_size) for _, _, image in group]).astype(np.float32)
    probabilities = source.probabilities(pixels, request.batch_size)
    class_columns = _class_columns(probabilities, request.class_mode, request.class_value)
    records = []
    for method in request.methods:
        for rank, classes in enumerate(class_columns, start=1):
            native = source.native_maps(method, pixels, classes, max_N=request.max_N, batch_size=request.batch_size)
            for row, (path, stem, image) in enumerate(group):
                records.append(_write_outputs(
                    source, image, native[row], path, stem, request.records_path,
                    method=method, class_index=int(classes[row]),
                    probability=float(probabilities[row, classes[row]]),
                    rank=rank if request.class_mode == "top" else None, layer=request.layers[method],
                    alpha=request.alpha, colormap=request.colormap, max_N=request.max_N,
                ))
    return records


def _class_columns(probabilities, class_mode, class_value):
    """The classes explained, one int array (N,) per map of each image.

    "predicted": the most probable class; "top": the K most probable, most
    probable first (ties: the lower index first); "index": the given class.
    """
    ranked = np.argsort(-probabilities, axis=-1, kind="stable")
    if class_mode == "predicted":
        return [ranked[:, 0]]
    if class_mode == "top":
        return [ranked[:, k] for k in range(class_value)]
    return [np.full(len(probabilities), class_value, np.int64)]


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
