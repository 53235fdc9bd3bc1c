"""VOC box files -> masks, and masks through the evaluation crop."""

import numpy as np
import pytest
import tensorflow as tf
from helpers_ilsvrc import solid_image, write_voc_xml

from kerascam.data import boxes as boxes_lib
from kerascam.data import preprocessing

WNID = "n01751748"


def test_parse_voc_xml_reads_size_boxes_and_names(tmp_path):
    path = tmp_path / "ILSVRC2012_val_00000001.xml"
    write_voc_xml(path, 500, 375, [(WNID, 1, 2, 30, 40), ("n09193705", 100, 50, 500, 375)])
    width, height, boxes, names = boxes_lib.parse_voc_xml(path)
    assert (width, height) == (500, 375)
    assert boxes.dtype == np.int32
    np.testing.assert_array_equal(boxes, [[1, 2, 30, 40], [100, 50, 500, 375]])
    assert names == (WNID, "n09193705")


def test_two_boxes_give_their_union():
    # VOC (1,1)-(4,3) is columns 0..3, rows 0..2: 12 pixels; (3,2)-(6,5) is
    # columns 2..5, rows 1..4: 16 pixels; they share columns 2..3 x rows 1..2.
    mask = boxes_lib.boxes_to_mask([[1, 1, 4, 3], [3, 2, 6, 5]], 8, 10)
    assert mask.dtype == np.uint8 and mask.shape == (8, 10)
    assert mask.sum() == 12 + 16 - 4
    expected = np.zeros((8, 10), np.uint8)
    expected[0:3, 0:4] = 1
    expected[1:5, 2:6] = 1
    np.testing.assert_array_equal(mask, expected)


def test_edge_boxes_use_pixel_centres_and_clip():
    # Edges 0.4..2.6 hold the centres 0.5, 1.5, 2.5; boxes past the border clip.
    mask = boxes_lib.boxes_to_mask([[0.4, 0.4, 2.6, 1.4], [8, 5, 20, 20]], 6, 10, one_based_inclusive=False)
    expected = np.zeros((6, 10), np.uint8)
    expected[0:1, 0:3] = 1
    expected[5:6, 8:10] = 1
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(boxes_lib.voc_to_edges([[1, 2, 3, 4]]), [[0, 1, 3, 4]])


def test_box_mask_for_file_finds_the_xml_of_a_jpeg(tmp_path):
    write_voc_xml(tmp_path / "ILSVRC2012_val_00000007.xml", 12, 10, [(WNID, 2, 3, 5, 4)])
    mask = boxes_lib.box_mask_for_file(str(tmp_path), b"some/dir/ILSVRC2012_val_00000007.JPEG", (10, 12, 3))
    assert mask.shape == (10, 12)
    expected = np.zeros((10, 12), np.uint8)
    expected[2:4, 1:5] = 1
    np.testing.assert_array_equal(mask, expected)


def test_boxes_scale_when_the_xml_size_differs_from_the_image(tmp_path):
    # The XML describes a 48x32 image; the decoded image is 96x64 (twice as
    # large): the box's edges double.
    write_voc_xml(tmp_path / "ILSVRC2012_val_00000002.xml", 48, 32, [(WNID, 5, 3, 12, 10)])
    mask = boxes_lib.box_mask_for_file(tmp_path, "ILSVRC2012_val_00000002.JPEG", (64, 96))
    expected = np.zeros((64, 96), np.uint8)
    expected[4:20, 8:24] = 1  # edges (4, 2, 12, 10) x 2
    np.testing.assert_array_equal(mask, expected)


def test_missing_xml_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="ILSVRC2012_val_00000003.xml"):
        boxes_lib.box_mask_for_file(tmp_path, "ILSVRC2012_val_00000003.JPEG", (4, 4))


@pytest.mark.parametrize(
    "prologue",
    [
        '<!DOCTYPE annotation [<!ENTITY lol "lol">]>',
        '<!ENTITY x SYSTEM "file:///etc/passwd">',
        "<!doctype annotation>",
    ],
)
def test_dtd_and_entities_are_refused(tmp_path, prologue):
    path = tmp_path / "ILSVRC2012_val_00000001.xml"
    write_voc_xml(path, 4, 4, [(WNID, 1, 1, 2, 2)], prologue=prologue)
    with pytest.raises(ValueError, match="DTD or entities"):
        boxes_lib.parse_voc_xml(path)


def test_malformed_xml_is_a_value_error(tmp_path):
    path = tmp_path / "bad.xml"
    path.write_text("<annotation><size><width>3</width>")
    with pytest.raises(ValueError, match="not well-formed"):
        boxes_lib.parse_voc_xml(path)


def _center_crop_mask(tmp_path, image_height, image_width, voc_box, size=56):
    write_voc_xml(tmp_path / "ILSVRC2012_val_00000001.xml", image_width, image_height, [(WNID, *voc_box)])
    examples = tf.data.Dataset.from_tensors(
        {"image": solid_image(image_height, image_width, 90), "file_name": tf.constant("ILSVRC2012_val_00000001.JPEG")}
    )
    examples = boxes_lib.with_box_masks(examples, tmp_path)
    examples = examples.map(lambda ex: preprocessing.resize_center_crop(ex, size))
    (example,) = list(examples.as_numpy_iterator())
    assert example["image"].shape == (size, size, 3) and example["mask"].shape == (size, size)
    return example["mask"]


def test_center_crop_keeps_only_the_visible_part_of_a_box(tmp_path):
    # 64x96 at size 56 (56 / 0.875 = 64): no resize, crop rows 4..59 and
    # columns 20..75. The box's edges (0, 10)-(30, 20) land on (-20, 6)-(10, 16):
    # 10 columns x 10 rows remain.
    mask = _center_crop_mask(tmp_path, 64, 96, (1, 11, 30, 20))
    expected = np.zeros((56, 56), np.uint8)
    expected[6:16, 0:10] = 1
    np.testing.assert_array_equal(mask, expected)
    assert mask.sum() == 100


def test_center_crop_after_a_resize_moves_the_mask_with_the_image(tmp_path):
    # 128x192 is first halved to 64x96, then cropped as above. Edges
    # (0, 20)-(60, 40) become (0, 10)-(30, 20), then (-20, 6)-(10, 16).
    mask = _center_crop_mask(tmp_path, 128, 192, (1, 21, 60, 40))
    expected = np.zeros((56, 56), np.uint8)
    expected[6:16, 0:10] = 1
    np.testing.assert_array_equal(mask, expected)


def test_with_box_masks_reports_a_missing_xml(tmp_path):
    examples = tf.data.Dataset.from_tensors(
        {"image": solid_image(4, 4, 0), "file_name": tf.constant("ILSVRC2012_val_00000009.JPEG")}
    )
    with pytest.raises(Exception, match="ILSVRC2012_val_00000009.xml"):
        list(boxes_lib.with_box_masks(examples, tmp_path))
