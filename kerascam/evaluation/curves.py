"""Per-image perturbation curves averaged into tables: shared by deletion/insertion and ROAD.

`kerascam.evaluation.scores.faithfulness` (Petsiuk et al. 2018) and
`kerascam.evaluation.scores.road` (Rong et al. 2022) each save one curve
per image and map (class probability against the share of pixels changed);
their table sections and figures show the mean curve per model x method
with its 95 % Student-t interval at each point (`mean_curves`,
`curve_table`; the figure is `kerascam.evaluation.score_figures.plot_mean_curves`).
"""

import numpy as np

from kerascam import metrics

DECIMALS = 6  # of the saved curves
CURVE_XS = (0.0, 0.25, 0.5, 0.75, 1.0)  # where table.md reads the mean curves


def rounded(curve):
    """A curve as a JSON-friendly list of floats, `DECIMALS` decimals."""
    return [round(float(value), DECIMALS) for value in curve]


def _finite_or_none(value):
    return float(value) if np.isfinite(value) else None


def mean_curves(extras, kinds):
    """Mean curve with 95 % Student-t bounds per point, per model x method and kind.

    Args:
        extras: ``(model, method, extra)`` triples, each extra a dict whose
            ``kinds`` hold one curve (list) per image, None for maps that
            were not scored.
        kinds: the keys to average, e.g. ``("deletion", "insertion")``.

    Returns:
        ``{model: {method: {kind: {"mean": [...], "low": [...], "high":
        [...], "n": curves}}}}`` from `kerascam.metrics.mean_confidence_interval`
        at each point; undefined values (bounds of a single curve) are None.

    Raises:
        ValueError: when the curves differ in length.
    """
    gathered = {}
    for model, method, extra in extras:
        if not extra:
            continue
        entry = gathered.setdefault((model, method), {kind: [] for kind in kinds})
        for kind in kinds:
            entry[kind].extend(curve for curve in extra[kind] if curve is not None)
    lengths = {len(curve) for entry in gathered.values() for kind in kinds for curve in entry[kind]}
    if len(lengths) > 1:
        raise ValueError(f"curves of different lengths cannot be averaged: {sorted(lengths)}")
    if not lengths:
        return {}
    points = lengths.pop()
    curves = {}
    for (model, method), entry in gathered.items():
        curves.setdefault(model, {})[method] = {
            kind: _mean_curve(np.asarray(entry[kind], dtype=np.float64).reshape(-1, points)) for kind in kinds
        }
    return curves


def _mean_curve(curves):
    intervals = [metrics.mean_confidence_interval(curves[:, k]) for k in range(curves.shape[1])]
    return {
        "mean": [_finite_or_none(round(i.mean, DECIMALS)) for i in intervals],
        "low": [_finite_or_none(round(i.low, DECIMALS)) for i in intervals],
        "high": [_finite_or_none(round(i.high, DECIMALS)) for i in intervals],
        "n": int(len(curves)),
    }


def curve_table(curves, models, methods, kinds, heading, note, at=CURVE_XS):
    """Markdown lines: one row per model x method, the mean curves read at the points nearest ``at``.

    Args:
        curves: ``{"x": [...], "curves": mean_curves(...)}``.
        models, methods: names in table order; pairs without curves are left out.
        kinds: the curves shown, one column each.
        heading: the section's heading line.
        note: a sentence under it (settings).
        at: x values to show. Default `CURVE_XS`.
    """
    xs = np.asarray(curves["x"], dtype=np.float64)
    columns = sorted({int(np.argmin(np.abs(xs - x))) for x in at})
    where = " / ".join(f"{xs[c]:.2f}" for c in columns)
    lines = [heading, "", note, "", "| model | method | n | " + " | ".join(f"{kind} at x = {where}" for kind in kinds)
             + " |", "|---" * (3 + len(kinds)) + "|"]
    for model in models:
        for method in methods:
            entry = curves["curves"].get(model, {}).get(method)
            if entry is None:
                continue
            cells = [" / ".join("n/a" if entry[kind]["mean"][c] is None else f"{entry[kind]['mean'][c]:.3f}"
                                for c in columns) for kind in kinds]
            lines.append(f"| {model} | {method} | {entry[kinds[0]]['n']} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines
