"""One table from evaluations of different models on the same images.

    python -m kerascam.evaluation.join OUT_DIR runs/eval runs-resnet50/eval

A model trained after the others were evaluated (a seed's ResNet50, a model
of your own) is evaluated alone, with the same flags (``evaluate.py
--models NAME --workdir ...`` and the same ``--scores``, ``--num-images``,
dataset and split), and joined here instead of explaining every model again.
The scores of one model on one image do not depend on the other models, except
two, which the join therefore refuses to assemble from parts:

* the paper's score (``reference``): its mask is one run's ResNet50+GradCAM++
  map, so every model it scores must be explained in that run;
* the paired U-Net - ablated U-Net tests: they pair the two models image by
  image, so both must be in one evaluation (whose tests, and their Holm
  family, the joined table keeps as they are).

The evaluations must agree on every setting (images, dataset, split, scores,
class, backend...) and on the uniform map's chance cells, which depend on the
images alone: that is the check that they scored the same images. Each model
must come from one evaluation only. The join writes ``table.json``,
``table.md`` and ``table.csv`` (`kerascam.evaluation.tables.write_tables`);
per-image records and figures stay with each evaluation.
"""

import argparse
import os
import sys

import numpy as np

from kerascam import io
from kerascam.evaluation import tables
from kerascam.evaluation.config import EvalConfig
from kerascam.evaluation.maps import available_columns
from kerascam.evaluation.scorer import get_scorers
from kerascam.specs import MODEL_NAMES

# Top-level entries of table.json that are not keyed by model.
_SHARED = ("chance", "settings", "seconds", "seconds_by_stage", "paired_unet_minus_ablated")
# Settings that name what was joined rather than how it was scored.
_OWN_SETTINGS = ("reference", "joined")


def _curves(entry):
    """Whether a table entry is a curve set, ``{"x": [...], "curves": {model: ...}}``."""
    return isinstance(entry, dict) and set(entry) == {"x", "curves"}


def _is_cells(entry):
    """Whether a table entry is a field's cells, ``{model: {column: {"mean": ...}}}``."""
    return (isinstance(entry, dict) and bool(entry) and not _curves(entry)
            and all(isinstance(row, dict) and row and all(isinstance(c, dict) and "mean" in c for c in row.values())
                    for row in entry.values()))


def _in_order(names, known):
    """``names`` in the order of ``known``, then the others by name."""
    names = set(names)
    return [n for n in known if n in names] + sorted(names - set(known))


def models_of(table):
    """The models of one table (the keys of its fields' cells), in the registry's order, then others."""
    found = set()
    for key, entry in table.items():
        if key not in _SHARED and not key.startswith("_") and _is_cells(entry):
            found.update(entry)
    return _in_order(found, MODEL_NAMES)


def _columns(table, models):
    """The table's columns (methods and model-free maps), from its first field's row of ``models[0]``."""
    for key, entry in table.items():
        if key not in _SHARED and not key.startswith("_") and _is_cells(entry) and models[0] in entry:
            # table.json keeps them sorted by name: evaluate.py's order again.
            return _in_order(entry[models[0]], available_columns())
    return []


def _same_cell(a, b):
    """Whether two cells (floats, NaN where undefined, and counts) are equal up to rounding."""
    keys = sorted(a)
    return set(a) == set(b) and np.allclose([a[k] for k in keys], [b[k] for k in keys], rtol=1e-9, atol=1e-12,
                                            equal_nan=True)


