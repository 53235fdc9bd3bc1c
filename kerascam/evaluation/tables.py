"""The tables of an evaluation: cells with CIs, paired comparison, Markdown and CSV.

Every table loops over the fields that the run's scorers declare
(`kerascam.evaluation.scorer`); nothing here names a score.

Statistics:

* a cell is the mean with its 95 % Student-t interval; a hit rate (a 0/1
  field, ``Field.digits == 0``) gets the Wilson score interval instead
  (`kerascam.metrics.wilson_interval`), which is not degenerate at 0 or all
  hits;
* the paired U-Net - ablated U-Net comparison gives, per paired field and
  column, the mean difference with its interval, the effect size d_z
  (mean / sd of the differences), the paired t-test's p and that p adjusted
  by Holm's method over the table's family: every paired test of the run
  (all paired fields x columns). Holm, not Benjamini-Hochberg, because each
  row is read as a claim of its own ("the U-Net beats its twin on X"), so
  the error to bound is any false claim (family-wise), and because Holm
  holds under any dependence, where BH needs independence or positive
  dependence: these tests share their images and maps. p-values are printed
  no smaller than 1e-6.
"""

import array
import csv
import io as _io
import os

import numpy as np

from kerascam import io, metrics

PAIRED = ("unet", "unet_ablated")


def mean_fields(scorers):
    """The fields aggregated as a mean with CI, in registry order."""
    return [f for s in scorers for f in s.fields if f.kind == "mean"]


def is_rate(field):
    """A 0/1 field (``digits == 0``), whose mean is a hit rate."""
    return field.kind == "mean" and field.digits == 0


def cell(values, rate=False):
    """Mean, 95 % CI, n of the finite values; ``undefined`` counts the others.

    Args:
        values: the per-image values (NaN: undefined).
        rate: the values are 0/1: a Wilson interval instead of Student-t.
    """
    values = np.asarray(values, dtype=float)
    ci = metrics.wilson_interval(values) if rate else metrics.mean_confidence_interval(values)
    return {
        "mean": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n,
        "undefined": int(np.sum(~np.isfinite(values))),
    }


def _as_float(value):
    return float(value) if value not in ("", None) else float("nan")


class TableBuilder:
    """The cells of ``table.json``, fed one record at a time.

    Keeps a float per record and field (and an image id for the paired U-Net
    comparison), not the records themselves. Records come in image order
    from the saved parts, so that every run adds the same values in the same
    order (equal tables, not equal up to rounding).
    """

    def __init__(self, models, methods, fields):
        self.models, self.methods, self.fields = list(models), list(methods), list(fields)
        self.values = {}
        self.paired = {}

    def add(self, record):
        """Adds one record (as saved in the parts: None where not scored)."""
        key = (record["model"], record["method"])
        for field in self.fields:
            if record[field.name] is not None:
                self.values.setdefault((field.name,) + key, array.array("d")).append(_as_float(record[field.name]))
        if record["model"] in PAIRED:
            for field in self.fields:
                if field.paired and record[field.name] is not None:
                    ids, values = self.paired.setdefault((field.name,) + key, (array.array("q"), array.array("d")))
                    ids.append(int(record["image_id"]))
                    values.append(_as_float(record[field.name]))

    def table(self):
        table = {}
        for field in self.fields:
            rate = is_rate(field)
            table[field.name] = {
                m: {k: cell(self.values.get((field.name, m, k), ()), rate) for k in self.methods}
                for m in self.models
            }
        paired = {}
        if all(m in self.models for m in PAIRED):
            for field in self.fields:
                if not field.paired:
                    continue
                paired[field.name] = {}
                for method in self.methods:
                    ids_a, a = self.paired.get((field.name, PAIRED[0], method), ((), ()))
                    ids_b, b = self.paired.get((field.name, PAIRED[1], method), ((), ()))
                    _, in_a, in_b = np.intersect1d(
                        np.asarray(ids_a, dtype=np.int64), np.asarray(ids_b, dtype=np.int64),
                        assume_unique=True, return_indices=True,
                    )
                    d = metrics.paired_difference(np.asarray(a)[in_a], np.asarray(b)[in_b])
                    paired[field.name][method] = d._asdict()
        adjust_family(paired)
        table["paired_unet_minus_ablated"] = paired
        return table


