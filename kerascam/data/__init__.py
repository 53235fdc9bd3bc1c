"""Datasets by name. Every source yields the same features:
``image`` (uint8 HxWx3 RGB), ``label`` (int64) and, where known, ``mask``
(uint8 HxW, 1 on the pixels that carry the class evidence), ``evidence``
(uint8 HxW, embedded datasets only: 1 on the part that decides the class,
the sticker of ``disk_sticker`` (all 0 for other shapes), the upright marker
of ``markers``) and ``file_name``. ImageNet and folders have no ``evidence``
feature at all. The validation split of ``markers`` also has ``parts`` and
``interventions`` (`kerascam.data.markers`).

Names (`DATASETS`): ``shapes`` (the embedded default, no download),
``markers`` (embedded, the testbed whose evidence is known),
``imagenet2012`` (ILSVRC2012 through tensorflow-datasets, from the tars in
``manual_dir``) and ``folder:PATH`` (``PATH/<split>/<class>/*.jpg|png``).
Every loader returns a `Split`.
"""

import dataclasses
from typing import Callable


@dataclasses.dataclass
class Split:
    """One split of a dataset: unbatched examples and what is known of them.

    ``examples`` is a ``tf.data.Dataset``, except for an embedded dataset
    under Keras' JAX backend, where it is None (no TensorFlow needed):
    ``arrays`` then holds the examples, the embedded datasets' NumPy arrays
    by feature (`kerascam.data.numpy_pipeline` batches them); ``arrays`` is
    None for ImageNet and folders.
    ``needs_crop`` is True for sources whose images have their own sizes
    (ImageNet, folders): the pipeline crops them to the model's input size.
    ``skipped`` names the files left out because they cannot be decoded or
    have more pixels than the limit (folders only), relative to the split folder (``"cat/broken.jpg"``),
    sorted; they are not in ``examples`` nor counted in ``num_examples``.
    """

    examples: "tf.data.Dataset | None"
    num_examples: int
    num_classes: int
    class_names: tuple
    needs_crop: bool = False
    skipped: tuple = ()
    arrays: dict | None = None


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


def _embedded_split(module, data_config, split):
    """A `Split` of an embedded dataset: its arrays, from its cache or drawn once.

    Under Keras' JAX backend the arrays alone (``examples`` None): no
    TensorFlow is imported, and none need be installed.
    """
    from kerascam import backend

    arrays = module.load(data_config, split)
    examples = None
    if backend.name() != "jax":
        import tensorflow as tf

        examples = tf.data.Dataset.from_tensor_slices(arrays)
    return Split(
        examples=examples,
        num_examples=len(arrays["label"]),
        num_classes=data_config.num_classes,
        class_names=tuple(data_config.classes),
        arrays=arrays,
    )


def _load_shapes(config, split, boxes_dir=None):
    from kerascam.data import synthetic

    shapes = synthetic.ShapesConfig(image_size=config.image_size, train_examples=config.train_examples,
                                    validation_examples=config.validation_examples)
    return _embedded_split(synthetic, shapes, split)


def _load_markers(config, split, boxes_dir=None):
    from kerascam.data import markers

    data_config = markers.MarkersConfig(image_size=config.image_size, train_examples=config.train_examples,
                                        validation_examples=config.validation_examples)
    return _embedded_split(markers, data_config, split)


def _with_boxes(examples, boxes_dir):
    if not boxes_dir:
        return examples
    from kerascam.data.boxes import with_box_masks

    return with_box_masks(examples, boxes_dir)


def _load_imagenet(config, split, boxes_dir=None):
    from kerascam import backend

    backend.require_tensorflow("--dataset imagenet2012 (tf.data over tensorflow-datasets)")
    from kerascam.data.imagenet import load_imagenet

    examples, n, num_classes, names = load_imagenet(split, config.data_dir, config.manual_dir)
    return Split(_with_boxes(examples, boxes_dir), n, num_classes, tuple(names), needs_crop=True)


def _load_folder(config, split, boxes_dir=None):
    from kerascam import backend

    backend.require_tensorflow("--dataset folder:PATH (tf.data decoding)")
    from kerascam.data.folder import load_folder
    from kerascam.data.images import MAX_PIXELS

    # Unreadable and oversized files are found (and left out) here, before any step.
    examples, n, num_classes, names, skipped = load_folder(
        config.dataset[len("folder:"):], split, max_pixels=getattr(config, "max_pixels", MAX_PIXELS)
    )
    return Split(_with_boxes(examples, boxes_dir), n, num_classes, tuple(names), needs_crop=True,
                 skipped=tuple(skipped))


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One entry of `DATASETS`.

    Attributes:
        name: What ``--dataset`` takes; a name ending in ``:`` is a prefix
            followed by a path (``folder:PATH``).
        load: ``load(config, split, boxes_dir=None) -> Split`` (see
            `load_split` for the arguments).
        description: One line for the documentation.
        embedded: Drawn from a seed, nothing to download.
    """

    name: str
    load: Callable
    description: str
    embedded: bool = False

    @property
    def shown_name(self):
        return f"{self.name}PATH" if self.name.endswith(":") else self.name

    def matches(self, name):
        if self.name.endswith(":"):
            return name.startswith(self.name) and len(name) > len(self.name)
        return name == self.name


# Adding a dataset is one loader returning a `Split` and one line here.
DATASETS = {
    d.name: d
    for d in (
        Dataset("shapes", _load_shapes, "embedded: procedurally drawn shapes, the demo default", embedded=True),
        Dataset("markers", _load_markers, "embedded: the class is one small marker among equal decoys "
                "(kerascam.data.markers)", embedded=True),
        Dataset("imagenet2012", _load_imagenet, "ILSVRC2012 through tensorflow-datasets"),
        Dataset("folder:", _load_folder, "PATH/<split>/<class>/*.jpg|png"),
    )
}


def get_dataset(name):
    """The `Dataset` entry that ``name`` selects.

    Raises:
        ValueError: For an unknown name, in one line naming the known ones.
    """
    for dataset in DATASETS.values():
        if isinstance(name, str) and dataset.matches(name):
            return dataset
    known = ", ".join(d.shown_name for d in DATASETS.values())
    raise ValueError(f"Unknown dataset {name!r}. Choose one of: {known}")


def check_dataset_name(name):
    """Raises ValueError unless ``name`` is a known dataset (before any work)."""
    get_dataset(name)


def load_split(config, split, *, boxes_dir=None):
    """Loads ``split`` of ``config.dataset``.

    Args:
        config: A ``TrainConfig`` (or anything with its data fields:
            ``dataset``, ``image_size``, ``train_examples``,
            ``validation_examples``, ``data_dir``, ``manual_dir``, and for
            folders ``max_pixels``, default ``MAX_PIXELS``). The embedded
            datasets keep their own default seed: a training ``seed``
            changes the run, not the data.
        split: ``"train"`` or ``"validation"`` (TFDS slices such as
            ``"validation[:1000]"`` for ImageNet).
        boxes_dir: ImageNet and folders: folder of the validation box XML
            files; each example then gets the ``mask`` of its boxes.

    Returns:
        A `Split`, whatever the dataset.
    """
    return get_dataset(config.dataset).load(config, split, boxes_dir=boxes_dir)
