"""Tests of the embedded shapes dataset (kerascam.data.synthetic)."""

import dataclasses

import cv2
import numpy as np
import pytest

from kerascam.data import synthetic

SMALL = synthetic.ShapesConfig(train_examples=120, validation_examples=60, seed=3)
NO_CLUTTER = dataclasses.replace(SMALL, lines_per_image=(0, 0), outlines_per_image=(0, 0), speckle_fraction=0.0)
FLAT = dataclasses.replace(NO_CLUTTER, background_gradient=0.0, background_noise=0.0)


@pytest.fixture(scope="module")
def small_train():
    return synthetic.generate(SMALL, "train")


def count_instances(mask):
    return cv2.connectedComponents(mask, connectivity=8)[0] - 1


@pytest.mark.parametrize("image_size", [32, 64, 72])
def test_shapes_and_dtypes(image_size):
    config = dataclasses.replace(SMALL, image_size=image_size, validation_examples=11)
    data = synthetic.generate(config, "validation")
    assert set(data) == {"image", "label", "mask", "evidence"}
    assert data["image"].shape == (11, image_size, image_size, 3) and data["image"].dtype == np.uint8
    assert data["label"].shape == (11,) and data["label"].dtype == np.int64
    assert data["mask"].shape == (11, image_size, image_size) and data["mask"].dtype == np.uint8
    assert data["evidence"].shape == (11, image_size, image_size) and data["evidence"].dtype == np.uint8


def test_same_seed_gives_identical_bytes(small_train):
    again = synthetic.generate(SMALL, "train")
    for name in small_train:
        assert small_train[name].tobytes() == again[name].tobytes()


def test_other_seed_and_other_split_differ(small_train):
    other_seed = synthetic.generate(dataclasses.replace(SMALL, seed=4), "train")
    validation = synthetic.generate(dataclasses.replace(SMALL, validation_examples=120), "validation")
    for other in (other_seed, validation):
        assert not np.array_equal(other["image"], small_train["image"])
        assert not np.array_equal(other["mask"], small_train["mask"])
        assert not np.array_equal(other["label"], small_train["label"])


def test_labels_balanced_and_shuffled():
    config = dataclasses.replace(SMALL, validation_examples=53)
    labels = synthetic.generate(config, "validation")["label"]
    counts = np.bincount(labels, minlength=config.num_classes)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 53
    assert not np.array_equal(labels, np.arange(53) % config.num_classes)


def test_masks_binary_and_nonempty(small_train):
    masks = small_train["mask"]
    assert set(np.unique(masks)) == {0, 1}
    assert masks.reshape(len(masks), -1).sum(axis=1).min() > 0


def test_mask_is_exactly_the_object_pixels():
    # On a flat background without clutter every pixel outside the mask has the
    # background colour and every pixel inside does not: a mask that missed an
    # object pixel or took in a background pixel fails one of the two.
    data = synthetic.generate(FLAT, "train")
    for image, mask in zip(data["image"], data["mask"]):
        outside = image[mask == 0]
        background = outside[0]
        assert np.all(outside == background)
        assert not np.any(np.all(image[mask == 1] == background, axis=-1))


def test_clutter_stays_out_of_the_mask(small_train):
    # Objects have their own random stream, so turning clutter off changes only
    # the clutter: the masks and the object pixels must stay identical, and
    # every pixel that clutter changes must lie outside the mask.
    clean = synthetic.generate(NO_CLUTTER, "train")
    np.testing.assert_array_equal(clean["label"], small_train["label"])
    np.testing.assert_array_equal(clean["mask"], small_train["mask"])
    inside = small_train["mask"] == 1
    np.testing.assert_array_equal(small_train["image"][inside], clean["image"][inside])
    changed = np.any(small_train["image"] != clean["image"], axis=-1)
    assert changed.mean() > 0.01  # clutter is actually drawn
    kernel = np.ones((3, 3), np.uint8)
    for mask, clutter in zip(small_train["mask"], changed):
        assert not np.any(clutter & (cv2.dilate(mask, kernel) == 1))  # not even touching


def test_objects_contrast_with_their_surroundings(small_train):
    kernel = np.ones((3, 3), np.uint8)
    for image, mask in zip(small_train["image"].astype(np.float32), small_train["mask"]):
        ring = (cv2.dilate(mask, kernel) - mask) == 1
        distance = np.linalg.norm(np.median(image[mask == 1], axis=0) - image[ring].mean(axis=0))
        assert distance > 40


def test_colour_carries_no_class_information():
    data = synthetic.generate(dataclasses.replace(SMALL, train_examples=500), "train")
    object_means = np.array([image[mask == 1].mean(axis=0) for image, mask in zip(data["image"], data["mask"])])
    overall = object_means.mean(axis=0)
    for label in range(SMALL.num_classes):
        # Each channel's mean over ~100 objects has a standard error of ~7.
        assert np.all(np.abs(object_means[data["label"] == label].mean(axis=0) - overall) < 30)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 1.0])
