"""Image classification folders: ``PATH/<split>/<class>/*.jpg|jpeg|png``.

Files are listed, labelled and decoded by ``tfds.folder_dataset.ImageFolder``,
which keeps each image at its original size (Keras'
``image_dataset_from_directory`` always resizes, which would make the
ImageNet-style crops of :mod:`kerascam.data.preprocessing` crop an already
distorted image).
"""

import os

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # the ones ImageFolder reads, any case


def _subfolders(path):
    return sorted(name for name in os.listdir(path) if os.path.isdir(os.path.join(path, name)))


def _count_images(path):
    return sum(1 for name in os.listdir(path) if name.lower().endswith(IMAGE_EXTENSIONS))


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


def load_folder(path, split, *, shuffle_files=False):
    """Loads one split of an image classification folder.

    Args:
        path: Root folder holding one folder per split, each holding one
            folder per class (``train/cat/0001.jpg``). Classes are the sorted
            class folder names of ``train`` (or of ``split`` when there is no
            ``train``), the same label ids in every split; a split may lack
            classes but not add any. Other files are ignored.
        split: Split folder name, e.g. ``"train"`` or ``"validation"``.
        shuffle_files: Shuffle the file order (each epoch anew). Unshuffled,
            ImageFolder's order is a fixed pseudo-random permutation.

    Returns:
        ``(examples, num_examples, num_classes, class_names)``: an unbatched
        dataset of ``{"image": uint8 (H, W, 3) at the file's own size,
        "label": int64, "file_name": "<class>/<file>"}``.

    Raises:
        ValueError: The folder or the split is missing, there are no class
            folders, a split has a class the reference split lacks, a class
            folder of ``split`` has no images, or there are no images at all.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    root = os.path.abspath(os.fspath(path))
    class_names = _check_layout(root, split)
    builder = tfds.folder_dataset.ImageFolder(root)
    assert tuple(builder.info.features["label"].names) == class_names  # ensured by _check_layout
    prefix_length = len((os.path.join(root, split) + os.sep).encode())

    def rename(example):
        # ImageFolder's "image/filename" is the full path; keep what names the
        # example within the split.
        full_path = example["image/filename"]
        file_name = tf.strings.substr(full_path, prefix_length, tf.strings.length(full_path) - prefix_length)
        return {"image": example["image"], "label": example["label"], "file_name": file_name}

    examples = builder.as_dataset(split=split, shuffle_files=shuffle_files).map(rename)
    return examples, builder.info.splits[split].num_examples, len(class_names), class_names
