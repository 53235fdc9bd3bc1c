"""Evaluation figures: explanation maps side by side, and maps at native resolution.

`plot_explanations` is the comparison grid of Mascolini et al., "High
Resolution Explanation Maps for CNNs using Segmentation Networks" (VL/HCC
2022), Fig. 1: one row per image, one column per (model, method), each map
blended over its image. `plot_native_maps` shows why the U-Net maps are sharper
(the paper's Fig. 2): the raw map of each target layer at the resolution it is
computed at, before it is resized to the input.

Only numpy and matplotlib are used, and matplotlib only through its Agg canvas
(no pyplot, no global backend switch), so figures can be drawn in a headless
process or next to code that uses pyplot itself. Every figure is written
atomically (`kerascam.io.atomic_path`): a crash while saving leaves the previous
file in place.
"""

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kerascam import metrics
from kerascam.io import atomic_path

COLORMAP = "jet"
CELL_INCHES = 1.3  # side of one image panel
ROW_LABEL_INCHES = 0.9  # room left of the first column for the row labels
TITLE_INCHES = 0.35  # room above the grid for a figure title
DPI = 100
OVERLAY_MIN_SIDE = 256  # pixels: plot_overlay magnifies smaller images to this
FONT_SIZE = 7

# Panel notes for maps that min-max normalisation cannot show.
_STATUS_NOTES = {
    metrics.NONFINITE: "undefined",
    metrics.CONSTANT: "constant",
    metrics.ZERO: "all zero",
}


