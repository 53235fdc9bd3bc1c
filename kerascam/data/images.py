"""Reading users' image files safely: the size from the header, then one decoder.

A decompression bomb is a small file whose header claims an enormous image
(a 20,000 x 20,000 PNG of a few hundred bytes decodes to 1.2 GB of RGB).
:func:`read_image` (and the folder check, :func:`kerascam.data.folder.check_file`)
reads the width and height from the file's header first, a few bytes found
without decoding anything, and refuses an image of more than ``max_pixels``
pixels before the decoder allocates its output.

:func:`image_dimensions` parses the headers of the formats that TensorFlow's
``tf.io.decode_image`` reads, recognised by the same leading bytes it looks
at. It was written from the format specifications:

* PNG: the IHDR chunk, which must come first (PNG specification, 11.2.2);
  its CRC is checked, since libpng refuses an IHDR with a wrong one.
* JPEG: the markers are walked from SOI to the first start-of-frame marker
  (ITU-T T.81, B.1.1.3 and table B.1): SOF0-3, SOF5-7, SOF9-11 and SOF13-15
  hold the frame's lines (height) and samples per line (width); every other
  marker segment (APPn such as EXIF, COM, DQT, DHT, DRI, ...) is skipped by
  its length without being read, so a 64 KB EXIF block costs a seek. Where
  libjpeg reads on past a fault, so does this walk, or a bomb could hide
  behind it: fill bytes (0xFF repeated before a marker), the standalone
  markers TEM and RSTn, a segment length below 2 (nothing skipped), and
  bytes that are not a marker (skipped up to the next 0xFF; libjpeg warns,
  then decodes such a file all the same).
* GIF: every image descriptor (GIF89a, section 20), found by walking the
  blocks (extensions and image data skipped by their sub-block sizes). The
  logical screen's size is not used: TensorFlow (2.21) returns a frame as
  large as the largest image descriptor whatever the screen says (a 10 x 10
  screen with an 8,000 x 8,000 frame decodes to 8,000 x 8,000), and giflib
  holds every frame in memory even when only the first is returned, so an
  animation counts the pixels of all its frames.
* BMP: the DIB header's width and height (16-bit in the 12-byte OS/2 core
  header, 32-bit signed in the others; a negative height means top-down).
* WebP: the first chunk of the RIFF container: ``VP8 `` (14-bit sizes after
  the key frame's start code 9D 01 2A, RFC 6386 9.1), ``VP8L`` (14-bit sizes
  minus one after the 0x2F signature) or ``VP8X`` (24-bit canvas sizes minus
  one); or, as libwebp reads it, a bare VP8L or VP8 bitstream with no chunk
  header at all.

A header that is cut short or damaged gives None, like a format that is not
recognised, and the decoder then decides. It refuses those checked here
(TensorFlow 2.21): a PNG whose IHDR has a wrong CRC, a JPEG with a scan
before its frame header, a second SOI or a frame of 0 lines.
"""

import io
import numbers
import os
import re
import stat
import struct
import typing
import zlib

import numpy as np

# Pillow's default limit (PIL.Image.MAX_IMAGE_PIXELS): a quarter of a GiB
# of 3-byte pixels, int(1024 * 1024 * 1024 // 4 // 3). A 9,459 x 9,459
# image passes; its uint8 RGB array takes 256 MiB.
MAX_PIXELS = 89_478_485

# Extensions of the formats :func:`read_image` decodes, any case. (Folder
# datasets read only ImageFolder's: ``kerascam.data.folder.IMAGE_EXTENSIONS``.)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Start-of-frame markers: every SOFn but DHT (C4), JPG (C8) and DAC (CC).
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM and RST0-7 (SOI and EOI are handled apart).
_JPEG_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])
_JPEG_SOI, _JPEG_EOI, _JPEG_SOS = 0xD8, 0xD9, 0xDA

# Bytes read at a time when skipping data that is not a JPEG marker.
_SCAN_CHUNK = 4096


class ImageSize(typing.NamedTuple):
    """What an image header declares.

    Attributes:
        width, height: The decoded image's size.
        frames: Frames of an animated GIF; 1 for every other image.
        pixels: What the limit is compared with: ``width * height``, or for
            a GIF of several frames the pixels of all of them (the decoder
            holds them all), if that is more.
    """

    width: int
    height: int
    frames: int = 1
    pixels: typing.Optional[int] = None


