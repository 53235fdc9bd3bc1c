"""Tests of kerascam.figures: PNGs that open, grids of the expected size, safe writes."""

import os

import cv2
import matplotlib
import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

from kerascam import figures

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N, H, W = 2, 32, 32
MODELS = ("unet", "vgg16", "resnet50")
METHODS = ("gradcam", "gradcam++")
NATIVE_SIDES = {"unet": 32, "vgg16": 4, "resnet50": 2}


def _images(n=N, height=H, width=W):
    return np.random.default_rng(0).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def _maps(n=N, height=H, width=W, models=MODELS):
    rng = np.random.default_rng(1)
    return {(m, k): rng.random((n, height, width)) for m in models for k in METHODS}


def _native_maps():
    rng = np.random.default_rng(2)
    return {(m, k): 10 * rng.standard_normal((side, side)) for m, side in NATIVE_SIDES.items() for k in METHODS}


def _read_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert pixels is not None and pixels.dtype == np.uint8
    return pixels


@pytest.fixture
def saved_figures(monkeypatch):
    """Records every Figure saved, so tests can read its titles and texts."""
    saved = []
    original = Figure.savefig

    def recording_savefig(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    return saved


def _panel_texts(fig):
    return [(ax.get_title(), [t.get_text() for t in ax.texts]) for ax in fig.axes]


# --- overlay -------------------------------------------------------------------------------------


def test_overlay_shape_dtype_and_alpha_extremes():
    image = _images(1, 5, 7)[0]
    cam = np.linspace(0, 1, 35).reshape(5, 7)
    blended = figures.overlay(image, cam)
    assert blended.shape == (5, 7, 3) and blended.dtype == np.uint8
    np.testing.assert_array_equal(figures.overlay(image, cam, alpha=0.0), image)

    pure = figures.overlay(image, cam, alpha=1.0, colormap="jet")
    expected = np.rint(np.asarray(matplotlib.colormaps["jet"](cam[2, 3]))[:3] * 255)
    np.testing.assert_array_equal(pure[2, 3], expected)
    assert tuple(pure[0, 0]) == (0, 0, 128)  # jet(0) is dark blue
    assert tuple(pure[-1, -1]) == (128, 0, 0)  # jet(1) is dark red
    turbo = figures.overlay(image, cam, alpha=1.0, colormap="turbo")
    expected = np.rint(np.asarray(matplotlib.colormaps["turbo"](cam[2, 3]))[:3] * 255)
    np.testing.assert_array_equal(turbo[2, 3], expected)


def test_overlay_clips_out_of_range_and_non_finite_values():
    image = _images(1, 2, 2)[0]
    pure = figures.overlay(image, np.array([[-3.0, np.nan], [np.inf, 7.0]]), alpha=1.0)
    np.testing.assert_array_equal(pure[0, 0], pure[0, 1])  # -3 and NaN both drawn as 0
    np.testing.assert_array_equal(pure[1, 0], pure[0, 0])  # inf drawn as 0
    assert tuple(pure[1, 1]) == (128, 0, 0)  # 7 clipped to 1


@pytest.mark.parametrize(
    "image, cam, alpha, match",
    [
        (np.zeros((4, 4, 3), np.float32), np.zeros((4, 4)), 0.5, "uint8 RGB"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4)), 0.5, "uint8 RGB"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((2, 2, 3)), 0.5, "2-D map"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((0, 4)), 0.5, "2-D map"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4)), 0.5, "unknown colormap"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4)), 1.5, "alpha"),
    ],
)
def test_overlay_rejects_bad_arguments(image, cam, alpha, match):
    colormap = "no-such-map" if match == "unknown colormap" else figures.COLORMAP
    with pytest.raises(ValueError, match=match):
        figures.overlay(image, cam, alpha=alpha, colormap=colormap)


def test_overlay_resizes_a_smaller_map_bilinearly_with_half_pixel_centres():
    image = _images(1, 4, 4)[0]
    cam = np.array([[0.0, 1.0], [0.0, 1.0]])
    pure = figures.overlay(image, cam, alpha=1.0, colormap="viridis")
    # Half-pixel centres: output column x samples input column (x + 0.5) / 2 - 0.5, clamped: 0, 0.25, 0.75, 1.
    for column, value in enumerate((0.0, 0.25, 0.75, 1.0)):
        expected = np.rint(np.asarray(matplotlib.colormaps["viridis"](value))[:3] * 255)
        np.testing.assert_array_equal(pure[:, column], np.tile(expected, (4, 1)))
    import kerascam

    assert kerascam.overlay is figures.overlay