def overlay(image, cam, alpha=0.5, colormap=COLORMAP):
    """Blends a colour-mapped explanation map over its image.

    Also `kerascam.overlay`.

    Args:
        image: uint8 RGB image, shape (H, W, 3).
        cam: explanation map of shape (h, w), values in [0, 1]. Values outside
            are clipped; NaN and inf are drawn as 0. A map of another size
            than the image (a model's input size, or a layer's native
            resolution) is first resized to (H, W) bilinearly, with
            half-pixel centres (OpenCV's INTER_LINEAR, as
            `kerascam.cams.resize_maps`).
        alpha: weight of the coloured map, in [0, 1]; 0 gives back the image,
            1 the coloured map alone. Default 0.5.
        colormap: name of a matplotlib colormap. Default "jet", as in the
            Grad-CAM literature; "viridis" is perceptually uniform (equal
            steps of the map look like equal steps of colour, and it reads
            in grey and for colour-blind eyes); "turbo" is a smoother jet.

    Returns:
        uint8 RGB array of shape (H, W, 3).
    """
    image = np.asarray(image)
    cam = np.asarray(cam, dtype=np.float64)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"image must be a uint8 RGB array (H, W, 3). Received: dtype={image.dtype}, shape={image.shape}"
        )
    if cam.ndim != 2 or cam.size == 0:
        raise ValueError(f"cam must be a non-empty 2-D map (h, w). Received: cam.shape={cam.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]. Received: alpha={alpha}")
    if colormap not in matplotlib.colormaps:
        raise ValueError(f"unknown colormap {colormap!r}; e.g. viridis, turbo, jet, magma. Received: colormap={colormap!r}")
    cam = np.clip(np.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0)
    if cam.shape != image.shape[:2]:
        import cv2

        cam = cv2.resize(cam, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    coloured = matplotlib.colormaps[colormap](cam)[..., :3] * 255.0
    blend = (1.0 - alpha) * image + alpha * coloured
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def plot_explanations(
    path,
    images,
    masks,
    maps,
    *,
    labels=None,
    predictions=None,
    class_names=None,
    image_ids=None,
    title=None,
):
    """Draws explanation maps of several models and methods side by side.

    One row per image. Columns: the image, its ground-truth mask (when `masks`
    is given), then one column per (model, method) key of `maps` in its
    order, each map blended over the image with `overlay`. Each row is
    labelled with the image id, its true class and every model's prediction
    that is given. A panel whose map holds NaN or inf is marked "undefined".

    Args:
        path: where to write the PNG; written atomically.
        images: uint8 RGB images, shape (N, H, W, 3).
        masks: ground-truth masks (N, H, W), bool or integer (non-zero is the
            object), or None for a dataset without masks (the column is left out).
        maps: ordered dict {(model_name, method_name): float array (N, H, W)}
            of maps in [0, 1] at the input resolution.
        labels: true class index per image, shape (N,). Optional.
        predictions: dict {model_name: predicted class index per image (N,)}.
            Optional.
        class_names: names indexed by class; without it the indices are shown.
        image_ids: one id per image for the row labels; default 0..N-1.
        title: figure title. Optional.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(
            "images must be a non-empty uint8 RGB batch (N, H, W, 3). "
            f"Received: dtype={images.dtype}, shape={images.shape}"
        )
    n, height, width = images.shape[:3]
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != (n, height, width):
            raise ValueError(f"masks must have shape {(n, height, width)}. Received: masks.shape={masks.shape}")
    maps = _check_map_dict(maps)
    for key, batch in maps.items():
        if batch.shape != (n, height, width):
            raise ValueError(f"maps[{key}] must have shape {(n, height, width)}. Received: shape={batch.shape}")
    row_labels = _row_labels(n, labels, predictions, class_names, image_ids)

    columns = ["image"] + (["mask"] if masks is not None else []) + [f"{m}\n{k}" for m, k in maps]
    fig, axes = _grid(n, len(columns), title, row_label_room=True)
    for row in range(n):
        panels = [images[row]]
        if masks is not None:
            panels.append(masks[row] > 0)
        panels += [overlay(images[row], batch[row]) for batch in maps.values()]
        for col, (ax, panel) in enumerate(zip(axes[row], panels)):
            if panel.ndim == 2:  # the mask
                ax.imshow(panel, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(panel)
            _bare(ax)
            if row == 0:
                ax.set_title(columns[col], fontsize=FONT_SIZE)
        for ax, batch in zip(axes[row][len(panels) - len(maps):], maps.values()):
            if not np.isfinite(batch[row]).all():
                _note(ax, "undefined")
        axes[row][0].set_ylabel(
            row_labels[row], fontsize=FONT_SIZE, rotation=0, ha="right", va="center", labelpad=4
        )
    _save(fig, path)


def plot_native_maps(path, image, native_maps, *, title=None):
    """Draws raw explanation maps at the resolution of each model's target layer.

    The maps are shown cell by cell (nearest-neighbour), so a 2x2 ResNet50 map
    looks like four blocks while a 64x64 U-Net map keeps its detail. Grid: the
    image in the first column of the first row, then one row per model and one
    column per method, in the order of first appearance in `native_maps`.
    Each map is min-max normalised to [0, 1] on its own; a map that cannot be
    (constant, all zero, or holding NaN or inf) is shown as zeros with a label
    across it saying why ("constant", "all zero", "undefined").

    Args:
        path: where to write the PNG; written atomically.
        image: uint8 RGB image, shape (H, W, 3).
        native_maps: ordered dict {(model_name, method_name): float array (h, w)}
            of un-normalised maps at each target layer's resolution.
        title: figure title. Optional.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"image must be a uint8 RGB array (H, W, 3). Received: dtype={image.dtype}, shape={image.shape}"
        )
    native_maps = _check_map_dict(native_maps)
    for key, cam in native_maps.items():
        if cam.ndim != 2 or cam.size == 0:
            raise ValueError(f"native_maps[{key}] must be a non-empty map (h, w). Received: shape={cam.shape}")
    models = list(dict.fromkeys(model for model, _ in native_maps))
    methods = list(dict.fromkeys(method for _, method in native_maps))

    fig, axes = _grid(max(len(models), 1), len(methods) + 1, title, row_label_room=False)
    for row_axes in axes:
        for ax in row_axes:
            ax.set_axis_off()  # panels with nothing to show stay blank
    ax = axes[0][0]
    ax.set_axis_on()
    ax.imshow(image)
    ax.set_title(f"image\n{image.shape[0]}x{image.shape[1]}", fontsize=FONT_SIZE)
    _bare(ax)
    for (model, method), cam in native_maps.items():
        shown, note = _normalize_for_display(cam)
        ax = axes[models.index(model)][methods.index(method) + 1]
        ax.set_axis_on()
        ax.imshow(shown, cmap=COLORMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(f"{model}\n{method} {cam.shape[0]}x{cam.shape[1]}", fontsize=FONT_SIZE)
        _bare(ax)
        if note:
            _note(ax, note)
    _save(fig, path)


def plot_overlay(path, image, cam, *, title=None, colormap=COLORMAP, alpha=0.5):
    """Draws one explanation map over its image at the image's own resolution, with a colour bar.

    The image panel has the image's size in pixels (one figure pixel per
    image pixel; small images are magnified by a whole factor to at least
    `OVERLAY_MIN_SIDE` pixels, nearest-neighbour), so nothing of a large
    photo is lost to a thumbnail. A colour bar beside it gives the map's
    scale, 0 to 1.

    Args:
        path: where to write the PNG; written atomically.
        image: uint8 RGB image, shape (H, W, 3).
        cam: map (h, w) in [0, 1]; resized to (H, W) by `overlay` if needed.
        title: text above the image (e.g. class name and probability). Optional.
        colormap: matplotlib colormap name. Default "jet".
        alpha: weight of the map in the blend, in [0, 1]. Default 0.5.
    """
    blended = overlay(image, cam, alpha=alpha, colormap=colormap)
    height, width = blended.shape[:2]
    scale = max(1, -(-OVERLAY_MIN_SIDE // min(height, width)))
    panel_w, panel_h = width * scale / DPI, height * scale / DPI  # inches
    bar_w, margin, top = 0.15, 0.1, (TITLE_INCHES if title else 0.0)
    right = 0.55  # the colour bar and its tick labels
    fig_w, fig_h = margin + panel_w + right, margin + panel_h + top + margin
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((margin / fig_w, margin / fig_h, panel_w / fig_w, panel_h / fig_h))
    ax.imshow(blended, interpolation="nearest")
    ax.set_axis_off()
    bar = fig.add_axes(((margin + panel_w + 0.08) / fig_w, margin / fig_h, bar_w / fig_w, panel_h / fig_h))
    mappable = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0.0, 1.0), matplotlib.colormaps[colormap])
    fig.colorbar(mappable, cax=bar)
    bar.tick_params(labelsize=FONT_SIZE)
    if title:
        fig.text(0.5, 1.0 - (top / 2) / fig_h, title, ha="center", va="center", fontsize=FONT_SIZE + 2)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def _normalize_for_display(cam):
    """Min-max normalises one map; returns (map, note), note "" when it could be."""
    shown, status = metrics.min_max_normalize(cam)
    return shown, _STATUS_NOTES.get(str(status), "")


def _check_map_dict(maps):
    """Returns `maps` as a dict of float arrays, keys checked to be (model, method)."""
    checked = {}
    for key, value in maps.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"map keys must be (model_name, method_name) pairs. Received: key={key!r}")
        checked[key] = np.asarray(value, dtype=np.float64)
    return checked


