"""Bad files in image folders: unreadable ones are skipped and reported before
the first step, readable odd formats become uint8 RGB with the right values."""

import io
import logging
import os
import types

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kerascam.data import describe_skipped, folder, load_split
from kerascam.data.folder import decode_image, load_folder, scan_split
from kerascam.data.pipeline import training_batches


def _jpeg(image, mode=None):
    buffer = io.BytesIO()
    Image.fromarray(image, mode).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _png(image):
    """PNG through OpenCV, which writes 16-bit samples; ``image`` is RGB(A) or grey."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def _cmyk_jpeg():
    """16x16 CMYK JPEG: red (C=0, M=Y=255) on the left half, blue (C=M=255) on the right."""
    image = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    image.paste((255, 255, 0, 0), (8, 0, 16, 16))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _noise_jpeg():
    return _jpeg(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _rgba():
    image = np.zeros((2, 2, 4), np.uint8)
    image[0] = (10, 20, 30, 0)  # fully transparent: its colour is still kept
    image[1] = (200, 100, 50, 255)
    return image


def _gray16():
    image = np.full((4, 6), 65535, np.uint16)
    image[:, 3:] = 257 * 40
    return image


def _big():
    image = np.full((6000, 6000, 3), 90, np.uint8)
    image[-64:, -64:] = 200
    ok, encoded = cv2.imencode(".jpg", image)
    return encoded.tobytes()


# Every bad and odd case in one split; the reason each unreadable file gives.
UNREADABLE = {
    "cat/empty.jpg": "empty file",
    "cat/notes.jpg": "not a decodable image: Unknown image file format",
    "cat/truncated.jpg": "not a decodable image: jpeg::Uncompress failed",
    "dog/._resource.jpg": "not a decodable image: Unknown image file format",
    "dog/broken_link.jpg": "cannot be read: No such file or directory",
    "dog/folder.jpg": "cannot be read: Is a directory",
    "dog/truncated.png": "not a decodable image: Invalid PNG data",
}


def _write_zoo(root):
    split = os.path.join(root, "train")
    jpeg = _noise_jpeg()
    files = {
        "cat/good.jpg": _jpeg(np.full((8, 8, 3), 40, np.uint8)),
        "cat/trailing.jpg": jpeg + b"\0bytes after the end marker",
        "cat/truncated.jpg": jpeg[: len(jpeg) // 2],
        "cat/empty.jpg": b"",
        "cat/notes.jpg": b"not an image, whatever its name says\n",
        "cat/gray.png": _png(np.full((5, 7), 77, np.uint8)),
        "cat/rgba.png": _png(_rgba()),
        "cat/gray16.png": _png(_gray16()),
        "cat/rgb16.png": _png(np.broadcast_to(np.array([65535, 257 * 100, 0], np.uint16), (3, 3, 3)).copy()),
        "cat/cmyk.jpg": _cmyk_jpeg(),
        "dog/big.jpg": _big(),
        "dog/tiny.png": _png(np.array([[[1, 2, 3]]], np.uint8)),
        "dog/tiny.jpg": _jpeg(np.full((1, 1), 200, np.uint8)),
        "dog/truncated.png": _png(np.full((32, 32, 3), 9, np.uint8))[:60],
        "dog/._resource.jpg": b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64),  # AppleDouble
    }
    for name, data in files.items():
        _write(os.path.join(split, name), data)
    os.symlink(os.path.join(split, "dog", "gone.jpg"), os.path.join(split, "dog", "broken_link.jpg"))
    os.makedirs(os.path.join(split, "dog", "folder.jpg"))
    return files


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """``(root, load_folder's result, {file_name: (label, image)})``, the split read once."""
    root = tmp_path_factory.mktemp("zoo")
    _write_zoo(root)
    loaded = load_folder(root, "train")
    images = {ex["file_name"].decode(): (int(ex["label"]), ex["image"]) for ex in loaded[0].as_numpy_iterator()}
    return root, loaded, images


def test_unreadable_files_are_found_with_their_reason(zoo):
    root, _, _ = zoo
    split_dir = os.path.join(root, "train")
    names = [f"{c}/{n}" for c in ("cat", "dog") for n in sorted(os.listdir(os.path.join(split_dir, c)))]
    reasons = scan_split(split_dir, names)
    assert sorted(reasons) == sorted(UNREADABLE)
    for name, start in UNREADABLE.items():
        assert reasons[name].startswith(start), (name, reasons[name])


def test_only_readable_files_are_loaded_and_counted(zoo):
    _, (examples, num_examples, num_classes, class_names, skipped), images = zoo
    readable = {
        "cat/good.jpg", "cat/trailing.jpg", "cat/gray.png", "cat/rgba.png", "cat/gray16.png", "cat/rgb16.png",
        "cat/cmyk.jpg", "dog/big.jpg", "dog/tiny.png", "dog/tiny.jpg",
    }
    assert skipped == tuple(sorted(UNREADABLE))
    assert (num_examples, num_classes, class_names) == (10, 2, ("cat", "dog"))
    assert int(examples.cardinality()) == num_examples
    assert set(images) == readable
    labels = {name: label for name, (label, _) in images.items()}
    assert labels == {name: int(name.startswith("dog/")) for name in readable}
    for name, (_, image) in images.items():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, (name, image.shape)


def _pixel(images, name, row, col):
    return images[name][1][row, col].tolist()


def test_grayscale_png_repeats_the_level(zoo):
    images = zoo[2]
    assert images["cat/gray.png"][1].shape == (5, 7, 3)
    assert np.all(images["cat/gray.png"][1] == 77)


def test_rgba_png_keeps_rgb_and_drops_alpha(zoo):
    images = zoo[2]
    assert _pixel(images, "cat/rgba.png", 0, 1) == [10, 20, 30]  # alpha 0, not blended to black or white
    assert _pixel(images, "cat/rgba.png", 1, 0) == [200, 100, 50]


def test_16_bit_png_is_scaled_to_8_bits(zoo):
    images = zoo[2]
    assert images["cat/gray16.png"][1].shape == (4, 6, 3)
    assert _pixel(images, "cat/gray16.png", 2, 0) == [255, 255, 255]  # 65535
    assert _pixel(images, "cat/gray16.png", 2, 5) == [40, 40, 40]  # 257 * 40
    assert np.all(images["cat/rgb16.png"][1] == [255, 100, 0])


def test_cmyk_jpeg_gives_rgb_colours(zoo):
    images = zoo[2]
    assert _pixel(images, "cat/cmyk.jpg", 8, 3) == pytest.approx([255, 0, 0], abs=12)  # red
    assert _pixel(images, "cat/cmyk.jpg", 8, 12) == pytest.approx([0, 0, 255], abs=12)  # blue


def test_very_large_and_one_pixel_images_keep_their_size(zoo):
    images = zoo[2]
    big = images["dog/big.jpg"][1]
    assert big.shape == (6000, 6000, 3)
    assert big[0, 0].tolist() == pytest.approx([90] * 3, abs=2)
    assert big[-1, -1].tolist() == pytest.approx([200] * 3, abs=2)
    assert images["dog/tiny.png"][1].tolist() == [[[1, 2, 3]]]
    assert images["dog/tiny.jpg"][1].tolist() == [[pytest.approx([200] * 3, abs=2)]]


def test_jpeg_with_bytes_after_its_end_is_kept_intact(zoo):
    images = zoo[2]
    np.testing.assert_array_equal(images["cat/trailing.jpg"][1], decode_image(_noise_jpeg()).numpy())
    assert _pixel(images, "cat/good.jpg", 4, 4) == pytest.approx([40] * 3, abs=2)


def test_truncated_files_fail_in_tensorflow_rather_than_decode_grey():
    # The reason no end-marker rule is needed: TF refuses what PIL or OpenCV
    # would return with grey rows.
    jpeg = _noise_jpeg()
    for data in (jpeg[: len(jpeg) // 2], jpeg[:-2], _png(np.full((32, 32, 3), 9, np.uint8))[:-12]):
        with pytest.raises(tf.errors.InvalidArgumentError):
            decode_image(data)


def test_decode_image_is_the_same_eagerly_and_in_a_dataset(zoo):
    # The scan decodes eagerly, the dataset in a graph: they must agree.
    files = _write_zoo(zoo[0] / "again")
    readable = sorted(name for name in files if name not in UNREADABLE and name != "dog/big.jpg")
    in_map = tf.data.Dataset.from_tensor_slices([files[name] for name in readable]).map(decode_image)
    for name, mapped in zip(readable, in_map.as_numpy_iterator()):
        np.testing.assert_array_equal(mapped, decode_image(files[name]).numpy(), err_msg=name)
        np.testing.assert_array_equal(mapped, zoo[2][name][1], err_msg=name)


def _small_folder(root):
    """Two classes, five good images, three bad ones."""
    for label, class_name in enumerate(("a", "b")):
        for number in range(2 + label):
            image = np.full((6, 5, 3), 10 * number + label, np.uint8)
            _write(os.path.join(root, "train", class_name, f"{number}.png"), _png(image))
    _write(os.path.join(root, "train", "a", "empty.jpg"), b"")
    _write(os.path.join(root, "train", "b", "half.jpg"), _noise_jpeg()[:300])
    _write(os.path.join(root, "train", "b", "text.png"), b"text")


def test_skipped_files_are_known_before_the_first_step_and_same_every_epoch(tmp_path, monkeypatch, caplog):
    _small_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger=folder.__name__):
        examples, num_examples, _, _, skipped = load_folder(tmp_path, "train", shuffle_files=True)
    assert skipped == ("a/empty.jpg", "b/half.jpg", "b/text.png") and num_examples == 5
    assert "skipped 3 unreadable files: a/empty.jpg (empty file), b/half.jpg (not a decodable image" in caplog.text

    # Nothing is checked any more once training runs.
    monkeypatch.setattr(folder, "check_file", lambda path, **limit: pytest.fail(f"checked {path} during an epoch"))
    good = {"a/0.png", "a/1.png", "b/0.png", "b/1.png", "b/2.png"}
    orders = []
    for epoch in range(3):
        names = [ex["file_name"].decode() for ex in examples.as_numpy_iterator()]
        assert sorted(names) == sorted(good)
        orders.append(names)
        batches = list(training_batches(examples, 2, epoch=epoch, seed=0, crop_size=4, num_examples=num_examples))
        assert [b["image"].shape for b in batches] == [(2, 4, 4, 3)] * 2  # 5 // 2 full batches, no error
    assert len({tuple(order) for order in orders}) > 1  # the files are reshuffled, the set is not


def test_the_check_is_cached_and_only_new_or_changed_files_are_checked_again(tmp_path, monkeypatch):
    _small_folder(tmp_path)
    first = load_folder(tmp_path, "train")
    checked = []
    check_file = folder.check_file
    monkeypatch.setattr(
        folder, "check_file", lambda path, **limit: checked.append(os.path.basename(path)) or check_file(path, **limit)
    )

    second = load_folder(tmp_path, "train")
    assert checked == [] and second[1:] == first[1:]

    # A repaired file (new size and time) and a new one are checked, nothing else.
    _write(os.path.join(tmp_path, "train", "b", "half.jpg"), _png(np.full((3, 3, 3), 70, np.uint8)))
    _write(os.path.join(tmp_path, "train", "b", "new.jpg"), b"")
    examples, num_examples, _, _, skipped = load_folder(tmp_path, "train")
    assert sorted(checked) == ["half.jpg", "new.jpg"]
    assert skipped == ("a/empty.jpg", "b/new.jpg", "b/text.png") and num_examples == 6
    repaired = [ex["image"] for ex in examples.as_numpy_iterator() if ex["file_name"] == b"b/half.jpg"]
    assert [image.tolist() for image in repaired] == [np.full((3, 3, 3), 70).tolist()]

    # A damaged cache is ignored: everything is checked again, same result.
    cache = folder._cache_path(os.path.join(tmp_path, "train"))
    with open(cache, "w") as f:
        f.write("{not json")
    checked.clear()
    assert load_folder(tmp_path, "train")[4] == skipped and len(checked) == 9


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"a": ["x.jpg"], "b": ["y.png", "z.jpg"]}, r"No readable images in \S+train: all 3 files failed to decode\."),
        ({"b": ["y.png"]}, r"Class folder \S+b has no readable images \(all its files failed to decode\)\."),
    ],
)
def test_nothing_readable_raises(tmp_path, bad, message):
    for class_name in ("a", "b"):
        names = bad.get(class_name) or ["good.png"]
        for name in names:
            data = b"" if class_name in bad else _png(np.zeros((2, 2, 3), np.uint8))
            _write(os.path.join(tmp_path, "train", class_name, name), data)
    with pytest.raises(ValueError, match=message) as error:
        load_folder(tmp_path, "train")
    assert "\n" not in str(error.value)