def test_plot_overlay_keeps_the_image_resolution(tmp_path, saved_figures):
    image = _images(1, 300, 500)[0]
    figures.plot_overlay(tmp_path / "o.png", image, np.random.default_rng(0).random((7, 7)), title="cat (93.0%)")
    pixels = _read_png(tmp_path / "o.png")
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 500
    (fig,) = saved_figures
    assert [t.get_text() for t in fig.texts] == ["cat (93.0%)"] and len(fig.axes) == 2  # the image and its colour bar
    assert fig.axes[0].images[0].get_array().shape[:2] == (300, 500)


# --- plot_explanations ---------------------------------------------------------------------------


def test_explanations_png_grows_with_rows_and_columns(tmp_path):
    masks = np.zeros((N, H, W), bool)
    masks[:, 8:24, 8:24] = True
    full = tmp_path / "full.png"
    figures.plot_explanations(
        full,
        _images(),
        masks,
        _maps(),
        labels=[0, 1],
        predictions={"unet": np.array([0, 0]), "vgg16": np.array([1, 1]), "resnet50": np.array([1, 0])},
        class_names=["cat", "dog"],
        image_ids=["a7", "b3"],
        title="synthetic",
    )
    no_masks = tmp_path / "no_masks.png"
    figures.plot_explanations(no_masks, _images(), None, _maps())
    one_image = tmp_path / "one.png"
    figures.plot_explanations(one_image, _images(1), None, _maps(1))

    full_px, no_masks_px, one_px = _read_png(full), _read_png(no_masks), _read_png(one_image)
    cell = round(figures.CELL_INCHES * figures.DPI)
    # 1 image + 1 mask + 6 maps columns, and 5 of them without the mask column.
    assert full_px.shape[1] - no_masks_px.shape[1] == pytest.approx(cell, abs=1)
    assert no_masks_px.shape[1] == pytest.approx(7 * cell + figures.ROW_LABEL_INCHES * figures.DPI, abs=1)
    assert no_masks_px.shape[0] == pytest.approx(2 * cell, abs=1)
    assert one_px.shape[0] == pytest.approx(cell, abs=1)
    assert one_px.shape[1] == no_masks_px.shape[1]
    # Matplotlib reads the file back too (as RGBA floats).
    assert matplotlib.image.imread(str(one_image)).shape[:2] == one_px.shape[:2]


def test_explanations_titles_labels_and_undefined_panels(tmp_path, saved_figures):
    maps = _maps(models=("unet",))
    maps[("unet", "gradcam++")][1, 0, 0] = np.nan
    figures.plot_explanations(
        tmp_path / "f.png",
        _images(),
        np.ones((N, H, W), np.uint8),
        maps,
        labels=[1, 0],
        predictions={"unet": [1, 1]},
        class_names=["cat", "dog"],
        image_ids=[17, 42],
    )
    (fig,) = saved_figures
    axes = np.array(fig.axes).reshape(N, 4)
    assert [ax.get_title() for ax in axes[0]] == ["image", "mask", "unet\ngradcam", "unet\ngradcam++"]
    assert axes[0, 0].get_ylabel() == "id 17\ntrue: dog\nunet: dog"
    assert axes[1, 0].get_ylabel() == "id 42\ntrue: cat\nunet: dog"
    notes = [[[t.get_text() for t in ax.texts] for ax in row] for row in axes]
    assert notes == [[[], [], [], []], [[], [], [], ["undefined"]]]


def test_explanations_rejects_mismatched_inputs(tmp_path):
    path = tmp_path / "bad.png"
    with pytest.raises(ValueError, match="masks must have shape"):
        figures.plot_explanations(path, _images(), np.zeros((N, H, W + 1)), _maps())
    with pytest.raises(ValueError, match="maps"):
        figures.plot_explanations(path, _images(), None, _maps(n=N + 1))
    with pytest.raises(ValueError, match="one entry per image"):
        figures.plot_explanations(path, _images(), None, _maps(), labels=[0])
    with pytest.raises(ValueError, match="outside class_names"):
        figures.plot_explanations(path, _images(), None, _maps(), labels=[0, 2], class_names=["cat", "dog"])
    assert not path.exists()


