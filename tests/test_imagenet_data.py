"""ILSVRC2012 through the real TFDS imagenet2012 builder, on tiny archives
laid out like the real ones, and the ImageNet-style crops."""

import os

import numpy as np
import pytest
import tensorflow as tf
from helpers_ilsvrc import solid_image, write_train_tar, write_val_tar, write_voc_xml

from kerascam.data import boxes as boxes_lib
from kerascam.data import imagenet, preprocessing

# The first three wnids of TFDS' labels.txt (ids 0, 1, 2) and the wnids its
# validation_labels.txt gives ILSVRC2012_val_00000001..3.
TRAIN_WNIDS = ("n01440764", "n01443537", "n01484850")
VALIDATION_WNIDS = ("n01751748", "n09193705", "n02105855")
TRAIN_LEVELS = {"n01440764": (20, 40), "n01443537": (80, 100), "n01484850": (160, 180)}
VALIDATION_LEVELS = (60, 140, 220)


def _tfds_resource_lines(name, count):
    import tensorflow_datasets as tfds

    path = tfds.core.tfds_path(f"datasets/imagenet2012/{name}")
    return tuple(path.read_text().split()[:count])


def _write_manual_dir(folder):
    os.makedirs(folder, exist_ok=True)
    write_train_tar(
        os.path.join(folder, imagenet.ARCHIVES["train"]),
        {wnid: [solid_image(10, 14, level) for level in levels] for wnid, levels in TRAIN_LEVELS.items()},
    )
    write_val_tar(
        os.path.join(folder, imagenet.ARCHIVES["validation"]),
        [solid_image(12 + n, 9, level) for n, level in enumerate(VALIDATION_LEVELS)],
    )
    return folder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(data_dir, manual_dir) of an imagenet2012 prepared once from the tiny
    train and val archives (no test archive: it is optional)."""
    root = tmp_path_factory.mktemp("imagenet")
    manual_dir = _write_manual_dir(str(root / "manual"))
    data_dir = str(root / "tfds")
    imagenet.load_imagenet("validation", data_dir=data_dir, manual_dir=manual_dir)
    return data_dir, manual_dir


def _by_file_name(examples):
    return {ex["file_name"].decode(): ex for ex in examples.as_numpy_iterator()}


def test_label_files_are_the_ones_the_test_assumes():
    assert _tfds_resource_lines("labels.txt", 3) == TRAIN_WNIDS
    assert _tfds_resource_lines("validation_labels.txt", 3) == VALIDATION_WNIDS


def test_train_split_labels_come_from_the_inner_tar_names(prepared):
    data_dir, manual_dir = prepared
    examples, num_examples, num_classes, class_names = imagenet.load_imagenet("train", data_dir, manual_dir)
    assert (num_examples, num_classes, len(class_names)) == (6, 1000, 1000)
    assert class_names[:3] == TRAIN_WNIDS
    found = _by_file_name(examples)
    assert sorted(found) == sorted(f"{wnid}_{n}.JPEG" for wnid in TRAIN_WNIDS for n in (1, 2))
    for label, wnid in enumerate(TRAIN_WNIDS):
        for n, level in enumerate(TRAIN_LEVELS[wnid], start=1):
            example = found[f"{wnid}_{n}.JPEG"]
            assert example["label"] == label
            assert example["image"].dtype == np.uint8 and example["image"].shape == (10, 14, 3)
            assert abs(int(np.median(example["image"])) - level) <= 2


def test_validation_labels_follow_tfds_validation_labels_file(prepared):
    data_dir, manual_dir = prepared
    examples, num_examples, num_classes, class_names = imagenet.load_imagenet("validation", data_dir, manual_dir)
    assert (num_examples, num_classes) == (3, 1000)
    found = _by_file_name(examples)
    for n, (wnid, level) in enumerate(zip(VALIDATION_WNIDS, VALIDATION_LEVELS), start=1):
        example = found[f"ILSVRC2012_val_{n:08d}.JPEG"]
        assert example["label"] == class_names.index(wnid)
        assert example["image"].shape == (11 + n, 9, 3)
        assert abs(int(np.median(example["image"])) - level) <= 2
    assert found["ILSVRC2012_val_00000001.JPEG"]["label"] == 65  # n01751748, sea snake


def test_prepared_data_is_reused_without_the_archives(prepared, tmp_path):
    data_dir, _ = prepared
    examples, num_examples, _, _ = imagenet.load_imagenet("validation[:2]", data_dir, tmp_path / "gone")
    assert num_examples == 2 and len(list(examples)) == 2


def test_split_whose_archive_was_missing_at_preparation(prepared):
    data_dir, manual_dir = prepared
    with pytest.raises(ValueError, match="prepared without the 'test' split"):
        imagenet.load_imagenet("test", data_dir, manual_dir)


def test_missing_archive_names_the_expected_file(tmp_path):
    (tmp_path / "manual").mkdir()
    with pytest.raises(FileNotFoundError, match="ILSVRC2012_img_val.tar") as error:
        imagenet.load_imagenet("validation", tmp_path / "tfds", tmp_path / "manual")
    assert "\n" not in str(error.value)


def test_train_alone_is_refused_since_the_builder_opens_the_val_tar(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "ILSVRC2012_img_train.tar").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="needs \\S+ILSVRC2012_img_val.tar .*to prepare any split"):
        imagenet.load_imagenet("train", tmp_path / "tfds", tmp_path / "manual")
    assert not (tmp_path / "tfds").exists()  # nothing prepared


def test_unknown_split():
    with pytest.raises(ValueError, match="Unknown ImageNet split 'val'"):
        imagenet.load_imagenet("val")


@pytest.mark.parametrize(
    "names",
    [
        ["ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000003.JPEG"],  # a subset: labels would shift
        ["./ILSVRC2012_val_00000001.JPEG", "./ILSVRC2012_val_00000002.JPEG"],
        ["val/ILSVRC2012_val_00000001.JPEG", "val/ILSVRC2012_val_00000002.JPEG"],
    ],
)
def test_validation_tar_not_numbered_from_one_is_refused_before_preparing(tmp_path, names):
    (tmp_path / "manual").mkdir()
    write_val_tar(tmp_path / "manual" / imagenet.ARCHIVES["validation"], [solid_image(4, 4, 0)] * 2, names=names)
    with pytest.raises(ValueError, match="must hold exactly"):
        imagenet.load_imagenet("validation", tmp_path / "tfds", tmp_path / "manual")
    assert not (tmp_path / "tfds" / "imagenet2012").exists()


def test_nested_train_tar_is_refused(tmp_path):
    path = tmp_path / imagenet.ARCHIVES["train"]
    write_train_tar(path, {"train/n01440764": [solid_image(4, 4, 0)]})
    with pytest.raises(ValueError, match="flat <wnid>.tar"):
        imagenet.check_train_tar(path)


def test_validation_with_box_masks_then_center_crop(prepared, tmp_path):
    data_dir, manual_dir = prepared
    for n in (1, 2, 3):  # a box over the whole image's left half
        write_voc_xml(tmp_path / f"ILSVRC2012_val_{n:08d}.xml", 9, 11 + n, [(VALIDATION_WNIDS[n - 1], 1, 1, 4, 11 + n)])
    examples, _, _, _ = imagenet.load_imagenet("validation", data_dir, manual_dir)
    examples = boxes_lib.with_box_masks(examples, tmp_path).map(lambda ex: preprocessing.resize_center_crop(ex, 8))
    for example in examples.as_numpy_iterator():
        assert example["image"].shape == (8, 8, 3) and example["mask"].shape == (8, 8)
        # Width 9 -> 9 (8 / 0.875 = 9.14 rounds to 9), no horizontal crop
        # offset ((9 - 8) // 2 = 0): columns 0..3 stay the box.
        np.testing.assert_array_equal(example["mask"][:, :4], 1)
        np.testing.assert_array_equal(example["mask"][:, 4:], 0)


# ImageNet-style crops (kerascam.data.preprocessing).


def _marked_example(height=48, width=64, box=(10, 30, 16, 44)):
    """An image bright on ``box`` (top, bottom, left, right) and dark
    elsewhere, with the matching mask and edge box."""
    top, bottom, left, right = box
    image = np.full((height, width, 3), 20, np.uint8)
    image[top:bottom, left:right] = 230
    mask = np.zeros((height, width), np.uint8)
    mask[top:bottom, left:right] = 1
    return {
        "image": tf.constant(image),
        "mask": tf.constant(mask),
        "boxes": tf.constant([[left, top, right, bottom], [0, 0, 4, 4]], tf.float32),
        "label": tf.constant(3, tf.int64),
    }


CROPS = {
    "random_resized_crop": lambda ex, seed: preprocessing.random_resized_crop(ex, (24, 32), seed),
    "random_flip": lambda ex, seed: preprocessing.random_flip(ex, seed),
    "train_crop_and_flip": lambda ex, seed: preprocessing.train_crop_and_flip(ex, 24, seed),
    "resize_center_crop": lambda ex, seed: preprocessing.resize_center_crop(ex, (24, 32)),
}


def _numpy(example):
    return {key: value.numpy() for key, value in example.items()}


@pytest.mark.parametrize("name", sorted(CROPS))
def test_crops_agree_eagerly_and_inside_dataset_map(name):
    crop = CROPS[name]
    seeds = tf.constant([[0, 1], [5, 9], [123, 4]], tf.int64)
    eager = [_numpy(crop(_marked_example(), seed)) for seed in seeds]
    dataset = tf.data.Dataset.from_tensor_slices(seeds).map(lambda seed: crop(_marked_example(), seed))
    mapped = list(dataset.as_numpy_iterator())
    for one, other in zip(eager, mapped):
        assert one.keys() == other.keys()
        for key in one:
            np.testing.assert_array_equal(one[key], other[key], err_msg=key)
    assert dataset.element_spec["image"].dtype == tf.uint8
    if name != "random_flip":
        assert dataset.element_spec["image"].shape[:2] in ([24, 32], [24, 24])
        assert dataset.element_spec["mask"].shape == dataset.element_spec["image"].shape[:2]


def test_random_crops_are_deterministic_per_seed_and_vary_across_seeds():
    crop = CROPS["train_crop_and_flip"]
    first = _numpy(crop(_marked_example(), (7, 7)))
    again = _numpy(crop(_marked_example(), (7, 7)))
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    boxes = {tuple(_numpy(crop(_marked_example(), (7, n)))["boxes"][0].round(3)) for n in range(6)}
    assert len(boxes) > 1


@pytest.mark.parametrize("seed", [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)])
def test_mask_and_boxes_land_where_the_image_content_lands(seed):
    out = _numpy(preprocessing.train_crop_and_flip(_marked_example(), 24, seed, scale=(0.2, 1.0)))
    bright = (out["image"][..., 0] > 125).astype(np.uint8)
    mask = out["mask"]
    # Bilinear image vs nearest mask may disagree on the rectangle's outline
    # only: at most one pixel row/column along each edge.
    rows, cols = np.nonzero(mask | bright)
    outline = 0 if rows.size == 0 else 2 * (np.ptp(rows) + 1) + 2 * (np.ptp(cols) + 1)
    assert np.sum(bright != mask) <= outline
    from_box = boxes_lib.boxes_to_mask(out["boxes"][:1], 24, 24, one_based_inclusive=False)
    assert np.sum(from_box != mask) <= outline


def test_flip_moves_boxes_and_masks_with_the_image():
    example = _marked_example()
    seed = next(s for s in ((0, n) for n in range(20)) if tf.random.stateless_uniform([], seed=s) < 0.5)
    out = _numpy(preprocessing.random_flip(example, seed))
    np.testing.assert_array_equal(out["image"], example["image"].numpy()[:, ::-1])
    np.testing.assert_array_equal(out["mask"], example["mask"].numpy()[:, ::-1])
    np.testing.assert_array_equal(out["boxes"], [[64 - 44, 10, 64 - 16, 30], [60, 0, 64, 4]])
    assert out["label"] == 3


def test_resize_center_crop_without_resize_is_the_central_window():
    # 32x48 at size 28: 28 / 0.875 = 32 is the shorter side already, so the
    # output is rows 2..29 and columns 10..37 exactly.
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    out = _numpy(preprocessing.resize_center_crop({"image": tf.constant(image)}, 28))
    np.testing.assert_array_equal(out["image"], image[2:30, 10:38])


def test_resize_center_crop_resizes_the_shorter_side():
    example = _marked_example(height=40, width=60)  # -> 32x48, then 28x28
    out = _numpy(preprocessing.resize_center_crop(example, 28))
    assert out["image"].shape == (28, 28, 3) and out["mask"].shape == (28, 28)
    # Edge box (16, 10)-(44, 30) scaled by 0.8 -> (12.8, 8)-(35.2, 24), minus (10, 2).
    np.testing.assert_allclose(out["boxes"][0], [2.8, 6.0, 25.2, 22.0], atol=1e-5)


def test_preprocessing_argument_errors():
    with pytest.raises(ValueError, match="crop_fraction"):
        preprocessing.resize_center_crop(_marked_example(), 8, crop_fraction=1.5)
    with pytest.raises(ValueError, match="size must be positive"):
        preprocessing.random_resized_crop(_marked_example(), 0, (1, 2))
