"""Image classification folders: ``PATH/<split>/<class>/*.jpg|jpeg|png``.

Images keep their original size (Keras' ``image_dataset_from_directory``
always resizes, which would make the ImageNet-style crops of
:mod:`kerascam.data.preprocessing` crop an already distorted image). Classes
and their label ids are those of ``tfds.folder_dataset.ImageFolder`` (the
sorted class folder names), and so is the unshuffled order.

Users' folders hold bad files, so every file of a split is checked once,
before any training or evaluation step, by :func:`scan_split`:

* It reads each file's width and height from its header
  (:func:`kerascam.data.images.image_dimensions`) and refuses, without
  decoding it, an image of more than ``max_pixels`` pixels (default
  :data:`kerascam.data.images.MAX_PIXELS`, Pillow's 89,478,485): a
  decompression bomb, a small file claiming 20,000 x 20,000 pixels, would
  otherwise take gigabytes of memory.
* It decodes each other file eagerly with :func:`decode_image`, the very function
  the dataset maps over the files, so the check and the pipeline agree: a file
  that passes the check decodes in every epoch, and a file that fails is left
  out of the dataset from the start (the same files in every epoch, no error
  in the middle of one).
* Unreadable files are skipped and reported by name: files that cannot be
  opened (broken links, folders named ``x.jpg``), empty files, files that are
  not images whatever their extension (text, macOS ``._x.jpg`` resource
  forks, TIFF), damaged images and images over the pixel limit. A truncated JPEG or PNG needs no rule of
  its own (such as a missing 0xFFD9 end marker): TensorFlow's decoders fail
  on data that ends early, anywhere before the end marker, rather than
  return a partly grey image (``decode_jpeg``'s ``try_recover_truncated``
  is off). Bytes after a JPEG's end marker, which some cameras write, are
  harmless and such files are kept.
* Readable odd formats become uint8 RGB: grey levels ``g`` become
  ``(g, g, g)``, alpha is dropped (the stored RGB is kept, not blended),
  16-bit PNGs are scaled to 8 bits (65535 -> 255, ``257 * v`` -> ``v``), CMYK
  JPEGs are converted to RGB, palette PNGs are expanded, GIFs give their
  first frame; BMP and WebP content under a ``.jpg`` name decodes too.

Checking decodes every image once (about a millisecond for a 256x256 JPEG,
spread over a thread pool). The result is cached in
``$KERASCAM_CACHE`` (default ``~/.cache/kerascam``), one file per split
folder, keyed by each file's name, size and modification time: a second
load checks only the files that are new or changed since. Each entry keeps
the header's size and the limit it was checked under, so another limit
decodes only the files that the old one refused unread and the new one
allows.
"""

import concurrent.futures
import functools
import hashlib
import json
import logging
import os
import random

from kerascam.data.images import MAX_PIXELS, ImageSize, check_max_pixels, image_size, too_many_pixels

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # the ones ImageFolder reads, any case

# Bump when what makes a file readable changes, so that stale scans are not
# reused. The TensorFlow version is part of the cache too: its decoders decide.
SCAN_FORMAT = 2

logger = logging.getLogger(__name__)


def _subfolders(path):
    return sorted(name for name in os.listdir(path) if os.path.isdir(os.path.join(path, name)))


def _image_names(path):
    return sorted(name for name in os.listdir(path) if name.lower().endswith(IMAGE_EXTENSIONS))


def _count_images(path):
    return len(_image_names(path))


def _check_layout(root, split):
    """Validates the folder tree and returns the class names, sorted.

    ImageFolder labels classes by the sorted union of the class folders of
    every split under ``root``, so every split must use a subset of the
    reference split's classes for labels to mean the same class everywhere.
    The reference is ``train`` when it exists, else ``split`` itself.
    """
    if not os.path.isdir(root):
        raise ValueError(f"Image folder {root} does not exist.")
    splits = _subfolders(root)
    if split not in splits:
        raise ValueError(
            f"Split {split!r} not found in {root}: expected {os.path.join(root, split)} (found: {splits})."
        )
    reference = "train" if "train" in splits else split
    classes = _subfolders(os.path.join(root, reference))
    if not classes:
        raise ValueError(f"No class folders in {os.path.join(root, reference)}: expected {reference}/<class>/<image>.")
    for other in splits:
        extra = sorted(set(_subfolders(os.path.join(root, other))) - set(classes))
        if extra:
            raise ValueError(f"Split {other!r} of {root} has classes that {reference!r} lacks: {extra}.")
    split_dir = os.path.join(root, split)
    counts = {name: _count_images(os.path.join(split_dir, name)) for name in _subfolders(split_dir)}
    if sum(counts.values()) == 0:
        raise ValueError(f"No images ({'/'.join(IMAGE_EXTENSIONS)}) in {split_dir}/<class>/.")
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        raise ValueError(
            f"Class folder {os.path.join(split_dir, empty[0])} has no images ({'/'.join(IMAGE_EXTENSIONS)})."
        )
    return tuple(classes)


