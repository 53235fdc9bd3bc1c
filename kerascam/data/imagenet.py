"""ILSVRC2012 (ImageNet-1k) through tensorflow-datasets' own ``imagenet2012``
builder.

ImageNet cannot be downloaded by a program: fetch the archives by hand from
https://image-net.org/download-images and put them, unchanged, in one folder
(``manual_dir``):

* ``ILSVRC2012_img_train.tar`` (138 GB): one ``<wnid>.tar`` per class (e.g.
  ``n01440764.tar``), each holding that class's ``<wnid>_<n>.JPEG`` files;
* ``ILSVRC2012_img_val.tar`` (6.3 GB): the 50,000 files
  ``ILSVRC2012_val_00000001.JPEG`` ... ``ILSVRC2012_val_00050000.JPEG``, flat;
* ``ILSVRC2012_img_test.tar``: optional, its labels are all -1.

The first call converts whatever archives are present to TFRecords under
``data_dir`` (hours for the train archive; once): TFDS prepares every split
it finds in one go and never revisits the archives afterwards.

How the builder labels examples (tensorflow_datasets 4.9):

* train: the label is the inner tar's name minus ``.tar``, looked up in
  TFDS' ``labels.txt`` (the 1000 wnids, sorted: id 0 is ``n01440764``).
* validation: TFDS' ``validation_labels.txt`` has one wnid per line for the
  validation files *in sorted name order*; the builder pairs the sorted
  member names of the val tar with those lines by position, without looking
  at the names. A val tar that is not exactly files 1..N (a subset, a
  directory entry, ``./``-prefixed names) would be labelled wrongly or fail,
  so :func:`load_imagenet` checks the names before preparing.
* The 22 CMYK JPEGs and the one PNG-in-disguise of the train archive are
  converted to RGB JPEG by the builder (by file name); nothing to do here.
"""

import os
import re
import tarfile

ARCHIVES = {
    "train": "ILSVRC2012_img_train.tar",
    "validation": "ILSVRC2012_img_val.tar",
    "test": "ILSVRC2012_img_test.tar",
}
NUM_CLASSES = 1000

_VALIDATION_NAME = "ILSVRC2012_val_{:08d}.JPEG"
_CLASS_ARCHIVE = re.compile(r"n\d{8}\.tar")


def _base_split(split):
    # "validation[:1000]" and similar TFDS slices name the split they slice.
    return split.split("[", 1)[0].strip()


def check_validation_tar(path):
    """Raises ValueError unless the val tar holds exactly
    ``ILSVRC2012_val_00000001.JPEG`` .. ``ILSVRC2012_val_<N>.JPEG``, flat.

    The builder labels validation files by their rank in sorted order (see
    the module doc); this is what makes that rank the file's number.
    """
    with tarfile.open(path, mode="r:") as tar:
        names = sorted(tar.getnames())
    for number, name in enumerate(names, start=1):
        if name != _VALIDATION_NAME.format(number):
            raise ValueError(
                f"{path} must hold exactly {_VALIDATION_NAME.format(1)} .. {_VALIDATION_NAME.format(len(names))}, "
                f"flat (TFDS labels them by position); entry {number} is {name!r}."
            )


def check_train_tar(path):
    """Raises ValueError unless every member of the train tar is a flat
    ``<wnid>.tar`` (the builder takes the label from that name)."""
    with tarfile.open(path, mode="r:") as tar:
        for name in tar.getnames():
            if not _CLASS_ARCHIVE.fullmatch(name):
                raise ValueError(
                    f"{path} must hold only flat <wnid>.tar archives (e.g. n01440764.tar); found {name!r}."
                )


def load_imagenet(split, data_dir=None, manual_dir=None, *, shuffle_files=False, seed=None):
    """Loads one split of ILSVRC2012, preparing the TFRecords on first use.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``, or a TFDS slice of
            one (``"validation[:1000]"``).
        data_dir: TFDS data folder (default: TFDS' own, ``~/tensorflow_datasets``
            unless ``TFDS_DATA_DIR`` says otherwise).
        manual_dir: Folder holding the ILSVRC2012 tar files (default:
            ``<data_dir>/downloads/manual``, TFDS' default). Only read when
            the dataset is not prepared yet.
        shuffle_files: Read the TFRecord shards in a shuffled order.
        seed: Seed of that shuffle (``tfds.ReadConfig.shuffle_seed``).

    Returns:
        ``(examples, num_examples, num_classes, class_names)``: an unbatched
        dataset of ``{"image": uint8 (H, W, 3) at the file's own size,
        "label": int64 in [0, 1000) (-1 for test), "file_name": string}``,
        its size, 1000 and the 1000 wnids in label order.

    Raises:
        ValueError: Unknown split, a malformed archive, or a prepared dataset
            that lacks ``split`` because its archive was missing when it was
            prepared.
        FileNotFoundError: The dataset is not prepared and the archive of
            ``split``, or the val archive (which TFDS' builder opens to
            prepare any split), is not in ``manual_dir``.
    """
    import tensorflow_datasets as tfds

    base = _base_split(split)
    if base not in ARCHIVES:
        raise ValueError(f"Unknown ImageNet split {split!r}. Choose one of: {', '.join(ARCHIVES)}")
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    if not builder.is_prepared():
        if manual_dir is None:
            manual_dir = os.path.join(os.fspath(builder.data_dir_root), "downloads", "manual")
        manual_dir = os.fspath(manual_dir)
        # The builder opens the val tar whatever split it prepares.
        for name in dict.fromkeys((ARCHIVES[base], ARCHIVES["validation"])):
            archive = os.path.join(manual_dir, name)
            if not os.path.isfile(archive):
                raise FileNotFoundError(
                    f"ImageNet split {base!r} needs {archive} (manual_dir holds {ARCHIVES['train']} and "
                    f"{ARCHIVES['validation']}, downloaded by hand from https://image-net.org; TFDS' builder "
                    "reads the val tar to prepare any split)."
                )
        # Fail in seconds on a wrong layout rather than after hours of writing.
        check_validation_tar(os.path.join(manual_dir, ARCHIVES["validation"]))
        if os.path.isfile(os.path.join(manual_dir, ARCHIVES["train"])):
            check_train_tar(os.path.join(manual_dir, ARCHIVES["train"]))
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    if base not in builder.info.splits:
        raise ValueError(
            f"ImageNet at {builder.data_dir} was prepared without the {base!r} split (its archive was missing then); "
            f"delete that folder and call again with {ARCHIVES[base]} in manual_dir."
        )
    examples = builder.as_dataset(
        split=split,
        shuffle_files=shuffle_files,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )
    label_feature = builder.info.features["label"]
    return examples, builder.info.splits[split].num_examples, label_feature.num_classes, tuple(label_feature.names)