def join_tables(named):
    """One table from ``[(name, table), ...]``: the tables of evaluations of different models.

    Args:
        named: Each evaluation's name (for the errors) and its ``table.json`` dict.

    Returns:
        ``(table, models, methods)``; the table in the layout of ``table.json``.

    Raises:
        ValueError: one line saying which evaluation cannot be joined and why.
    """
    if len(named) < 2:
        raise ValueError("joining needs at least two evaluations")
    for name, table in named:
        if not isinstance(table, dict) or "scores" not in table.get("settings", {}):
            raise ValueError(f"{name}: not the table.json of an evaluation (its settings name no scores)")
    (first_name, first), rest = named[0], named[1:]
    models = {name: models_of(table) for name, table in named}
    methods = _columns(first, models[first_name])
    for name, table in named:
        if not models[name]:
            raise ValueError(f"{name}: the table holds no model's scores")
        if "score_reference" in table:
            raise ValueError(f"{name}: the paper's score (reference) takes its mask from one evaluation's "
                             "ResNet50 and cannot be joined; evaluate those models together, or without "
                             "--scores reference")
    for name, table in rest:
        settings = {k: v for k, v in table["settings"].items() if k not in _OWN_SETTINGS}
        expected = {k: v for k, v in first["settings"].items() if k not in _OWN_SETTINGS}
        changed = sorted(k for k in set(settings) | set(expected) if settings.get(k) != expected.get(k))
        if changed:
            raise ValueError(f"{name} was evaluated with other settings than {first_name} ({', '.join(changed)} "
                             "differ); evaluate with the same flags")
        if set(table.get("chance", {})) != set(first.get("chance", {})) or not all(
                _same_cell(table["chance"][f], first["chance"][f]) for f in first.get("chance", {})):
            raise ValueError(f"{name} and {first_name} differ in the uniform map's chance level, so they did not "
                             "score the same images")
        keys = {k for k in table if not k.startswith("_")} - set(_SHARED)
        expected_keys = {k for k in first if not k.startswith("_")} - set(_SHARED)
        if keys != expected_keys:
            raise ValueError(f"{name} and {first_name} hold other scores ({', '.join(sorted(keys ^ expected_keys))})")
        if _columns(table, models[name]) != methods:
            raise ValueError(f"{name} and {first_name} have other columns (--cam): "
                             f"{', '.join(_columns(table, models[name]))} against {', '.join(methods)}")
    owner = {}
    for name, _ in named:
        for model in models[name]:
            if model in owner:
                raise ValueError(f"{model} is in both {owner[model]} and {name}; join each model once")
            owner[model] = name
    paired_models = [owner.get(m) for m in tables.PAIRED]
    if all(paired_models) and paired_models[0] != paired_models[1]:
        raise ValueError(f"{tables.PAIRED[0]} ({paired_models[0]}) and {tables.PAIRED[1]} ({paired_models[1]}) "
                         "are compared image by image and must be evaluated together")

    order = _in_order(owner, MODEL_NAMES)  # the registry's order, whatever the order of the evaluations

    def per_model(rows):
        merged = {m: row for table_rows in rows for m, row in table_rows.items()}
        return {m: merged[m] for m in order if m in merged}

    joined = {}
    for key in first:
        if key.startswith("_") or key in _SHARED:
            continue
        if _curves(first[key]):
            if any(not _curves(table[key]) or table[key]["x"] != first[key]["x"] for _, table in rest):
                raise ValueError(f"the evaluations' {key} differ in their x values")
            joined[key] = {"x": first[key]["x"], "curves": per_model(table[key]["curves"] for _, table in named)}
        elif isinstance(first[key], dict):
            for name, table in named:
                if not set(table[key]) <= set(models[name]):
                    raise ValueError(f"{name}: {key} is not kept per model, so it cannot be joined")
            joined[key] = per_model(table[key] for _, table in named)
        else:
            joined[key] = first[key]
    joined["paired_unet_minus_ablated"] = next(
        (table.get("paired_unet_minus_ablated", {}) for name, table in named if name == paired_models[0]), {})
    joined["chance"] = first.get("chance", {})
    seconds = [table.get("seconds") for _, table in named]
    joined["seconds"] = sum(seconds) if all(s is not None for s in seconds) else None
    stages = {}
    for _, table in named:
        for stage, value in table.get("seconds_by_stage", {}).items():
            stages[stage] = round(stages.get(stage, 0.0) + value, 1)
    joined["seconds_by_stage"] = stages
    joined["settings"] = dict(first["settings"], reference="none (joined evaluations)",
                              joined=sum(table["settings"].get("joined", 1) for _, table in named))
    return joined, order, methods


def join(out_dir, eval_dirs):
    """Joins the ``table.json`` of each folder in ``eval_dirs`` and writes the tables to ``out_dir``.

    Returns:
        The joined table.
    """
    named = []
    for folder in eval_dirs:
        path = os.path.join(folder, "table.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder} holds no table.json (evaluate.py writes WORKDIR/eval/table.json)")
        named.append((folder, io.read_json(path)))
    table, models, methods = join_tables(named)
    settings = table["settings"]
    scorers = get_scorers(settings["scores"].split("+"), EvalConfig())
    os.makedirs(out_dir, exist_ok=True)
    tables.write_tables(out_dir, table, models, methods, settings, scorers)
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kerascam.evaluation.join",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write table.json, table.md and table.csv to")
    parser.add_argument("eval_dirs", nargs="+", help="evaluations to join: folders with a table.json "
                                                     "(evaluate.py writes WORKDIR/eval)")
    args = parser.parse_args(argv)
    try:
        table = join(args.out_dir, args.eval_dirs)
    except (OSError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(f"joined {len(args.eval_dirs)} evaluations ({', '.join(models_of(table))}) into "
          f"{os.path.join(args.out_dir, 'table.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