def decode_image(contents):
    """Decodes an encoded image (JPEG, PNG, GIF, BMP or WebP) to uint8 RGB.

    The one decoder of folder images: :func:`scan_split` runs it eagerly on
    every file and the dataset maps it over the files that passed.

    Args:
        contents: Scalar string tensor, the bytes of the file.

    Returns:
        uint8 ``(H, W, 3)``: grey levels repeated on the three channels, alpha
        dropped, 16-bit samples scaled to 8 bits, CMYK converted, the first
        frame of an animation.

    Raises:
        tf.errors.InvalidArgumentError: The bytes are empty, not an image
            of a known format, or damaged (truncated data included). Inside
            a dataset, the iterator raises it.
    """
    import tensorflow as tf

    return tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False)


def check_file(path, max_pixels=MAX_PIXELS):
    """Why ``path`` cannot be used as an image, or None when it decodes.

    Reads the image's size from its header and refuses an oversized one
    unread; reads and decodes any other with :func:`decode_image`, exactly as
    the dataset will (both through :func:`kerascam.data.images.read_image`).
    Never raises for a bad file: the reason is returned, e.g. ``"empty
    file"``, ``"cannot be read: Is a directory"``, ``"20000x20000 pixels
    (400,000,000) is more than --max-pixels 89,478,485; not decoded"`` or
    ``"not a decodable image: Unknown image file format. ..."``.

    Args:
        path: The file.
        max_pixels: The most pixels (width x height) allowed; None or 0 for
            no limit.
    """
    from kerascam.data.images import ImageError, read_image

    try:
        read_image(path, max_pixels=max_pixels)
    except ImageError as error:
        return error.reason
    return None


