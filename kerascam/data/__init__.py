"""Datasets by name. Every source yields the same features:
``image`` (uint8 HxWx3 RGB), ``label`` (int64) and, where known, ``mask``
(uint8 HxW, 1 on the pixels that carry the class evidence), ``evidence``
(uint8 HxW, shapes only: 1 on the part of an object that decides its class,
the sticker of ``disk_sticker``; all 0 for other classes) and ``file_name``.
ImageNet and folders have no ``evidence`` feature at all.

Names: ``shapes`` (the embedded default, no download), ``imagenet2012``
(ILSVRC2012 through tensorflow-datasets, from the tars in ``manual_dir``) and
``folder:PATH`` (``PATH/<split>/<class>/*.jpg|png``).
"""

import dataclasses

DATASETS = ("shapes", "imagenet2012", "folder:PATH")


@dataclasses.dataclass
class Split:
    """One split of a dataset: unbatched examples and what is known of them.

    ``needs_crop`` is True for sources whose images have their own sizes
    (ImageNet, folders): the pipeline crops them to the model's input size.
    ``skipped`` names the files left out because they cannot be decoded or
    have more pixels than the limit (folders only), relative to the split folder (``"cat/broken.jpg"``),
    sorted; they are not in ``examples`` nor counted in ``num_examples``.
    """

    examples: "tf.data.Dataset"
    num_examples: int
    num_classes: int
    class_names: tuple
    needs_crop: bool = False
    skipped: tuple = ()


def describe_skipped(skipped, limit=10):
    """One line naming the skipped files, for the end of a run.

    Args:
        skipped: File names, e.g. ``Split.skipped``.
        limit: Most names written; the rest are counted ("and K more").

    Returns:
        ``"skipped 3 unreadable files: cat/a.jpg, cat/b.jpg and 1 more"``
        (with ``limit=2``), or ``""`` when nothing was skipped.
    """
    if not skipped:
        return ""
    shown = ", ".join(skipped[:limit])
    more = f" and {len(skipped) - limit} more" if len(skipped) > limit else ""
    noun = "file" if len(skipped) == 1 else "files"
    return f"skipped {len(skipped)} unreadable {noun}: {shown}{more}"


def check_dataset_name(name):
    """Raises ValueError unless ``name`` is a known dataset (before any work)."""
    if name in ("shapes", "imagenet2012") or (name.startswith("folder:") and len(name) > len("folder:")):
        return
    raise ValueError(f"Unknown dataset {name!r}. Choose one of: {', '.join(DATASETS)}")


def load_split(config, split, *, boxes_dir=None):
    """Loads ``split`` of ``config.dataset``.

    Args:
        config: A ``TrainConfig`` (or anything with its data fields:
            ``dataset``, ``image_size``, ``train_examples``,
            ``validation_examples``, ``data_dir``, ``manual_dir``, and for
            folders ``max_pixels``, default ``MAX_PIXELS``). The shapes
            dataset keeps its own default seed: a training ``seed`` changes
            the run, not the data.
        split: ``"train"`` or ``"validation"`` (TFDS slices such as
            ``"validation[:1000]"`` for ImageNet).
        boxes_dir: ImageNet only: folder of the validation box XML files;
            each example then gets the ``mask`` of its boxes.
    """
    import tensorflow as tf  # here, so that importing kerascam.data stays light

    check_dataset_name(config.dataset)
    if config.dataset == "shapes":
        from kerascam.data import synthetic

        shapes = synthetic.ShapesConfig(
            image_size=config.image_size,
            train_examples=config.train_examples,
            validation_examples=config.validation_examples,
        )
        arrays = synthetic.load(shapes, split)
        return Split(
            examples=tf.data.Dataset.from_tensor_slices(arrays),
            num_examples=len(arrays["label"]),
            num_classes=len(shapes.classes),
            class_names=tuple(shapes.classes),
        )
    skipped = ()
    if config.dataset == "imagenet2012":
        from kerascam.data.imagenet import load_imagenet

        examples, n, num_classes, names = load_imagenet(split, config.data_dir, config.manual_dir)
    else:
        from kerascam.data.folder import load_folder
        from kerascam.data.images import MAX_PIXELS

        # Unreadable and oversized files are found (and left out) here, before any step.
        examples, n, num_classes, names, skipped = load_folder(
            config.dataset[len("folder:"):], split, max_pixels=getattr(config, "max_pixels", MAX_PIXELS)
        )
    if boxes_dir:
        from kerascam.data.boxes import with_box_masks

        examples = with_box_masks(examples, boxes_dir)
    return Split(examples, n, num_classes, tuple(names), needs_crop=True, skipped=tuple(skipped))
