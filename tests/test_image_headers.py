"""Image sizes read from headers: oversized images (decompression bombs) are
refused before anything decodes them, in folders and in ``read_image``."""

import io
import logging
import os
import resource
import struct
import threading
import time
import types
import zlib

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kerascam.data import describe_skipped, folder, load_split
from kerascam.data.folder import check_file, load_folder
from kerascam.data.images import MAX_PIXELS, ImageError, image_dimensions, image_size, read_image

BOMB_REASON = "20000x20000 pixels (400,000,000) is more than --max-pixels 89,478,485; not decoded"


def _chunk(chunk_type, data):
    return struct.pack(">I", len(data)) + chunk_type + data + struct.pack(">I", zlib.crc32(chunk_type + data))


def _png_bomb(width=20000, height=20000, bit_depth=8, colour_type=2, rows=b"\0" * 64):
    """A PNG whose IHDR claims ``width x height``, with a small IDAT of ``rows``."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def _jpeg_bomb(width=20000, height=20000):
    """SOI, a baseline frame header (SOF0, 3 components) claiming ``width x height``, EOI."""
    components = b"".join(bytes([index, 0x11, 0]) for index in (1, 2, 3))
    frame = struct.pack(">HBHHB", 8 + len(components), 8, height, width, 3) + components
    return b"\xff\xd8" + b"\xff\xc0" + frame + b"\xff\xd9"


def _gif_bomb(frames=((20000, 20000),), screen=(10, 10)):
    """A GIF whose image descriptors claim ``frames`` (width, height) on a small screen, each with 2 bytes of data."""
    data = b"GIF89a" + struct.pack("<HHBBB", *screen, 0, 0, 0)
    for width, height in frames:
        data += b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02" + b"\x02\x4c\x01" + b"\0"
    return data + b"\x3b"


def _cv2(extension, params=()):
    def encode(image):
        ok, encoded = cv2.imencode(extension, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), list(params))
        assert ok
        return encoded.tobytes()

    return encode


def _pillow(image_format, **options):
    def encode(image):
        buffer = io.BytesIO()
        picture = Image.fromarray(image)
        if image_format == "GIF":
            picture = picture.convert("P")
            if options.get("save_all"):  # a second frame, different everywhere
                options["append_images"] = [Image.fromarray(255 - image).convert("P")]
        picture.save(buffer, format=image_format, **options)
        return buffer.getvalue()

    return encode


def _exif():
    exif = Image.Exif()
    exif[0x010E] = "an image description long enough to fill a few kilobytes " * 60  # ImageDescription
    return exif.tobytes()


def _jpeg_with_odd_markers(image):
    """A JPEG with a segment of length 1, a standalone TEM marker, 5 stray bytes and fill bytes before its frame.

    libjpeg reads on past each of them (and TensorFlow decodes the file), so
    a bomb could hide behind any one that the header walk stopped at.
    """
    data = _cv2(".jpg")(image)
    sof = data.index(b"\xff\xc0")
    return data[:2] + b"\xff\xe0\x00\x01" + data[2:sof] + b"\xff\x01" + b"stray" + b"\xff\xff\xff" + data[sof:]


def _webp_bare(quality):
    """A WebP whose RIFF holds the bitstream without its chunk header (libwebp decodes it)."""

    def encode(image):
        bitstream = _cv2(".webp", [cv2.IMWRITE_WEBP_QUALITY, quality])(image)[20:]
        return b"RIFF" + struct.pack("<I", 4 + len(bitstream)) + b"WEBP" + bitstream

    return encode


ENCODERS = {
    "png": _cv2(".png"),
    "jpeg": _cv2(".jpg"),
    "jpeg_progressive": _cv2(".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    "jpeg_exif": _pillow("JPEG", exif=_exif()),
    "jpeg_odd_markers": _jpeg_with_odd_markers,
    "gif": _pillow("GIF"),
    "gif_animated": _pillow("GIF", save_all=True),
    "bmp": _cv2(".bmp"),
    "webp_lossy": _cv2(".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
    "webp_lossless": _cv2(".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
    "webp_extended": _pillow("WEBP", exif=_exif()),
    "webp_bare_lossy": _webp_bare(80),
    "webp_bare_lossless": _webp_bare(101),
}


@pytest.fixture(scope="module")
def encoded():
    """``{name: bytes}`` of one 300x7 image in every format (sizes past 255 catch byte-order mistakes)."""
    image = np.random.default_rng(0).integers(0, 256, (7, 300, 3), np.uint8)
    files = {name: encode(image) for name, encode in ENCODERS.items()}
    # What each case is meant to hold.
    assert b"\xff\xc2" in files["jpeg_progressive"][:2000]  # SOF2
    assert 2 < files["jpeg_exif"].index(b"\xff\xe1") < files["jpeg_exif"].index(b"\xff\xc0") - 3000  # APP1 first
    assert [files[f"webp_{kind}"][12:16] for kind in ("lossy", "lossless", "extended")] == [b"VP8 ", b"VP8L", b"VP8X"]
    assert image_size(files["gif_animated"]).frames == 2
    return files


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_header_size_is_the_decoded_size(encoded, name, tmp_path):
    path = tmp_path / f"image.{name}"
    path.write_bytes(encoded[name])
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (7, 300, 3)
    assert image_dimensions(encoded[name]) == image_dimensions(path) == image_dimensions(str(path)) == (300, 7)


class _CountingReader(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size=-1):
        data = super().read(size)
        self.bytes_read += len(data)
        return data


@pytest.mark.parametrize("name", ["jpeg_exif", "png", "webp_extended"])
def test_only_the_header_is_read(encoded, name):
    # The EXIF block (3 KB here, up to 64 KB) before the JPEG frame header is skipped, not read.
    reader = _CountingReader(encoded[name])
    assert image_dimensions(reader) == (300, 7)
    assert reader.bytes_read <= 64


def test_cut_or_damaged_headers_give_none_never_an_error(encoded):
    for name, data in encoded.items():
        results = [image_dimensions(data[:length]) for length in range(len(data) + 1)]
        # Unknown until the size field is complete, then known for every longer prefix.
        known = results.index((300, 7))
        assert known >= 10 and results[:known] == [None] * known, name
        assert results[known:] == [(300, 7)] * (len(data) + 1 - known), name

    rng = np.random.default_rng(1)
    for name, data in encoded.items():
        for _ in range(200):  # random bytes in the first 64: None or a size, never an exception
            damaged = np.frombuffer(data, np.uint8).copy()
            damaged[rng.integers(0, 64, 3)] = rng.integers(0, 256, 3)
            size = image_dimensions(damaged.tobytes())
            assert size is None or (len(size) == 2 and min(size) > 0), (name, size)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"plain text, whatever the file is called\n", id="text"),
        pytest.param(b"II*\x00\x08\x00\x00\x00" + bytes(64), id="tiff"),  # not a format the decoder reads
        pytest.param(_png_bomb()[:29] + b"\0\0\0\0" + _png_bomb()[33:], id="png_ihdr_crc"),
        pytest.param(_png_bomb(width=0), id="png_width_0"),
        pytest.param(_jpeg_bomb(height=0), id="jpeg_dnl"),  # lines given later by a DNL marker
        pytest.param(b"\xff\xd8\xff\xda\x00\x08" + bytes(6) + _jpeg_bomb()[2:], id="jpeg_scan_first"),
        pytest.param(b"\xff\xd8\xff\xd8" + _jpeg_bomb()[2:], id="jpeg_second_soi"),
        pytest.param(b"\xff\xd8" + b"\xff" * 5000, id="jpeg_fill_to_the_end"),
        pytest.param(b"BM" + bytes(12) + struct.pack("<Iii", 40, 0, 10) + bytes(40), id="bmp_width_0"),
        pytest.param(b"RIFF\x20\x00\x00\x00WEBPVP8Z" + bytes(30), id="webp_unknown_chunk"),
        pytest.param(b"RIFF\x20\x00\x00\x00WEBPVP8 \x10\x00\x00\x00\x01\x00\x00\x9d\x01\x2a" + bytes(12),
                     id="webp_not_a_key_frame"),
    ],
)
def test_unknown_or_damaged_headers_give_none(data):
    assert image_dimensions(data) is None


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    """Paths of a 20,000 x 20,000 PNG, JPEG and GIF (the GIF's screen says 10 x 10), each a few dozen bytes."""
    root = tmp_path_factory.mktemp("bombs")
    (root / "big.png").write_bytes(_png_bomb())
    (root / "big.jpg").write_bytes(_jpeg_bomb())
    (root / "big.gif").write_bytes(_gif_bomb())
    return root / "big.png", root / "big.jpg", root / "big.gif"


def _never_decode(monkeypatch):
    def fail(*args, **kwargs):
        pytest.fail("an oversized image was given to the decoder")

    monkeypatch.setattr(folder, "decode_image", fail)
    monkeypatch.setattr(tf.io, "decode_image", fail)


def test_oversized_images_are_refused_from_their_header_never_decoded(bombs, monkeypatch):
    _never_decode(monkeypatch)
    for path in bombs:
        assert image_dimensions(path) == (20000, 20000)
        assert check_file(path) == BOMB_REASON
        with pytest.raises(ImageError, match=r"^20000x20000 pixels \(400,000,000\) is more than") as error:
            read_image(path)
        assert str(error.value) == error.value.reason == BOMB_REASON and error.value.path == path


def test_an_animation_counts_the_pixels_of_all_its_frames(tmp_path, monkeypatch):
    # giflib holds every frame while TensorFlow returns the first: 3 frames
    # of 36,000,000 pixels each are refused though each is under the limit.
    _never_decode(monkeypatch)
    path = tmp_path / "animation.gif"
    path.write_bytes(_gif_bomb(frames=[(6000, 6000), (100, 100), (6000, 6000)]))
    assert image_size(path) == (6000, 6000, 3, 72_010_000)
    assert check_file(path, max_pixels=72_000_000) == (
        "6000x6000 pixels in 3 frames (72,010,000 in all) is more than --max-pixels 72,000,000; not decoded"
    )
    assert image_size(_gif_bomb(frames=[(300, 20), (50, 400)])) == (300, 400, 2, 120_000)  # the largest frame


def _resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_a_decodable_bomb_leaves_memory_low(tmp_path):
    # 10,000 x 10,000 one-bit grey, all black: 12 KB on disk, 300 MB as uint8 RGB
    # if it were decoded (and this one would decode: its data is whole; it
    # takes 580 MiB and 2 s without the limit).
    row = b"\0" * (1 + 10000 // 8)
    path = tmp_path / "black.png"
    path.write_bytes(_png_bomb(10000, 10000, bit_depth=1, colour_type=0, rows=row * 10000))
    # The peak RSS misses a rise that stays under an earlier test's peak, so
    # the resident size is also sampled while the check runs.
    start, samples, done = _resident_mib(), [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append(_resident_mib())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    sampler.start()
    try:
        reason = check_file(path)
    finally:
        done.set()
        sampler.join()
    assert reason.startswith("10000x10000 pixels (100,000,000) is more than --max-pixels 89,478,485")
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024 < 100
    assert max(samples, default=start) - start < 100


def test_max_pixels_of_zero_or_none_means_no_limit(tmp_path):
    path = tmp_path / "eight.png"
    image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    path.write_bytes(_cv2(".png")(image))
    assert check_file(path, max_pixels=63) == "8x8 pixels (64) is more than --max-pixels 63; not decoded"
    assert check_file(path, max_pixels=64) is None  # "more than": the limit itself passes
    for no_limit in (0, None):
        assert check_file(path, max_pixels=no_limit) is None
        np.testing.assert_array_equal(read_image(path, max_pixels=no_limit), image)
    with pytest.raises(ValueError, match="Received: max_pixels=-1"):
        read_image(path, max_pixels=-1)


def test_unreadable_files_give_the_folder_checks_reasons(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_bytes(b"text")
    for name, reason in [
        ("empty.jpg", "empty file"),
        ("missing.jpg", "cannot be read: No such file or directory"),
        ("text.png", "not a decodable image: Unknown image file format. One of JPEG, PNG, GIF, BMP required."),
    ]:
        with pytest.raises(ImageError) as error:
            read_image(tmp_path / name)
        assert error.value.reason.startswith(reason.split(" One of")[0]) and "\n" not in str(error.value)
        assert check_file(tmp_path / name) == error.value.reason


def test_devices_and_fifos_are_not_read(tmp_path):
    # /dev/zero would never end a read, a FIFO never begin it; /dev/null shows the rule.
    (tmp_path / "null.jpg").symlink_to("/dev/null")
    os.mkfifo(tmp_path / "fifo.jpg")
    for name in ("null.jpg", "fifo.jpg"):
        assert image_dimensions(tmp_path / name) is None
        assert check_file(tmp_path / name) == "cannot be read: not a regular file"


def _write_png(path, height, width, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_cv2(".png")(np.full((height, width, 3), value, np.uint8)))


def test_a_folder_with_oversized_files_loads_the_good_ones_and_names_the_big_ones(tmp_path, bombs, monkeypatch, caplog):
    root = tmp_path / "data"
    _write_png(root / "train" / "a" / "0.png", 4, 4, 10)
    _write_png(root / "train" / "b" / "0.png", 5, 5, 20)
    _write_png(root / "train" / "b" / "1.png", 6, 7, 30)  # 42 pixels
    (root / "train" / "a" / "big.jpg").write_bytes(bombs[1].read_bytes())
    (root / "train" / "b" / "big.png").write_bytes(bombs[0].read_bytes())
    bomb_contents = {path.read_bytes() for path in bombs}
    decode = folder.decode_image
    decoded = []

    def spy(contents):
        if isinstance(contents, bytes):  # the check (in the dataset's map, contents is a graph tensor)
            decoded.append(contents)
        return decode(contents)

    monkeypatch.setattr(folder, "decode_image", spy)
    with caplog.at_level(logging.WARNING, logger=folder.__name__):
        examples, num_examples, _, _, skipped = load_folder(root, "train")
    assert not bomb_contents & set(decoded) and len(decoded) == 3
    assert (num_examples, skipped) == (3, ("a/big.jpg", "b/big.png"))
    assert f"a/big.jpg ({BOMB_REASON}), b/big.png ({BOMB_REASON})" in caplog.text
    assert sorted(ex["file_name"].decode() for ex in examples.as_numpy_iterator()) == ["a/0.png", "b/0.png", "b/1.png"]

    # The cache holds each decision with its limit and the header's size: a
    # lower limit (through load_split, as train.py and evaluate.py load)
    # follows from it without decoding anything, and the default again
    # decodes only the file that the lower one refused unread.
    check_file = folder.check_file
    checked = []
    monkeypatch.setattr(folder, "check_file", lambda path, **limit: checked.append(path.split(os.sep)[-2:])
                        or check_file(path, **limit))
    split = load_split(types.SimpleNamespace(dataset=f"folder:{root}", max_pixels=40), "train")
    assert (split.num_examples, split.skipped) == (2, ("a/big.jpg", "b/1.png", "b/big.png"))
    assert describe_skipped(split.skipped) == "skipped 3 unreadable files: a/big.jpg, b/1.png, b/big.png"
    assert checked == []
    with caplog.at_level(logging.WARNING, logger=folder.__name__):
        load_folder(root, "train", max_pixels=40)
    assert "b/1.png (7x6 pixels (42) is more than --max-pixels 40; not decoded)" in caplog.text
    assert load_folder(root, "train")[4] == skipped and checked == [["b", "1.png"]]
    assert not bomb_contents & set(decoded)


def _fake_train(captured):
    def train(config, workdir, verbose=1, **kwargs):
        captured.append(config)
        return {"model": config.model, "val_accuracy": 0.5, "epochs_completed": 1, "wall_seconds": 0.0,
                "parameters": 1}

    return train


@pytest.mark.parametrize(
    "flag, expected", [([], MAX_PIXELS), (["--max-pixels", "0"], 0), (["--max-pixels", "500"], 500)]
)
def test_the_max_pixels_flag_reaches_the_training_config(tmp_path, monkeypatch, flag, expected):
    import kerascam.training
    from kerascam.cli import train_main

    captured = []
    monkeypatch.setattr(kerascam.training, "train", _fake_train(captured))
    train_main(["--model", "unet", "--preset", "smoke", "--workdir", str(tmp_path), "--jobs", "1", *flag])
    assert [config.max_pixels for config in captured] == [expected]


def test_a_negative_max_pixels_is_one_line_and_exit_2(tmp_path, capsys):
    from kerascam.cli import evaluate_main, run_cli, train_main

    for main, prog in ((train_main, "train.py"), (evaluate_main, "evaluate.py")):
        code = run_cli(main, ["--workdir", str(tmp_path), "--max-pixels", "-1"], prog)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert err[0] == f"{prog}: error: argument --max-pixels: expected an integer >= 0, got -1 (see --help)"


def test_evaluation_reads_folders_under_the_training_limit_unless_told_otherwise():
    from kerascam.cli import evaluate_parser
    from kerascam.evaluation.experiment import _data_config

    trained = {"image_size": 32, "dataset": "folder:/data", "max_pixels": 1234}
    before_the_flag = {"image_size": 32, "dataset": "folder:/data"}
    assert _data_config({"unet": (None, {"config": trained})}, None).max_pixels == 1234
    assert _data_config({"unet": (None, {"config": trained})}, None, 0).max_pixels == 0
    assert _data_config({"unet": (None, {"config": before_the_flag})}, None).max_pixels == MAX_PIXELS
    assert evaluate_parser().parse_args([]).max_pixels is None
    assert evaluate_parser().parse_args(["--max-pixels", "0"]).max_pixels == 0