class ImageError(ValueError):
    """An image file that cannot be used, with a one-line reason.

    ``str(error)`` is the reason, e.g. ``"empty file"``; ``error.path`` is
    the file and ``error.reason`` the reason again.
    """

    def __init__(self, reason, path=None):
        super().__init__(reason)
        self.reason = reason
        self.path = path


def image_dimensions(path_or_bytes):
    """The ``(width, height)`` an image header declares, read without decoding.

    Only the header is read (a few dozen bytes for PNG, BMP and WebP; for
    JPEG, the marker headers up to the frame header, each segment in between
    skipped by a seek; for GIF, the block headers of every frame).

    Args:
        path_or_bytes: A path (``str`` or ``os.PathLike``), the file's bytes
            (``bytes``, ``bytearray`` or ``memoryview``), or a binary file
            open for reading and seeking, read from its current position.

    Returns:
        ``(width, height)`` in pixels, both positive, for a PNG, JPEG, GIF,
        BMP or WebP header; None when the format is not one of these, or the
        header is cut short or damaged (the decoder then decides), or the
        path is not a regular file.

    Raises:
        OSError: The path cannot be opened.
    """
    size = image_size(path_or_bytes)
    return None if size is None else (size.width, size.height)


def image_size(path_or_bytes):
    """:func:`image_dimensions` with the frames of an animated GIF: an :class:`ImageSize`, or None."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return _measure(io.BytesIO(path_or_bytes))
    if isinstance(path_or_bytes, (str, os.PathLike)):
        if not stat.S_ISREG(os.stat(path_or_bytes).st_mode):
            return None  # never open a FIFO (it blocks) or read a device
        with open(path_or_bytes, "rb") as stream:
            return _measure(stream)
    return _measure(path_or_bytes)


def too_many_pixels(size, max_pixels=MAX_PIXELS):
    """Why an image of ``size`` is refused, or None when it is not.

    Args:
        size: An :class:`ImageSize` from :func:`image_size`, a ``(width,
            height)`` pair, or None (unknown: not refused here).
        max_pixels: The most pixels allowed; None or 0 for no limit.

    Returns:
        ``"20000x20000 pixels (400,000,000) is more than --max-pixels
        89,478,485; not decoded"`` (``"8000x8000 pixels in 3 frames
        (192,000,000 in all) ..."`` for an animated GIF), or None.
    """
    if size is None or not max_pixels:
        return None
    size = ImageSize(*size)
    pixels = size.pixels or size.width * size.height
    if pixels <= max_pixels:
        return None
    if size.frames == 1:
        counted = f"{size.width}x{size.height} pixels ({pixels:,})"
    else:
        counted = f"{size.width}x{size.height} pixels in {size.frames} frames ({pixels:,} in all)"
    return f"{counted} is more than --max-pixels {max_pixels:,}; not decoded"


def check_max_pixels(max_pixels):
    """Raises ValueError unless ``max_pixels`` is None or an integer >= 0."""
    if max_pixels is None:
        return
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Integral) or max_pixels < 0:
        raise ValueError(
            f"max_pixels must be a positive number of pixels, or 0 or None for no limit. Received: "
            f"max_pixels={max_pixels!r}"
        )


def read_image(path, max_pixels=MAX_PIXELS):
    """Reads an image file as uint8 RGB, refusing oversized ones unread.

    The header's size is checked first (:func:`image_dimensions`); only a
    file within the limit is read in full and decoded, by
    :func:`kerascam.data.folder.decode_image`, the decoder of the folder
    datasets.

    Args:
        path: The image file (JPEG, PNG, GIF, BMP or WebP, whatever its
            extension).
        max_pixels: The most pixels (width x height) an image may have;
            None or 0 for no limit. Default :data:`MAX_PIXELS`, Pillow's.

    Returns:
        A uint8 NumPy array ``(height, width, 3)``: grey repeated on the
        three channels, alpha dropped, 16-bit samples scaled to 8 bits, the
        first frame of an animation.

    Raises:
        ImageError: One line saying why the file cannot be used:
            ``"cannot be read: No such file or directory"`` (or ``"...: not
            a regular file"``: a FIFO or a device), ``"empty
            file"``, ``"WxH pixels (N) is more than --max-pixels M; not
            decoded"`` or ``"not a decodable image: ..."``.
        ValueError: ``max_pixels`` is negative or not an integer.
    """
    check_max_pixels(max_pixels)
    try:
        mode = os.stat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a folder fails to open, with its own reason
            # A FIFO would block the read, a device (/dev/zero) never end it.
            raise ImageError("cannot be read: not a regular file", path)
        with open(path, "rb") as stream:
            reason = too_many_pixels(_measure(stream), max_pixels)
            if reason:
                raise ImageError(reason, path)
            stream.seek(0)
            contents = stream.read()
    except OSError as error:
        raise ImageError(f"cannot be read: {error.strerror or error}", path) from None
    if not contents:
        raise ImageError("empty file", path)
    from kerascam import backend

    if backend.name() == "tensorflow":
        import tensorflow as tf

        from kerascam.data import folder  # folder imports this module: import here

        try:
            return folder.decode_image(contents).numpy()
        except tf.errors.OpError as error:
            raise ImageError(f"not a decodable image: {_decode_error(error)}", path) from None
    return _decode_without_tensorflow(contents, path)


def _decode_without_tensorflow(contents, path):
    """OpenCV's decoder, on a backend that need not have TensorFlow (JAX).

    The same conventions as ``tf.io.decode_image(channels=3)``: grey repeated
    on three channels, alpha dropped, 16-bit samples scaled to 8 bits, the
    first frame of an animation. OpenCV has its own JPEG decoder settings, so
    a JPEG may differ from TensorFlow's decoding by a grey level here and
    there; PNG, BMP and GIF give the same pixels.
    """
    import cv2

    # IMREAD_COLOR: 3 channels and 8 bits whatever the file holds.
    decoded = cv2.imdecode(np.frombuffer(contents, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ImageError("not a decodable image: OpenCV cannot decode it", path)
    return np.ascontiguousarray(decoded[:, :, ::-1])  # OpenCV's BGR to RGB


def _decode_error(error):
    # "{{function_node __wrapped__DecodeImage_device_...}} Invalid PNG data,
    # size 7752 [Op:DecodeImage]" -> "Invalid PNG data, size 7752"
    return re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\]", "", error.message).strip()


def _measure(stream):
    start = stream.read(12)
    if start.startswith(b"GIF8"):
        return _gif(stream, start)
    if start.startswith(b"\xff\xd8\xff"):
        stream.seek(2 - len(start), io.SEEK_CUR)  # back to the first marker, after SOI
        size = _jpeg(stream)
    elif start.startswith(PNG_SIGNATURE):
        size = _png(start[8:] + stream.read(25))
    elif start.startswith(b"BM"):
        size = _bmp(start + stream.read(14))
    elif start.startswith(b"RIFF") and start[8:12] == b"WEBP":
        size = _webp(stream.read(18))
    else:
        size = None
    return None if size is None else ImageSize(*size, frames=1, pixels=size[0] * size[1])


def _positive(width, height):
    return (width, height) if width > 0 and height > 0 else None


def _gif(stream, start):
    # Header (6), logical screen: width (2), height (2), flags (1), background (1), aspect (1).
    screen = start[6:] + stream.read(1)
    if len(screen) < 7:
        return None
    if not _skip_colour_table(stream, screen[4]):
        return None
    sizes = []
    while True:
        introducer = stream.read(1)
        if introducer == b"\x2c":  # image descriptor: left, top, width, height (2 each), flags (1)
            descriptor = stream.read(9)
            if len(descriptor) < 9:
                break
            sizes.append(struct.unpack("<HH", descriptor[4:8]))
            # The local colour table, the LZW code size (1), the data sub-blocks.
            if not (_skip_colour_table(stream, descriptor[8]) and stream.read(1) and _skip_sub_blocks(stream)):
                break
        elif introducer == b"\x21":  # extension: label (1), sub-blocks
            if not (stream.read(1) and _skip_sub_blocks(stream)):
                break
        else:  # the trailer (0x3B), the end of the data, or damage
            break
    sizes = [size for size in sizes if min(size) > 0]  # giflib refuses empty frames
    if not sizes:
        return None
    width, height = max(w for w, _ in sizes), max(h for _, h in sizes)
    return ImageSize(width, height, len(sizes), max(width * height, sum(w * h for w, h in sizes)))


def _skip_colour_table(stream, flags):
    """Skips the colour table that ``flags`` announces; False if the data ends first."""
    if flags & 0x80:
        length = 3 * 2 ** ((flags & 0x07) + 1)
        stream.seek(length - 1, io.SEEK_CUR)
        return len(stream.read(1)) == 1
    return True


def _skip_sub_blocks(stream):
    """Skips data sub-blocks up to their zero-length terminator; False if the data ends first."""
    while True:
        length = stream.read(1)
        if not length:
            return False
        if length == b"\0":
            return True
        stream.seek(length[0] - 1, io.SEEK_CUR)
        if not stream.read(1):
            return False


def _png(after_signature):
    # length (4), b"IHDR", width (4), height (4), 5 one-byte fields, CRC (4).
    if len(after_signature) < 25:
        return None
    length, chunk_type, width, height = struct.unpack(">I4sII", after_signature[:16])
    (crc,) = struct.unpack(">I", after_signature[21:25])
    if length != 13 or chunk_type != b"IHDR" or zlib.crc32(after_signature[4:21]) != crc:
        return None
    return _positive(width, height)


def _jpeg(stream):
    while True:
        marker = _next_jpeg_marker(stream)
        if marker is None or marker in (_JPEG_SOI, _JPEG_EOI, _JPEG_SOS):
            return None  # the end, a second SOI or the scan came before any frame header
        if marker in _JPEG_STANDALONE_MARKERS:
            continue
        field = stream.read(2)
        if len(field) < 2:
            return None
        (length,) = struct.unpack(">H", field)  # counts its own two bytes
        if marker in _JPEG_FRAME_MARKERS:
            # Sample precision (1), lines (2), samples per line (2); read even
            # under a wrong length, which only makes libjpeg refuse the file.
            frame = stream.read(5)
            if len(frame) < 5:
                return None
            height, width = struct.unpack(">HH", frame[1:])
            # Zero lines means a DNL marker gives them after the first scan:
            # unknown here (and libjpeg refuses such files).
            return _positive(width, height)
        # A length below 2 skips nothing: libjpeg reads on from there, so must this.
        stream.seek(max(length - 2, 0), io.SEEK_CUR)


def _next_jpeg_marker(stream):
    """The next marker's code (after 0xFF and any fill bytes), or None at the end of the data."""
    byte = stream.read(1)
    if not byte or (byte != b"\xff" and not _skip_past_ff(stream)):
        return None
    while True:
        byte = stream.read(1)
        if byte == b"\xff":  # a fill byte
            continue
        if not byte:
            return None
        if byte != b"\x00":
            return byte[0]
        # 0xFF00 is a zero byte stuffed into entropy-coded data, not a marker.
        if not _skip_past_ff(stream):
            return None


def _skip_past_ff(stream):
    """Moves past the next 0xFF byte; False when there is none."""
    while True:
        chunk = stream.read(_SCAN_CHUNK)
        if not chunk:
            return False
        index = chunk.find(b"\xff")
        if index >= 0:
            stream.seek(index + 1 - len(chunk), io.SEEK_CUR)
            return True


def _bmp(header):
    # "BM", file size (4), reserved (4), pixel offset (4), DIB header size (4), ...
    if len(header) < 26:
        return None
    (dib_size,) = struct.unpack("<I", header[14:18])
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sizes
        return _positive(*struct.unpack("<HH", header[18:22]))
    if dib_size < 16:
        return None
    width, height = struct.unpack("<ii", header[18:26])
    return _positive(width, abs(height))


def _webp(chunk):
    # The first chunk: FourCC (4), size (4), then its payload.
    if len(chunk) < 18:
        return None
    fourcc, payload = chunk[:4], chunk[8:]
    if fourcc == b"VP8X":
        # Flags (1), reserved (3), canvas width - 1 (3), canvas height - 1 (3).
        width = int.from_bytes(payload[4:7], "little") + 1
        height = int.from_bytes(payload[7:10], "little") + 1
        return width, height
    if fourcc == b"VP8 ":
        return _vp8(payload)
    if fourcc == b"VP8L":
        return _vp8l(payload)
    # No chunk header: libwebp (and so TensorFlow) decodes the bytes as a bare
    # VP8L or VP8 bitstream.
    return _vp8l(chunk) if chunk[0] == 0x2F else _vp8(chunk)


def _vp8(data):
    # Frame tag (3 bytes; bit 0 clear on a key frame), start code, 14-bit sizes.
    if data[0] & 1 or data[3:6] != b"\x9d\x01\x2a":
        return None
    width, height = struct.unpack("<HH", data[6:10])
    return _positive(width & 0x3FFF, height & 0x3FFF)  # the top 2 bits are a scale hint


def _vp8l(data):
    # Signature 0x2F, then width - 1 and height - 1 in 14 bits each.
    if data[0] != 0x2F:
        return None
    (bits,) = struct.unpack("<I", data[1:5])
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
