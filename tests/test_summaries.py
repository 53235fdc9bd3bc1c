import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerascam.cams import explain
from kerascam.figures import overlay
from kerascam.models import build_model
from kerascam.summaries import describe_classes, write_cam_summaries

CLASS_NAMES = ["disk", "square", "triangle"]


@pytest.fixture(scope="module")
def unet():
    keras.utils.set_random_seed(2)
    return build_model("unet", 32, 3, unet_filters=4)


def _read_images(log_dir, tag):
    """(step, decoded PNGs, description) of every summary `tag` in the event files of `log_dir`."""
    found = []
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    # The images plugin's tensor: [width, height, PNG, PNG, ...] as strings.
                    strings = tf.make_ndarray(value.tensor)
                    pngs = np.stack([tf.io.decode_png(png).numpy() for png in strings[2:]])
                    size = (int(strings[1]), int(strings[0]))
                    found.append((event.step, size, pngs, value.metadata.summary_description))
    return found


def test_overlays_are_written_at_the_step_and_read_back_exactly(tmp_path, unet):
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("uint8")
    labels = np.array([2, 0, 1])
    writer = tf.summary.create_file_writer(str(tmp_path))
    written = write_cam_summaries(writer, unet, images, 7, class_names=CLASS_NAMES, labels=labels)
    writer.close()

    maps = explain(unet, images, "gradcam++")
    assert np.ptp(maps) > 0
    expected = np.stack([overlay(image, cam) for image, cam in zip(images, maps)])
    [(step, size, pngs, description)] = _read_images(str(tmp_path), "cam/gradcam++")
    assert step == 7 and size == (32, 32)
    np.testing.assert_array_equal(written, expected)
    np.testing.assert_array_equal(pngs, expected)  # PNG is lossless
    predicted = np.argmax(unet(images.astype("float32")), axis=-1)
    assert description == describe_classes(predicted, labels, CLASS_NAMES)
    for i in range(3):
        assert f"| {i} | {CLASS_NAMES[predicted[i]]} | {CLASS_NAMES[labels[i]]} |" in description


def test_description_without_labels_or_names():
    assert describe_classes(np.array([1, 0])) == "| image | predicted |\n|---|---|\n| 0 | 1 |\n| 1 | 0 |"


@pytest.mark.parametrize(
    "images, options, message",
    [
        (np.zeros((2, 32, 32, 3), "float32"), {}, "uint8 batch"),
        (np.zeros((2, 32, 32, 3), "uint8"), {"labels": [0]}, "one class per image"),
        (np.zeros((2, 32, 32, 3), "uint8"), {"class_names": ["a", "b"]}, "3 classes"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, unet, images, options, message):
    writer = tf.summary.create_file_writer(str(tmp_path))
    with pytest.raises(ValueError, match=message) as error:
        write_cam_summaries(writer, unet, images, 0, **options)
    assert "\n" not in str(error.value)