def test_load_split_reports_the_skipped_files(tmp_path):
    _small_folder(tmp_path)
    config = types.SimpleNamespace(dataset=f"folder:{tmp_path}", image_size=32)
    split = load_split(config, "train")
    assert (split.num_examples, split.needs_crop) == (5, True)
    assert split.skipped == ("a/empty.jpg", "b/half.jpg", "b/text.png")
    assert describe_skipped(split.skipped) == "skipped 3 unreadable files: a/empty.jpg, b/half.jpg, b/text.png"
    assert describe_skipped(split.skipped, limit=1) == "skipped 3 unreadable files: a/empty.jpg and 2 more"
    assert describe_skipped(("a/x.jpg",)) == "skipped 1 unreadable file: a/x.jpg"
    assert describe_skipped(()) == ""


def test_training_goes_on_and_names_the_skipped_files_at_the_end(tmp_path, capsys):
    import json

    from kerascam.cli import run_cli, train_main

    # train.py's own code path, in this process.
    _small_folder(tmp_path / "data")
    for class_name in ("a", "b"):
        _write(os.path.join(tmp_path, "data", "validation", class_name, "0.png"), _png(np.zeros((5, 5, 3), np.uint8)))
    _write(os.path.join(tmp_path, "data", "validation", "a", "cut.png"), _png(np.zeros((5, 5, 3), np.uint8))[:20])
    code = run_cli(train_main, [
        "--model", "unet", "--preset", "smoke", "--dataset", f"folder:{tmp_path / 'data'}",
        "--batch-size", "2", "--no-saved-model", "--workdir", str(tmp_path / "runs"), "--quiet",
    ], "train.py")
    out, err = capsys.readouterr()
    assert code == 0, err
    expected = ["train/a/empty.jpg", "train/b/half.jpg", "train/b/text.png", "validation/a/cut.png"]
    assert f"skipped 4 unreadable files: {', '.join(expected)} (listed in run.json)" in out
    summary = json.loads((tmp_path / "runs" / "unet" / "run.json").read_text())
    assert summary["skipped_files"] == expected and summary["epochs_completed"] == 1
