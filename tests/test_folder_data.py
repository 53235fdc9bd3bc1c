"""Image classification folders through tfds' ImageFolder."""

import numpy as np
import pytest
from helpers_ilsvrc import encode, solid_image, write_image_folder

from kerascam.data.folder import load_folder


def _read(examples):
    return sorted(
        ((ex["file_name"].decode(), int(ex["label"]), ex["image"]) for ex in examples.as_numpy_iterator()),
        key=lambda item: item[0],
    )


def test_train_split_keeps_original_sizes_and_sorted_classes(tmp_path):
    write_image_folder(
        tmp_path,
        {"train": {"dog": [solid_image(9, 13, 200)], "cat": [solid_image(8, 8, 40), solid_image(16, 8, 120)]}},
    )
    examples, num_examples, num_classes, class_names, skipped = load_folder(tmp_path, "train")
    assert (num_examples, num_classes, class_names, skipped) == (3, 2, ("cat", "dog"), ())
    items = _read(examples)
    assert [(name, label) for name, label, _ in items] == [("cat/0.jpg", 0), ("cat/1.jpg", 0), ("dog/0.jpg", 1)]
    shapes = [image.shape for _, _, image in items]
    assert shapes == [(8, 8, 3), (16, 8, 3), (9, 13, 3)]  # not resized
    assert all(image.dtype == np.uint8 for _, _, image in items)
    assert [int(np.median(image)) for _, _, image in items] == pytest.approx([40, 120, 200], abs=2)


def test_other_splits_use_train_class_ids(tmp_path):
    # validation lacks "ant": "cat" must still be label 1, as in train.
    write_image_folder(
        tmp_path,
        {
            "train": {name: [solid_image(4, 4, 10)] for name in ("ant", "cat", "dog")},
            "validation": {"cat": [solid_image(4, 4, 10)], "dog": [solid_image(4, 4, 10)]},
        },
    )
    examples, num_examples, num_classes, class_names, _ = load_folder(tmp_path, "validation")
    assert (num_examples, num_classes, class_names) == (2, 3, ("ant", "cat", "dog"))
    assert [(name, label) for name, label, _ in _read(examples)] == [("cat/0.jpg", 1), ("dog/0.jpg", 2)]


def test_png_and_upper_case_extensions_count_other_files_do_not(tmp_path):
    write_image_folder(tmp_path, {"train": {"a": [solid_image(5, 6, 30)]}})
    folder = tmp_path / "train" / "a"
    (folder / "extra.PNG").write_bytes(encode(solid_image(3, 7, 60), "PNG"))
    (folder / "big.JPEG").write_bytes(encode(solid_image(4, 4, 90)))
    (folder / "notes.txt").write_text("not an image")
    examples, num_examples, _, _, _ = load_folder(tmp_path, "train")
    assert num_examples == 3
    assert [name for name, _, _ in _read(examples)] == ["a/0.jpg", "a/big.JPEG", "a/extra.PNG"]


@pytest.mark.parametrize(
    "layout, split, message",
    [
        (None, "train", "does not exist"),
        ({"train": {"a": [solid_image(4, 4, 0)]}}, "validation", "Split 'validation' not found"),
        ({"train": {}}, "train", "No class folders"),
        ({"train": {"a": [solid_image(4, 4, 0)], "b": []}}, "train", "b has no images"),
        ({"train": {"a": [], "b": []}}, "train", "No images"),
        (
            {"train": {"a": [solid_image(4, 4, 0)]}, "validation": {"z": [solid_image(4, 4, 0)]}},
            "validation",
            "classes that 'train' lacks: \\['z'\\]",
        ),
        (
            # A third split with an extra class would shift ImageFolder's ids too.
            {"train": {"a": [solid_image(4, 4, 0)]}, "test": {"y": [solid_image(4, 4, 0)]}},
            "train",
            "Split 'test'",
        ),
    ],
)
def test_layout_errors(tmp_path, layout, split, message):
    root = tmp_path / "images"
    if layout is not None:
        root.mkdir()
        for split_name in layout:
            (root / split_name).mkdir()
        write_image_folder(root, layout)
    with pytest.raises(ValueError, match=message) as error:
        load_folder(root, split)
    assert "\n" not in str(error.value)


def test_order_and_labels_are_imagefolders_with_unreadable_files_left_out(tmp_path):
    import tensorflow_datasets as tfds

    write_image_folder(tmp_path, {"train": {"b": [solid_image(4, 4, 9)] * 5, "a": [solid_image(4, 4, 9)] * 4}})
    (tmp_path / "train" / "b" / "broken.jpg").write_bytes(b"")
    examples, num_examples, _, _, skipped = load_folder(tmp_path, "train")
    assert (num_examples, skipped) == (9, ("b/broken.jpg",))
    mine = [(ex["file_name"].decode(), int(ex["label"])) for ex in examples.as_numpy_iterator()]

    # ImageFolder itself, its images left encoded (it cannot decode broken.jpg).
    builder = tfds.folder_dataset.ImageFolder(str(tmp_path))
    theirs = builder.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})
    prefix = len(str(tmp_path / "train")) + 1
    theirs = [(ex["image/filename"].decode()[prefix:], int(ex["label"])) for ex in theirs.as_numpy_iterator()]
    assert mine == [item for item in theirs if item[0] != "b/broken.jpg"]
    assert mine != sorted(mine)  # a fixed permutation, not the listing order
