"""The shapes dataset's evidence mask (the sticker of disk_sticker) from drawing to batches."""

import dataclasses

import cv2
import numpy as np
import pytest
import tensorflow as tf

from kerascam import configs
from kerascam.data import load_split, pipeline, preprocessing, synthetic

# 48x48: stickers of 3 or 4 px a side.
CONFIG = synthetic.ShapesConfig(image_size=48, train_examples=40, validation_examples=60, seed=7)
STICKER = CONFIG.classes.index("disk_sticker")


@pytest.fixture(scope="module")
def data():
    return synthetic.generate(CONFIG, "validation")


def components(binary):
    """Label image of the 8-connected components of a 0/1 array, and their count."""
    count, labels = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
    return labels, count - 1


def test_evidence_is_binary_uint8_and_empty_for_other_classes(data):
    evidence = data["evidence"]
    assert evidence.shape == data["mask"].shape and evidence.dtype == np.uint8
    assert set(np.unique(evidence)) == {0, 1}
    others = data["label"] != STICKER
    assert others.any() and not evidence[others].any()


@pytest.mark.parametrize("image_size, areas", [(48, {9, 16}), (64, {16, 25})])
def test_evidence_is_exactly_the_sticker_of_every_instance(image_size, areas):
    # Objects are painted in one flat colour and clutter never touches them,
    # so inside each disk the pixels of another colour are its sticker, read
    # from the image alone, independently of how the evidence is made.
    config = dataclasses.replace(CONFIG, image_size=image_size, classes=("disk", "disk_sticker"),
                                 multi_instance_fraction=0.5)
    data = synthetic.generate(config, "validation")
    stickers = np.flatnonzero(data["label"] == 1)
    assert len(stickers) == 30
    for index in stickers:
        image, mask, evidence = data["image"][index], data["mask"][index], data["evidence"][index]
        assert evidence.any()
        assert np.all(mask[evidence == 1] == 1)
        instances, count = components(mask)
        drawn = np.zeros_like(evidence)
        for instance in range(1, count + 1):
            pixels = instances == instance
            colours, counts = np.unique(image[pixels], axis=0, return_counts=True)
            disk_colour = colours[np.argmax(counts)]
            drawn[pixels & np.any(image != disk_colour, axis=-1)] = 1
            # One square sticker per instance, of the configured side.
            patch, patches = components(evidence * pixels)
            assert patches == 1
            rows, cols = np.nonzero(patch)
            side = rows.max() - rows.min() + 1
            assert side == cols.max() - cols.min() + 1 and side * side == len(rows) in areas
        np.testing.assert_array_equal(evidence, drawn)


def test_computing_evidence_changes_nothing_else(data, monkeypatch):
    # The evidence is read from the drawing, not drawn: generating without it
    # gives the same bytes for everything else (no random stream moves).
    monkeypatch.setattr(synthetic, "_sticker_pixels", lambda layer: np.zeros_like(layer))
    without = synthetic.generate(CONFIG, "validation")
    assert not without["evidence"].any()
    for name in ("image", "label", "mask"):
        assert without[name].tobytes() == data[name].tobytes()


def test_evidence_survives_the_cache(tmp_path, data, monkeypatch):
    first = synthetic.load(CONFIG, "validation", tmp_path)
    np.testing.assert_array_equal(first["evidence"], data["evidence"])

    def fail(*args):
        raise AssertionError("generate called although a cache exists")

    monkeypatch.setattr(synthetic, "generate", fail)
    again = synthetic.load(CONFIG, "validation", tmp_path)
    assert again["evidence"].dtype == np.uint8
    np.testing.assert_array_equal(again["evidence"], data["evidence"])


def test_cache_without_evidence_is_regenerated(tmp_path, data):
    # A file of the format before the evidence, under the current name.
    path = synthetic.cache_path(CONFIG, "validation", tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, image=data["image"], label=data["label"], mask=data["mask"])
    loaded = synthetic.load(CONFIG, "validation", tmp_path)
    for name in data:
        np.testing.assert_array_equal(loaded[name], data[name])
    with np.load(path) as archive:
        assert "evidence" in archive.files


