"""TensorBoard summaries of explanation maps, to watch them form during training.

`write_cam_summaries` explains a fixed set of images with the compiled engine
(`kerascam.cams`), blends each map over its image (`kerascam.figures.overlay`)
and writes the overlays as one `tf.summary.image` (tag ``cam/<method>``, e.g.
``cam/gradcam++``) at the given step; its description names the predicted
and, if given, the true class of each image. TensorBoard's Images tab then
shows one row of overlays per method with a slider over the steps::

    tensorboard --logdir runs/unet/logs

The overlays are written as PNG, which is lossless: TensorBoard shows exactly
the pixels of `overlay(image, map)`.
"""

import numpy as np

from kerascam.figures import COLORMAP, overlay

ALPHA = 0.5  # weight of the coloured map in the blend, as in the evaluation figures


def summary_tag(method):
    """The tag of ``method``'s overlays, e.g. ``"cam/gradcam++"``."""
    return f"cam/{method}"


def _check_images(images):
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(
            "images must be a non-empty uint8 batch of RGB images (N, H, W, 3). "
            f"Received: dtype={images.dtype}, shape={images.shape}"
        )
    return images


def _class_name(index, class_names):
    index = int(index)
    return class_names[index] if class_names is not None else str(index)


def describe_classes(predicted, labels=None, class_names=None):
    """The summary's description: a Markdown table of each image's classes.

    Args:
        predicted: int array (N,), the class explained in each image.
        labels: int array (N,) of true classes, or None.
        class_names: the class names, indexed by class, or None for numbers.

    Returns:
        Markdown text, one table row per image (TensorBoard renders it).
    """
    header = "| image | predicted | true |\n|---|---|---|" if labels is not None else "| image | predicted |\n|---|---|"
    rows = []
    for i, cls in enumerate(predicted):
        cells = [str(i), _class_name(cls, class_names)]
        if labels is not None:
            cells.append(_class_name(labels[i], class_names))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([header, *rows])


def write_cam_summaries(writer, model, images, step, *, method="gradcam++", class_names=None, labels=None):
    """Writes the overlays of ``method``'s maps on ``images`` to a TensorBoard log.

    Each image is explained at its predicted class (taken from the forward
    pass that computes the map) with ``kerascam.cams.get_method(method)``
    at the model's default target layer; the maps, at input resolution and
    min-max normalised (all zeros where undefined, as
    ``kerascam.cams.explain`` returns them), are blended over their images
    with ``kerascam.figures.overlay`` (jet, alpha 0.5). All N overlays go
    into one ``tf.summary.image`` named ``summary_tag(method)`` at ``step``,
    whose description is ``describe_classes``' table; the writer is flushed.

    Args:
        writer: a ``tf.summary`` writer (``tf.summary.create_file_writer``).
        model: a classifier as ``kerascam.cams.explain`` takes it (raw
            0-255 pixels in, logits or a softmax out).
        images: uint8 array (N, H, W, 3) of the model's input size: the same
            images at every step, so that the maps can be compared.
        step: the step (e.g. the epoch) to record the images at.
        method: a name in ``kerascam.cams.METHODS``. Default "gradcam++".
        class_names: names of the model's classes, indexed by class; None
            writes class numbers.
        labels: the true class of each image (N ints), or None.

    Returns:
        The uint8 overlays written, (N, H, W, 3).

    Raises:
        ValueError: in one line, for images that are not a uint8 RGB batch,
            labels that are not one per image, class_names that do not
            name every class of the model, or an unknown method.
    """
    import tensorflow as tf

    from kerascam.cams import get_method

    images = _check_images(images)
    num_classes = int(model.outputs[0].shape[-1])
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"class_names must name the model's {num_classes} classes. Received {len(class_names)} names"
        )
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(images),):
            raise ValueError(
                f"labels must hold one class per image. Received: labels.shape={labels.shape} for {len(images)} images"
            )
    result = get_method(method)(model).compute(images)
    overlays = [overlay(image, cam, alpha=ALPHA, colormap=COLORMAP) for image, cam in zip(images, result.maps)]
    overlays = np.stack(overlays)
    with writer.as_default():
        tf.summary.image(
            summary_tag(method),
            overlays,
            step=int(step),
            max_outputs=len(overlays),
            description=describe_classes(result.classes, labels, class_names),
        )
    writer.flush()
    return overlays
