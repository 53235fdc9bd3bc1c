"""ILSVRC2012 bounding boxes (Pascal-VOC XML) as masks of class evidence.

The ILSVRC2012 validation boxes ship as one XML file per image
(``ILSVRC2012_val_00000001.xml`` for ``ILSVRC2012_val_00000001.JPEG``; the
``ILSVRC2012_bbox_val_v3.tgz`` archive unpacks them into a ``val/`` folder).

Coordinate conventions, used everywhere in kerascam:

* **VOC boxes** (what :func:`parse_voc_xml` returns): integers
  ``[xmin, ymin, xmax, ymax]``, 1-based and inclusive, exactly as in the file.
  The box covers the pixel columns ``xmin-1 .. xmax-1`` (0-based).
* **Edge boxes** (the ``boxes`` feature of an example, what
  :func:`voc_to_edges` returns): float32 ``[xmin, ymin, xmax, ymax]`` on the
  pixel grid's edges: 0 is the left/top edge of the image, ``width`` and
  ``height`` the right/bottom edges. A VOC box ``(x0, y0, x1, y1)`` is the edge
  box ``(x0 - 1, y0 - 1, x1, y1)``. Edge boxes scale and crop by plain affine
  maps, which is why the preprocessing functions carry them.
* Rasterising (:func:`boxes_to_mask`): a pixel belongs to a box when its
  centre lies inside it, so an integer edge box ``(x0, y0, x1, y1)`` fills
  ``mask[y0:y1, x0:x1]`` exactly.
"""

import os
import re
import xml.etree.ElementTree as ElementTree

import numpy as np

# Entity expansion ("billion laughs") and external entities both need a
# document type declaration; ImageNet's XML files never have one.
_FORBIDDEN_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_voc_xml(path):
    """Reads one Pascal-VOC annotation file.

    Args:
        path: Path of the XML file.

    Returns:
        ``(width, height, boxes, names)``: the image size recorded in the file,
        an int32 array ``(K, 4)`` of VOC boxes ``[xmin, ymin, xmax, ymax]``
        (1-based, inclusive, as written in the file) and a tuple of the K
        object names (WordNet ids for ImageNet).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file declares a DTD or entities, is not well-formed,
            or lacks the size or a box coordinate.
    """
    with open(path, "rb") as f:
        text = f.read()
    if _FORBIDDEN_DECLARATION.search(text):
        raise ValueError(f"Refusing {path}: it declares a DTD or entities, which annotation files never need.")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise ValueError(f"{path} is not well-formed XML: {error}") from None
    width = _integer(root, "size/width", path)
    height = _integer(root, "size/height", path)
    boxes, names = [], []
    for obj in root.iter("object"):
        names.append((obj.findtext("name") or "").strip())
        boxes.append([_integer(obj, f"bndbox/{key}", path) for key in ("xmin", "ymin", "xmax", "ymax")])
    return width, height, np.asarray(boxes, np.int32).reshape(-1, 4), tuple(names)


def _integer(element, tag, path):
    text = element.findtext(tag)
    if text is None or not text.strip():
        raise ValueError(f"{path} has no <{tag}>.")
    # Some annotation tools write "12.0"; the value is still a pixel index.
    return int(round(float(text)))


def voc_to_edges(boxes):
    """VOC boxes (1-based, inclusive) to float32 edge boxes (see module doc)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return boxes - np.asarray([1, 1, 0, 0], np.float32)


def boxes_to_mask(boxes, height, width, *, one_based_inclusive=True):
    """Union of boxes as a mask.

    Args:
        boxes: Array-like ``(K, 4)`` of ``[xmin, ymin, xmax, ymax]``.
        height: Mask height.
        width: Mask width.
        one_based_inclusive: True (default) when ``boxes`` are VOC boxes as
            :func:`parse_voc_xml` returns them; False when they are edge boxes
            (floats allowed; a pixel is inside when its centre is).

    Returns:
        uint8 array ``(height, width)``, 1 inside any box, 0 elsewhere. Parts
        of boxes outside the image are ignored; an empty box adds nothing.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if one_based_inclusive:
        boxes = voc_to_edges(boxes).astype(np.float64)
    mask = np.zeros((int(height), int(width)), np.uint8)
    for xmin, ymin, xmax, ymax in boxes:
        # Pixel i has its centre at i + 0.5: it is inside [lo, hi) when
        # ceil(lo - 0.5) <= i < ceil(hi - 0.5).
        x0, x1 = _centre_range(xmin, xmax, width)
        y0, y1 = _centre_range(ymin, ymax, height)
        mask[y0:y1, x0:x1] = 1
    return mask


