"""The figures that scores draw from their table sections.

Drawn on matplotlib's Agg canvas (no pyplot; imported when a figure is
drawn) and written atomically. The scores call them from their ``figures``
hook (`kerascam.evaluation.scorer.Scorer.figures`):

* `plot_mean_curves`: deletion and insertion (`faithfulness.png`) and ROAD's
  MoRF and LeRF (`road.png`), from `kerascam.evaluation.curves.mean_curves`;
* `plot_cascade_curves` and `plot_cascade_grid`: the model-parameter
  randomization check (Adebayo et al. 2018), its similarity curves along the
  cascade and its classic grid of one image's maps.
"""

import numpy as np

from kerascam import figures as kfigures
from kerascam.io import atomic_path


def plot_mean_curves(curves, path, models, methods, *, panels=None, xlabel="fraction of pixels changed"):
    """Draws mean curves: a column per model, a row per kind, a line per method with its 95 % band.

    Drawn on matplotlib's Agg canvas (no pyplot); the PNG is written
    atomically (`kerascam.io.atomic_path`).

    Args:
        curves: ``{"x": [...], "curves": kerascam.evaluation.curves.mean_curves(...)}``.
        path: the PNG to write.
        models, methods: names in drawing order; those without curves are
            left out.
        panels: ``(kind, y label)`` per row. Default deletion above
            insertion.
        xlabel: the x axis' label.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if panels is None:
        panels = (("deletion", "deletion (lower is better)"), ("insertion", "insertion (higher is better)"))
    models = [m for m in models if m in curves["curves"]]
    if not models:
        return
    xs = np.asarray(curves["x"], dtype=np.float64)
    fig = Figure(figsize=(2.6 * len(models) + 0.4, 2.4 * len(panels)), dpi=kfigures.DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), len(models), squeeze=False, sharex=True, sharey=True)
    colors = {method: f"C{i % 10}" for i, method in enumerate(methods)}
    for column, model in enumerate(models):
        for row, (kind, label) in enumerate(panels):
            ax = axes[row][column]
            for method in methods:
                entry = curves["curves"][model].get(method)
                if entry is None:
                    continue
                mean, low, high = (np.array(entry[kind][key], dtype=np.float64) for key in ("mean", "low", "high"))
                ax.plot(xs, mean, color=colors[method], linewidth=1.2, label=method)
                ax.fill_between(xs, low, high, color=colors[method], alpha=0.15, linewidth=0)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.tick_params(labelsize=kfigures.FONT_SIZE)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(model, fontsize=kfigures.FONT_SIZE + 1)
            if row == len(panels) - 1:
                ax.set_xlabel(xlabel, fontsize=kfigures.FONT_SIZE)
            if column == 0:
                ax.set_ylabel(f"{label}\nclass probability", fontsize=kfigures.FONT_SIZE)
    axes[0][-1].legend(fontsize=kfigures.FONT_SIZE, loc="best", frameon=False)
    fig.tight_layout(pad=0.3)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=kfigures.DPI)


def plot_cascade_curves(path, cascade, models, methods):
    """Mean Spearman (solid) and SSIM (dashed) along the cascade, one panel per model.

    Args:
        path: the PNG to write (atomically).
        cascade: ``randomization_cascade`` of
            `kerascam.evaluation.scores.randomization.RandomizationScore.summarize`.
        models, methods: the order of the panels and of the lines.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = [m for m in models if cascade.get(m)]
    if not models:
        return
    fig = Figure(figsize=(3.6 * len(models), 3.2), dpi=kfigures.DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    colors = {k: f"C{i % 10}" for i, k in enumerate(methods)}
    for ax, model in zip(axes, models):
        steps = []
        for method in methods:
            curve = cascade[model].get(method)
            if not curve:
                continue
            steps = curve["steps"] if len(curve["steps"]) > len(steps) else steps
            for measure, style in (("spearman", "-"), ("ssim", "--")):
                ys = [1.0] + [_mean_or_nan(curve[measure][s]) for s in curve["steps"][1:]]
                ax.plot(range(len(ys)), ys, style, marker="o", markersize=2.5, color=colors[method],
                        label=f"{method} {'Spearman' if measure == 'spearman' else 'SSIM'}")
        ax.axhline(0.0, color="0.6", linewidth=0.6)
        ax.set_xticks(range(len(steps)))
        ax.set_xticklabels(steps, rotation=60, ha="right", fontsize=kfigures.FONT_SIZE)
        ax.tick_params(axis="y", labelsize=kfigures.FONT_SIZE)
        ax.set_ylim(min(-0.2, ax.get_ylim()[0]), 1.05)
        ax.set_title(model, fontsize=kfigures.FONT_SIZE + 1)
        ax.set_xlabel("layers re-initialized down to", fontsize=kfigures.FONT_SIZE)
    axes[0].set_ylabel("similarity to the trained model's map", fontsize=kfigures.FONT_SIZE)
    axes[0].legend(fontsize=kfigures.FONT_SIZE - 1, loc="lower left")
    kfigures._save(fig, path)


def plot_cascade_grid(path, grids, models):
    """Adebayo et al.'s classic figure: one image's maps along the cascade, one row per model.

    Args:
        path: the PNG to write (atomically).
        grids: ``_randomization_grid`` of
            `kerascam.evaluation.scores.randomization.RandomizationScore.summarize`.
        models: the order of the rows.
    """
    models = [m for m in models if m in grids]
    if not models:
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = 1 + max(len(grids[m]["steps"]) for m in models)
    # kerascam's square cells, each with room for its step's name above it.
    cell = kfigures.CELL_INCHES
    fig = Figure(figsize=(cols * cell + kfigures.ROW_LABEL_INCHES, len(models) * (cell + 0.25)), dpi=kfigures.DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(models), cols, squeeze=False)
    for row, model in zip(axes, models):
        grid = grids[model]
        image = np.asarray(grid["image"], dtype=np.uint8)
        row[0].imshow(image)
        row[0].set_title(f"image {grid['image_id']}", fontsize=kfigures.FONT_SIZE)
        row[0].set_ylabel(f"{model}\n{grid['method']}", fontsize=kfigures.FONT_SIZE)
        for ax in row:
            kfigures._bare(ax)
        for ax, step in zip(row[1:], grid["steps"]):
            ax.set_title(step, fontsize=kfigures.FONT_SIZE)
            values = grid["maps"].get(step)
            if values is None:
                ax.imshow(image)
                kfigures._note(ax, "undefined")
            else:
                ax.imshow(kfigures.overlay(image, np.asarray(values, dtype=np.float64)))
        for ax in row[1 + len(grid["steps"]):]:
            ax.axis("off")
    kfigures._save(fig, path)


def _mean_or_nan(interval):
    return np.nan if interval["mean"] is None else float(interval["mean"])