def _file_key(path):
    """``[size, mtime_ns]``, or None for a path that cannot be stat'ed (a broken link)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _cache_path(split_dir):
    from kerascam.data.synthetic import default_cache_dir

    digest = hashlib.sha256(split_dir.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(default_cache_dir(), f"folder-scan-{digest}.json")


def _read_cache(path, split_dir, tf_version):
    """The cached ``{name: [size, mtime_ns, max_pixels, reason, *ImageSize]}`` of ``split_dir``, or {}."""
    try:
        with open(path, encoding="utf-8") as f:
            cache = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        logger.warning("Ignoring the unreadable scan cache %s (%s)", path, error)
        return {}
    if (
        not isinstance(cache, dict)
        or cache.get("format") != SCAN_FORMAT
        or cache.get("tensorflow") != tf_version
        or cache.get("split_dir") != split_dir
        or not isinstance(cache.get("files"), dict)
    ):
        return {}
    return cache["files"]


_CHECK_AGAIN = object()


def _cached_reason(entry, key, limit):
    """The reason a cache entry gives under ``limit`` (None: readable), or ``_CHECK_AGAIN``.

    An entry holds the limit it was checked under and the header's size, so
    that another limit reuses it whenever the answer follows: a size over the
    new limit is refused unread, and a file that was decoded under the old
    limit and fits the new one keeps its answer. Only a file refused unread
    before and allowed now must be checked (decoded) again.
    """
    if key is None or not isinstance(entry, list) or len(entry) != 4 + len(ImageSize._fields) or entry[:2] != key:
        return _CHECK_AGAIN
    checked_limit, reason, *size = entry[2:]
    known_size = all(isinstance(value, int) for value in size)
    if (
        not isinstance(checked_limit, int)
        or not (reason is None or isinstance(reason, str))
        or not (known_size or all(value is None for value in size))
    ):
        return _CHECK_AGAIN
    if checked_limit == limit or not known_size:  # no size from the header: the limit played no part
        return reason
    size = ImageSize(*size)
    refused_now = too_many_pixels(size, limit)
    if refused_now:
        return refused_now
    if too_many_pixels(size, checked_limit):
        return _CHECK_AGAIN
    return reason


def _check_and_measure(path, max_pixels):
    """``(reason, size)``: :func:`check_file`'s answer and the header's :class:`ImageSize` (or None)."""
    reason = check_file(path, max_pixels=max_pixels)
    try:
        size = image_size(path)
    except OSError:
        size = None
    return reason, size


def scan_split(split_dir, names, max_pixels=MAX_PIXELS):
    """Finds the files of a split that cannot be decoded, each checked once.

    Args:
        split_dir: Absolute path of the split folder.
        names: File names relative to ``split_dir`` (``"cat/0001.jpg"``).
        max_pixels: The most pixels an image may have (see
            :func:`check_file`); None or 0 for no limit.

    Returns:
        ``{name: reason}`` of the unreadable files (see :func:`check_file`);
        empty when every file decodes. Results are cached (see the module
        docstring); files whose size and modification time are unchanged
        are not read again, nor decoded again under another limit unless
        they were refused unread under the old one and fit the new one.
    """
    import tensorflow as tf
    from kerascam.io import write_text

    check_max_pixels(max_pixels)
    limit = max_pixels or 0  # None and 0 both mean no limit
    cache_path = _cache_path(split_dir)
    cached = _read_cache(cache_path, split_dir, tf.__version__)
    results = {}
    to_check = []
    for name in names:
        key = _file_key(os.path.join(split_dir, name))
        entry = cached.get(name)
        reason = _cached_reason(entry, key, limit)
        if reason is _CHECK_AGAIN:
            to_check.append((name, key))
        else:
            results[name] = key + [limit, reason] + entry[4:]
    if to_check:
        logger.info("Checking %d images of %s (once; cached in %s)", len(to_check), split_dir, cache_path)
        paths = [os.path.join(split_dir, name) for name, _ in to_check]
        # Decoding releases the GIL: threads use every core.
        with concurrent.futures.ThreadPoolExecutor() as pool:
            checked = list(pool.map(functools.partial(_check_and_measure, max_pixels=limit), paths))
        for (name, key), (reason, size) in zip(to_check, checked):
            results[name] = (key or [None, None]) + [limit, reason] + list(size or [None] * len(ImageSize._fields))
    if to_check or results != cached:
        cache = {"format": SCAN_FORMAT, "tensorflow": tf.__version__, "split_dir": split_dir, "files": results}
        try:
            write_text(cache_path, json.dumps(cache, separators=(",", ":")) + "\n")
        except OSError as error:  # a read-only home must not stop training
            logger.warning("Could not cache the image check in %s (%s)", cache_path, error)
    return {name: entry[3] for name, entry in results.items() if entry[3] is not None}


def load_folder(path, split, *, shuffle_files=False, max_pixels=MAX_PIXELS):
    """Loads one split of an image classification folder, bad files left out.

    Every file is checked before this returns (see :func:`scan_split`), so the
    dataset holds exactly ``num_examples`` examples in every epoch, and the
    skipped files are known before the first step.

    Args:
        path: Root folder holding one folder per split, each holding one
            folder per class (``train/cat/0001.jpg``). Classes are the sorted
            class folder names of ``train`` (or of ``split`` when there is no
            ``train``), the same label ids in every split; a split may lack
            classes but not add any. Other files are ignored.
        split: Split folder name, e.g. ``"train"`` or ``"validation"``.
        shuffle_files: Shuffle the file order (each epoch anew). Unshuffled,
            the order is ImageFolder's fixed pseudo-random permutation of all
            the split's files, the skipped ones left out.
        max_pixels: Images of more pixels (width x height, read from their
            header) are skipped without being decoded; None or 0 for no
            limit. Default :data:`kerascam.data.images.MAX_PIXELS`.

    Returns:
        ``(examples, num_examples, num_classes, class_names, skipped)``: an
        unbatched dataset of ``{"image": uint8 (H, W, 3) at the file's own
        size, "label": int64, "file_name": "<class>/<file>"}``, the number
        of readable files, and the sorted names (``"<class>/<file>"``) of the
        unreadable files, which are logged with their reasons.

    Raises:
        ValueError: The folder or the split is missing, there are no class
            folders, a split has a class the reference split lacks, a class
            folder of ``split`` has no images or no readable ones, or there
            are no images or no readable ones at all; ``max_pixels`` is
            negative.
    """
    import tensorflow as tf

    check_max_pixels(max_pixels)
    root = os.path.abspath(os.fspath(path))
    class_names = _check_layout(root, split)
    split_dir = os.path.join(root, split)
    names = [
        f"{class_name}/{file_name}"
        for class_name in _subfolders(split_dir)
        for file_name in _image_names(os.path.join(split_dir, class_name))
    ]
    unreadable = scan_split(split_dir, names, max_pixels=max_pixels)
    skipped = tuple(sorted(unreadable))
    if skipped:
        from kerascam.data import describe_skipped

        logger.warning("%s: %s", split_dir, describe_skipped([f"{name} ({unreadable[name]})" for name in skipped]))
    if len(skipped) == len(names):
        raise ValueError(f"No readable images in {split_dir}: all {len(names)} files failed to decode.")
    readable_classes = {name.split("/", 1)[0] for name in names if name not in unreadable}
    for class_name in _subfolders(split_dir):
        if class_name not in readable_classes:
            raise ValueError(
                f"Class folder {os.path.join(split_dir, class_name)} has no readable images "
                f"(all its files failed to decode)."
            )

    # ImageFolder's order: its fixed permutation of every file, taken before
    # the unreadable ones are dropped so that fixing a file does not move the
    # others.
    random.Random(split).shuffle(names)
    kept = [name for name in names if name not in unreadable]
    label_ids = {class_name: label for label, class_name in enumerate(class_names)}
    # Built from the checked list rather than ImageFolder's dataset, which
    # reads every listed file inside its own map, before any filter could
    # drop one that cannot even be opened.
    files = tf.data.Dataset.from_tensor_slices(
        {
            "path": [os.fsencode(os.path.join(split_dir, name)) for name in kept],
            "label": tf.constant([label_ids[name.split("/", 1)[0]] for name in kept], tf.int64),
            "file_name": [os.fsencode(name) for name in kept],
        }
    )
    if shuffle_files:
        files = files.shuffle(len(kept), reshuffle_each_iteration=True)

    def read(example):
        image = decode_image(tf.io.read_file(example["path"]))
        return {"image": image, "label": example["label"], "file_name": example["file_name"]}

    examples = files.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return examples, len(kept), len(class_names), class_names, skipped
