"""Writers of tiny ILSVRC-shaped files for the data tests: tar archives laid
out like ILSVRC2012's, image folders and Pascal-VOC XML box files."""

import io
import os
import tarfile

import numpy as np
from PIL import Image


def solid_image(height, width, value):
    """uint8 (height, width, 3) image of one grey level (JPEG keeps it exact)."""
    return np.full((height, width, 3), value, np.uint8)


def encode(image, image_format="JPEG"):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=image_format)
    return buffer.getvalue()


def _add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_train_tar(path, images_by_wnid):
    """``ILSVRC2012_img_train.tar``: one ``<wnid>.tar`` per class, each
    holding ``<wnid>_<n>.JPEG`` (n from 1).

    Args:
        path: Output file.
        images_by_wnid: ``{wnid: [uint8 image, ...]}``.
    """
    with tarfile.open(path, "w") as outer:
        for wnid, images in images_by_wnid.items():
            inner_bytes = io.BytesIO()
            with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
                for number, image in enumerate(images, start=1):
                    _add_bytes(inner, f"{wnid}_{number}.JPEG", encode(image))
            _add_bytes(outer, f"{wnid}.tar", inner_bytes.getvalue())


def write_val_tar(path, images, names=None):
    """``ILSVRC2012_img_val.tar``: flat ``ILSVRC2012_val_0000000<n>.JPEG``
    files, n from 1 (or the given ``names``, to build malformed archives)."""
    names = names or [f"ILSVRC2012_val_{n:08d}.JPEG" for n in range(1, len(images) + 1)]
    with tarfile.open(path, "w") as tar:
        for name, image in zip(names, images):
            _add_bytes(tar, name, encode(image))


def write_image_folder(root, layout):
    """Writes ``root/<split>/<class>/<n>.jpg`` files.

    Args:
        root: Output folder.
        layout: ``{split: {class: [uint8 image, ...]}}``; an empty list makes
            an empty class folder.
    """
    for split, classes in layout.items():
        for class_name, images in classes.items():
            folder = os.path.join(root, split, class_name)
            os.makedirs(folder, exist_ok=True)
            for number, image in enumerate(images):
                with open(os.path.join(folder, f"{number}.jpg"), "wb") as f:
                    f.write(encode(image))


def write_voc_xml(path, width, height, objects, prologue=""):
    """A Pascal-VOC annotation as ILSVRC2012's validation boxes are written.

    Args:
        path: Output file.
        width: Recorded image width.
        height: Recorded image height.
        objects: ``[(name, xmin, ymin, xmax, ymax), ...]``, VOC coordinates
            (1-based, inclusive).
        prologue: Text put before ``<annotation>`` (e.g. a DOCTYPE).
    """
    parts = [prologue, "<annotation><folder>val</folder>"]
    parts.append(f"<filename>{os.path.splitext(os.path.basename(path))[0]}</filename>")
    parts.append(f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>")
    for name, xmin, ymin, xmax, ymax in objects:
        parts.append(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
            f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
        )
    parts.append("</annotation>\n")
    with open(path, "w") as f:
        f.write("\n".join(parts))