def test_cache_key_changes_with_the_format(monkeypatch):
    # Files written before the evidence existed have other names: never read.
    current = synthetic.cache_key(CONFIG)
    monkeypatch.setattr(synthetic, "FORMAT_VERSION", 2)
    assert synthetic.cache_key(CONFIG) != current


@pytest.fixture
def shapes_split(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASCAM_CACHE", str(tmp_path))
    config = dataclasses.replace(configs.smoke(), image_size=48, validation_examples=20)
    expected = synthetic.generate(
        synthetic.ShapesConfig(image_size=48, train_examples=config.train_examples, validation_examples=20),
        "validation",
    )
    return load_split(config, "validation"), expected


def test_load_split_and_evaluation_batches_keep_evidence(shapes_split):
    split, expected = shapes_split
    assert split.examples.element_spec["evidence"] == tf.TensorSpec((48, 48), tf.uint8)
    batches = list(pipeline.evaluation_batches(split.examples, 8).as_numpy_iterator())
    assert [len(batch["evidence"]) for batch in batches] == [8, 8, 4]
    evidence = np.concatenate([batch["evidence"] for batch in batches])
    assert evidence.dtype == np.uint8
    np.testing.assert_array_equal(evidence, expected["evidence"])
    assert evidence[expected["label"] == STICKER].any()


def test_evaluation_crop_moves_evidence_like_the_mask(shapes_split):
    # The evidence of the cropped batch is the mask crop of the evidence.
    split, _ = shapes_split
    cropped = next(pipeline.evaluation_batches(split.examples, 20, crop_size=40).as_numpy_iterator())
    as_mask = split.examples.map(lambda ex: {"image": ex["image"], "mask": ex["evidence"]})
    reference = next(pipeline.evaluation_batches(as_mask, 20, crop_size=40).as_numpy_iterator())
    assert cropped["evidence"].shape == (20, 40, 40)
    np.testing.assert_array_equal(cropped["evidence"], reference["mask"])


@pytest.mark.parametrize("graph", [False, True])
def test_flip_and_random_crop_move_evidence_like_the_mask(graph):
    mask = np.zeros((12, 12), np.uint8)
    mask[2:5, 1:4] = 1
    example = {"image": tf.zeros((12, 12, 3), tf.uint8), "mask": tf.constant(mask), "evidence": tf.constant(mask)}
    steps = [lambda ex, i=i: preprocessing.random_flip(ex, tf.constant([i, 0])) for i in range(4)]
    steps.append(lambda ex: preprocessing.train_crop_and_flip(ex, 8, tf.constant([3, 4]), scale=(0.3, 0.6)))
    outputs = []
    for step in steps:
        out = step(example) if not graph else next(iter(tf.data.Dataset.from_tensors(example).map(step)))
        np.testing.assert_array_equal(out["evidence"], out["mask"])
        outputs.append(out["evidence"].numpy())
    assert any(np.array_equal(out, mask[:, ::-1]) for out in outputs[:4])  # some seed flips
    assert outputs[-1].shape == (8, 8)


def test_other_datasets_have_no_evidence(tmp_path, monkeypatch):
    from helpers_ilsvrc import solid_image, write_image_folder

    monkeypatch.setenv("KERASCAM_CACHE", str(tmp_path / "cache"))
    write_image_folder(tmp_path / "data", {"validation": {"cat": [solid_image(8, 8, 40)], "dog": [solid_image(8, 8, 90)]}})
    config = dataclasses.replace(configs.smoke(), dataset=f"folder:{tmp_path / 'data'}")
    split = load_split(config, "validation")
    batch = next(pipeline.evaluation_batches(split.examples, 2, crop_size=8).as_numpy_iterator())
    assert "evidence" not in split.examples.element_spec and "evidence" not in batch


def test_training_batches_drop_evidence_and_are_otherwise_unchanged(shapes_split):
    split, _ = shapes_split
    without = split.examples.map(lambda ex: {k: v for k, v in ex.items() if k != "evidence"})
    kwargs = dict(epoch=1, seed=5, augment=True)
    batch = next(pipeline.training_batches(split.examples, 8, **kwargs).as_numpy_iterator())
    reference = next(pipeline.training_batches(without, 8, **kwargs).as_numpy_iterator())
    assert set(batch) == {"image", "label", "mask"}
    for name in batch:
        np.testing.assert_array_equal(batch[name], reference[name])