# --- plot_native_maps ----------------------------------------------------------------------------


def test_native_maps_grid_and_titles(tmp_path, saved_figures):
    path = tmp_path / "native.png"
    figures.plot_native_maps(path, _images(1)[0], _native_maps(), title="native")
    pixels = _read_png(path)
    cell = figures.CELL_INCHES * figures.DPI
    # 3 models x (image + 2 methods), plus room for the title.
    assert pixels.shape[:2] == (round(3 * cell + figures.TITLE_INCHES * figures.DPI), round(3 * cell))

    (fig,) = saved_figures
    titles = [ax.get_title() for ax in fig.axes if ax.axison]
    assert titles[0] == f"image\n{H}x{W}"
    assert "resnet50\ngradcam 2x2" in titles and "vgg16\ngradcam++ 4x4" in titles
    assert "unet\ngradcam 32x32" in titles
    assert len(titles) == 1 + len(MODELS) * len(METHODS)
    # Native maps are drawn cell by cell, normalised to [0, 1].
    resnet = next(ax for ax in fig.axes if ax.get_title() == "resnet50\ngradcam 2x2")
    (shown,) = resnet.get_images()
    assert shown.get_interpolation() == "nearest"
    assert shown.get_array().min() == 0.0 and shown.get_array().max() == 1.0


def test_native_maps_constant_zero_and_non_finite_are_labelled(tmp_path, saved_figures):
    native = {
        ("vgg16", "gradcam"): np.full((4, 4), 3.0),
        ("resnet50", "gradcam"): np.zeros((2, 2)),
        ("resnet50", "gradcam++"): np.array([[np.nan, 1.0], [np.inf, 0.0]]),
    }
    figures.plot_native_maps(tmp_path / "n.png", _images(1)[0], native)
    (fig,) = saved_figures
    notes = {ax.get_title(): [t.get_text() for t in ax.texts] for ax in fig.axes if ax.get_images()}
    assert notes == {
        f"image\n{H}x{W}": [],
        "vgg16\ngradcam 4x4": ["constant"],
        "resnet50\ngradcam 2x2": ["all zero"],
        "resnet50\ngradcam++ 2x2": ["undefined"],
    }
    for ax in fig.axes:
        if ax.texts:
            np.testing.assert_array_equal(ax.get_images()[0].get_array(), 0.0)
    # A missing (model, method) pair leaves a blank panel: 2 models x (image + 2 methods).
    assert len(fig.axes) == 6 and sum(ax.axison for ax in fig.axes) == 4


def test_native_maps_rejects_bad_keys_and_shapes(tmp_path):
    image = _images(1)[0]
    with pytest.raises(ValueError, match="pairs"):
        figures.plot_native_maps(tmp_path / "x.png", image, {"unet": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"\(h, w\)"):
        figures.plot_native_maps(tmp_path / "x.png", image, {("unet", "gradcam"): np.zeros((1, 2, 2))})


# --- atomic writes -------------------------------------------------------------------------------


def test_writes_leave_no_temporary_files(tmp_path):
    figures.plot_explanations(tmp_path / "e.png", _images(1), None, _maps(1))
    figures.plot_native_maps(tmp_path / "n.png", _images(1)[0], _native_maps())
    figures.plot_native_maps(tmp_path / "n.png", _images(1)[0], _native_maps())  # overwrite
    assert sorted(os.listdir(tmp_path)) == ["e.png", "n.png"]


@pytest.mark.parametrize("plot", ["explanations", "native"])
def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch, plot):
    path = tmp_path / "figure.png"
    path.write_bytes(b"previous figure")

    def half_written_then_crash(self, fname, *args, **kwargs):
        with open(fname, "wb") as f:
            f.write(PNG_SIGNATURE)  # a torn write of the new figure
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", half_written_then_crash)
    with pytest.raises(OSError, match="disk full"):
        if plot == "explanations":
            figures.plot_explanations(path, _images(1), None, _maps(1))
        else:
            figures.plot_native_maps(path, _images(1)[0], _native_maps())
    assert path.read_bytes() == b"previous figure"
    assert os.listdir(tmp_path) == ["figure.png"]