def _class_name(index, class_names):
    index = int(index)
    if class_names is None:
        return str(index)
    if not 0 <= index < len(class_names):
        raise ValueError(f"class index {index} is outside class_names (length {len(class_names)})")
    return str(class_names[index])


def _row_labels(n, labels, predictions, class_names, image_ids):
    """One multi-line label per image: id, true class, each model's prediction."""
    if image_ids is None:
        image_ids = range(n)
    columns = {"image_ids": image_ids}
    if labels is not None:
        columns["labels"] = labels
    for model, predicted in (predictions or {}).items():
        columns[f"predictions[{model!r}]"] = predicted
    for name, values in columns.items():
        if len(values) != n:
            raise ValueError(f"{name} must hold one entry per image ({n}). Received: length {len(values)}")
    rows = []
    for i in range(n):
        lines = [f"id {image_ids[i]}"]
        if labels is not None:
            lines.append(f"true: {_class_name(labels[i], class_names)}")
        for model, predicted in (predictions or {}).items():
            lines.append(f"{model}: {_class_name(predicted[i], class_names)}")
        rows.append("\n".join(lines))
    return rows


def _grid(rows, cols, title, row_label_room):
    """A figure of rows x cols square panels, CELL_INCHES each, plus margins.

    The size in pixels is fixed by the grid (no tight bounding box at save
    time), so figures with the same grid have the same size.
    """
    width = cols * CELL_INCHES + (ROW_LABEL_INCHES if row_label_room else 0.0)
    height = rows * CELL_INCHES + (TITLE_INCHES if title else 0.0)
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    if title:
        fig.suptitle(title, fontsize=FONT_SIZE + 1)
    return fig, axes


def _bare(ax):
    """Hides ticks but keeps the axis, so its y label can name the row."""
    ax.set_xticks([])
    ax.set_yticks([])


def _note(ax, text):
    """Writes why a panel shows no map across its middle."""
    ax.text(
        0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=FONT_SIZE + 1,
        color="white", bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none", "pad": 2},
    )


def _save(fig, path):
    fig.tight_layout(pad=0.3, h_pad=0.8)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