def test_multi_instance_fraction(fraction):
    config = dataclasses.replace(SMALL, multi_instance_fraction=fraction, train_examples=200)
    counts = np.array([count_instances(mask) for mask in synthetic.generate(config, "train")["mask"]])
    assert counts.min() >= 1 and counts.max() <= 3
    assert abs(np.mean(counts > 1) - fraction) <= 0.02
    if fraction == 1.0:
        assert set(counts) == {2, 3}


def test_disk_and_disk_sticker_differ_only_by_a_small_patch():
    config = dataclasses.replace(SMALL, classes=("disk", "disk_sticker"), multi_instance_fraction=0.0,
                                 train_examples=200)
    data = synthetic.generate(config, "train")
    areas, patches = {0: [], 1: []}, {0: [], 1: []}
    for image, mask, label in zip(data["image"], data["mask"], data["label"]):
        colours, counts = np.unique(image[mask == 1], axis=0, return_counts=True)
        areas[label].append(counts.sum())
        patches[label].append(counts.sum() - counts.max())  # pixels not of the main colour
    assert abs(np.mean(areas[1]) / np.mean(areas[0]) - 1.0) < 0.1
    assert set(patches[0]) == {0}
    assert set(patches[1]) <= {16, 25}  # 4x4 or 5x5 at 64x64


def test_load_caches_and_reads_back(tmp_path, monkeypatch):
    first = synthetic.load(SMALL, "validation", tmp_path)
    path = synthetic.cache_path(SMALL, "validation", tmp_path)
    assert path.exists() and sorted(p.name for p in tmp_path.iterdir()) == [path.name]

    def fail(*args):
        raise AssertionError("generate called although a cache exists")

    monkeypatch.setattr(synthetic, "generate", fail)
    second = synthetic.load(SMALL, "validation", tmp_path)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
        assert first[name].dtype == second[name].dtype


def test_load_uses_environment_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASCAM_CACHE", str(tmp_path))
    synthetic.load(SMALL, "validation")
    assert synthetic.cache_path(SMALL, "validation", tmp_path).exists()


def test_cache_key_depends_on_config():
    assert synthetic.cache_key(SMALL) == synthetic.cache_key(dataclasses.replace(SMALL))
    assert synthetic.cache_key(SMALL) != synthetic.cache_key(dataclasses.replace(SMALL, seed=4))
    assert synthetic.cache_key(SMALL) != synthetic.cache_key(dataclasses.replace(SMALL, speckle_fraction=0.02))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape"])
def test_corrupt_cache_is_regenerated(tmp_path, damage):
    path = synthetic.cache_path(SMALL, "validation", tmp_path)
    expected = synthetic.load(SMALL, "validation", tmp_path)
    if damage == "garbage":
        path.write_bytes(b"not a zip file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        np.savez(path, **{name: array[:5] for name, array in expected.items()})
    again = synthetic.load(SMALL, "validation", tmp_path)
    for name in expected:
        np.testing.assert_array_equal(again[name], expected[name])
    np.testing.assert_array_equal(synthetic.load(SMALL, "validation", tmp_path)["image"], expected["image"])


def test_samples_figure_is_a_small_png(tmp_path):
    path = tmp_path / "docs" / "samples.png"
    synthetic.save_samples_figure(path, dataclasses.replace(SMALL, classes=("disk", "disk_sticker")), per_class=2)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) < 300_000
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    assert [p.name for p in path.parent.iterdir()] == ["samples.png"]


@pytest.mark.parametrize("call, received", [
    (lambda: synthetic.generate(SMALL, "test"), "split='test'"),
    (lambda: synthetic.load(SMALL, "training"), "split='training'"),
    (lambda: synthetic.ShapesConfig(image_size=16), "image_size=16"),
    (lambda: synthetic.ShapesConfig(train_examples=0), "train_examples=0"),
    (lambda: synthetic.ShapesConfig(validation_examples=-5), "validation_examples=-5"),
    (lambda: synthetic.ShapesConfig(classes=("disk", "hexagon")), "hexagon"),
    (lambda: synthetic.ShapesConfig(classes=("disk", "disk")), "classes=('disk', 'disk')"),
    (lambda: synthetic.ShapesConfig(classes=()), "classes=()"),
    (lambda: synthetic.ShapesConfig(multi_instance_fraction=1.5), "multi_instance_fraction=1.5"),
    (lambda: synthetic.ShapesConfig(seed=-1), "seed=-1"),
    (lambda: synthetic.ShapesConfig(lines_per_image=(3, 1)), "lines_per_image=(3, 1)"),
    (lambda: synthetic.save_samples_figure("unused.png", SMALL, per_class=0), "per_class=0"),
])
def test_invalid_arguments_raise_with_received_value(call, received):
    with pytest.raises(ValueError, match="Received") as error:
        call()
    assert received in str(error.value)