def _centre_range(lo, hi, size):
    first = int(np.clip(np.ceil(lo - 0.5), 0, size))
    stop = int(np.clip(np.ceil(hi - 0.5), 0, size))
    return first, max(first, stop)


def xml_path_for_file(xml_dir, file_name):
    """Path of the XML file that annotates image ``file_name``.

    Args:
        xml_dir: Folder holding the XML files.
        file_name: Image file name or path (str or bytes), e.g.
            ``ILSVRC2012_val_00000001.JPEG``; only its base name counts.
    """
    if isinstance(file_name, bytes):
        file_name = file_name.decode("utf-8")
    stem = os.path.splitext(os.path.basename(file_name))[0]
    return os.path.join(xml_dir, stem + ".xml")


def box_mask_for_file(xml_dir, file_name, image_shape):
    """Mask of the annotated boxes of one image, at the decoded image's size.

    When the size recorded in the XML differs from ``image_shape`` (the image
    was re-encoded at another resolution), the boxes are scaled by the ratio
    of the two sizes, per axis, before rasterising: the annotation describes
    the same content, wherever it now lands. The XML's objects are all taken
    (ILSVRC validation files only hold boxes of the image's own class).

    Args:
        xml_dir: Folder holding the XML files.
        file_name: Image file name or path (str or bytes).
        image_shape: ``(height, width)`` or ``(height, width, channels)`` of
            the decoded image.

    Returns:
        uint8 array ``(height, width)``.

    Raises:
        FileNotFoundError: There is no XML file for this image.
    """
    path = xml_path_for_file(xml_dir, file_name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No box annotation for {os.path.basename(path)[:-4]}: expected {path}")
    xml_width, xml_height, boxes, _ = parse_voc_xml(path)
    height, width = int(image_shape[0]), int(image_shape[1])
    edges = voc_to_edges(boxes).astype(np.float64)
    if (xml_width, xml_height) != (width, height):
        if xml_width <= 0 or xml_height <= 0:
            raise ValueError(f"{path} records an image size of {xml_width}x{xml_height}; cannot scale its boxes.")
        edges *= np.asarray([width / xml_width, height / xml_height] * 2)
    return boxes_to_mask(edges, height, width, one_based_inclusive=False)


def with_box_masks(dataset, xml_dir):
    """Adds a ``mask`` from each example's XML boxes to a dataset.

    Map this before any crop or resize (e.g. before
    :func:`kerascam.data.preprocessing.resize_center_crop`), so the mask is
    transformed exactly like its image.

    Args:
        dataset: Unbatched dataset of dicts with a decoded ``image`` and a
            ``file_name`` (as :func:`kerascam.data.imagenet.load_imagenet`
            yields them).
        xml_dir: Folder holding the XML files.

    Returns:
        The dataset with a uint8 ``(H, W)`` ``mask`` added. A missing XML file
        fails the iteration with the FileNotFoundError's message.
    """
    import tensorflow as tf

    xml_dir = os.fspath(xml_dir)

    def mask_of(file_name, shape):
        return box_mask_for_file(xml_dir, file_name.numpy(), shape.numpy())

    def attach(example):
        # The XML lookup and parse are plain Python file reads: py_function
        # runs them eagerly inside the otherwise graph-mode pipeline.
        mask = tf.py_function(mask_of, [example["file_name"], tf.shape(example["image"])], tf.uint8)
        mask.set_shape(example["image"].shape[:2])
        return {**example, "mask": mask}

    return dataset.map(attach, num_parallel_calls=tf.data.AUTOTUNE)