def adjust_family(paired):
    """Adds ``p_holm`` (Holm-adjusted over every test in ``paired``) and
    ``family_size`` (the tests that had a p-value) to each test, in place.

    Args:
        paired: ``{field: {column: dict with "p_value"}}``, one table's family.
    """
    tests = [d for rows in paired.values() for d in rows.values()]
    adjusted = metrics.holm_adjust([d["p_value"] for d in tests])
    size = int(np.sum(np.isfinite([d["p_value"] for d in tests])))
    for d, p in zip(tests, adjusted):
        d["p_holm"] = float(p)
        d["family_size"] = size


def _number(cell_, percent):
    if cell_["n"] == 0:
        return "n/a"
    scale, digits = (100.0, 2) if percent else (1.0, 4)
    if not np.isfinite(cell_["low"]):
        return f"{scale * cell_['mean']:.{digits}f} (n={cell_['n']})"
    text = (f"{scale * cell_['mean']:.{digits}f} [{scale * cell_['low']:.{digits}f}, "
            f"{scale * cell_['high']:.{digits}f}] (n={cell_['n']})")
    if cell_["undefined"]:
        text += f", {cell_['undefined']} undefined"
    return text


def _effect(d_z):
    if d_z is None or np.isnan(d_z):
        return "n/a"
    return f"{d_z:+.2f}"


def markdown(table, models, methods, settings, scorers):
    """The tables as Markdown: means (in % for shares) with their 95 % CI in brackets and n."""
    lines = []
    fields = mean_fields(scorers)
    for field in fields:
        if field.name not in table:
            continue
        unit = "" if field.percent else " (not in %)"
        if is_rate(field):
            unit += ", 95 % Wilson interval"
        lines += [f"### {field.description}{unit}", "", "| model | " + " | ".join(methods) + " |",
                  "|---" * (len(methods) + 1) + "|"]
        for m in models:
            lines.append(f"| {m} | " + " | ".join(_number(table[field.name][m][k], field.percent) for k in methods)
                         + " |")
        if field.name in table.get("chance", {}):
            chance = _number(table["chance"][field.name], field.percent)
            lines.append("| uniform map (chance) | " + " | ".join(chance for _ in methods) + " |")
        lines.append("")
    by_name = {f.name: f for f in fields}
    paired = table.get("paired_unet_minus_ablated", {})
    family = max((d.get("family_size", 0) for rows in paired.values() for d in rows.values()), default=0)
    for name, rows in paired.items():
        percent = by_name[name].percent if name in by_name else True
        unit = "points" if percent else "difference"
        scale = 100.0 if percent else 1.0
        lines += [
            f"### U-Net minus ablated U-Net, {name} (paired over images)", "",
            f"| method | mean difference ({unit}) | 95 % CI | d_z | p (paired t) | p (Holm, {family} tests) | n |",
            "|---|---|---|---|---|---|---|",
        ]
        for method, d in rows.items():
            if d["n"] < 2:
                lines.append(f"| {method} | n/a | n/a | n/a | n/a | n/a | {d['n']} |")
                continue
            digits = 2 if percent else 4
            lines.append(
                f"| {method} | {scale * d['mean_difference']:+.{digits}f} | "
                f"[{scale * d['low']:+.{digits}f}, {scale * d['high']:+.{digits}f}] | {_effect(d.get('d_z'))} | "
                f"{metrics.format_p_value(d['p_value'])} | {metrics.format_p_value(d.get('p_holm'))} | {d['n']} |"
            )
        lines.append("")
    if paired:
        lines += [f"Paired tests: p adjusted by Holm's method over the family of all {family} paired tests of "
                  "this table (family-wise error rate); d_z = mean / sd of the per-image differences.", ""]
    for scorer in scorers:
        lines += scorer.markdown(table, models, methods)
    lines.append("Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    return "\n".join(lines) + "\n"


def write_tables(out_dir, table, models, methods, settings, scorers):
    """``table.json``, ``table.md`` and ``table.csv`` (one row per field x model x method)."""
    io.write_json(os.path.join(out_dir, "table.json"), table)
    io.write_text(os.path.join(out_dir, "table.md"), markdown(table, models, methods, settings, scorers))
    buffer = _io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["score", "model", "method", "mean", "ci_low", "ci_high", "n", "undefined"])
    for field in mean_fields(scorers):
        for m in models:
            for k in methods:
                c = table[field.name][m][k]
                writer.writerow([field.name, m, k, c["mean"], c["low"], c["high"], c["n"], c["undefined"]])
    io.write_text(os.path.join(out_dir, "table.csv"), buffer.getvalue())
