"""Result tables of the docs, generated from an evaluation's ``table.json``.

    python -m kerascam.report runs/eval/table.json README.md docs/results.md
    python -m kerascam.report runs/eval/table.json README.md --check   # exit 1 if a block is stale
    python -m kerascam.report runs_markers/eval/table.json docs/results.md --scope markers

A document marks each generated table with a pair of HTML comments, which
Markdown does not show::

    <!-- generated:headline -->
    ...written by this module, never by hand...
    <!-- /generated:headline -->

Every block of a document whose name is in `BLOCKS` is rewritten from the
table (the same ``table.json`` that ``evaluate.py`` writes, see
`kerascam.evaluation.tables`), so that a re-run re-writes the figures
instead of leaving typed copies to go stale. Blocks of other names are left
alone.

One document can hold tables of several evaluations (the ``shapes`` and the
``markers`` testbeds): a block named ``SCOPE/NAME`` (``markers/field:decoy_share``)
is rewritten only by a run with ``--scope SCOPE``, and a block without a
scope only by a run without one, so each table.json rewrites its own blocks.
"""

import argparse
import json
import math
import re
import sys

# The headline columns: the paper's score (Table I) and the score against the ground truth.
HEADLINE_FIELDS = (("score_reference", "paper's score"), ("score_ground_truth", "ground truth"))
HEADLINE_METHODS = ("gradcam", "gradcam++", "scorecam")

def _row(cells):
    """A Markdown table row; an empty cell is written ``| |``, as in the hand-written tables."""
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


_BLOCK = re.compile(r"(<!-- generated:([\w:+/-]+) -->\n)(.*?)(<!-- /generated:\2 -->)", re.DOTALL)


def percent_cell(cell):
    """``"38.36 [36.65, 40.07]"``: a ``table.json`` cell's mean and 95 % CI in %, or ``"n/a"`` when n is 0."""
    if not cell or cell.get("n", 0) == 0:
        return "n/a"
    mean, low, high = (100.0 * cell[k] for k in ("mean", "low", "high"))
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:.2f}"
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def headline_table(table):
    """The README's headline: each model's paper's score and ground-truth score per method, and chance.

    Args:
        table: The dict of ``table.json``: ``table[field][model][method]`` is
            a cell (mean, low, high, n, undefined), ``table["chance"][field]``
            the uniform map's cell.

    Returns:
        A Markdown table (lines joined by newlines, ending with one).
    """
    fields = [(f, title) for f, title in HEADLINE_FIELDS if f in table]
    if not fields:
        raise ValueError(f"table.json has none of {[f for f, _ in HEADLINE_FIELDS]}: nothing for the headline table")
    from kerascam.models import MODEL_NAMES

    # table.json is written with sorted keys: put the paper's four first, in their order.
    present = list(table[fields[0][0]])
    models = [m for m in MODEL_NAMES if m in present] + sorted(m for m in present if m not in MODEL_NAMES)
    header = ["model"]
    for _, title in fields:
        header += [f"{title}: {HEADLINE_METHODS[0]}", *HEADLINE_METHODS[1:]]
    lines = [_row(header), "|---" * len(header) + "|"]
    for model in models:
        row = [model] + [percent_cell(table[f].get(model, {}).get(m)) for f, _ in fields for m in HEADLINE_METHODS]
        lines.append(_row(row))
    chance = table.get("chance", {})
    if any(f in chance for f, _ in fields):
        row = ["uniform map (chance)"]
        for f, _ in fields:
            row += [percent_cell(chance[f]) if f in chance else "", *([""] * (len(HEADLINE_METHODS) - 1))]
        lines.append(_row(row))
    return "\n".join(lines) + "\n"


def _models(table, field):
    """The models of ``table[field]``: the paper's four first, in their order, then the others sorted."""
    from kerascam.models import MODEL_NAMES

    present = list(table[field])
    return [m for m in MODEL_NAMES if m in present] + sorted(m for m in present if m not in MODEL_NAMES)


def _columns(table, field):
    """The columns of ``table[field]`` in the evaluation's order (methods, fused, model-free maps)."""
    from kerascam.evaluation.maps import available_columns

    present = {method for cells in table[field].values() for method in cells}
    known = available_columns()
    return [c for c in known if c in present] + sorted(c for c in present if c not in known)


def number_cell(cell, percent):
    """A cell as the docs print it: mean [95 % CI], in % for shares and rates; "n/a" when n is 0."""
    if percent:
        return percent_cell(cell)
    if not cell or cell.get("n", 0) == 0:
        return "n/a"
    mean, low, high = (cell[k] for k in ("mean", "low", "high"))
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:.3f}"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


# Fields printed in % (shares and hit rates); the others (ratios, AUCs,
# correlations) as they are.
PERCENT_FIELDS = ("score_", "pointing_hit", "sticker_hit", "grid_", "decoy_", "part_top", "follows_evidence")


def field_table(table, field):
    """One field of ``table.json`` as a Markdown table: a row per model, a column per map, chance last.

    The block ``<!-- generated:field:NAME -->`` renders ``NAME``; a model's
    cell says how many of its maps were undefined when any were.
    """
    if field not in table or not isinstance(table[field], dict):
        raise ValueError(f"table.json has no field {field!r}")
    percent = field.startswith(PERCENT_FIELDS)
    columns = _columns(table, field)
    lines = [_row(["model", *columns]), "|---" * (len(columns) + 1) + "|"]

    def text(cell):
        value = number_cell(cell, percent)
        undefined = (cell or {}).get("undefined", 0)
        return f"{value}, {undefined} undefined" if undefined else value

    for model in _models(table, field):
        lines.append(_row([model, *(text(table[field][model].get(c)) for c in columns)]))
    chance = table.get("chance", {}).get(field)
    if chance:
        lines.append(_row(["uniform map (chance)", number_cell(chance, percent), *([""] * (len(columns) - 1))]))
    return "\n".join(lines) + "\n"


# The one registry: block name -> function of the table that renders it
# (and ``field:NAME`` for any one field, `field_table`).
BLOCKS = {"headline": headline_table}


def render(text, table, scope=None):
    """``text`` with every known generated block of ``scope`` rewritten from ``table``; other text unchanged.

    Args:
        text: A Markdown document.
        table: The dict of an evaluation's ``table.json``.
        scope: None rewrites the blocks named without a scope; ``"markers"``
            only the blocks named ``markers/NAME``.
    """

    def replace(match):
        opening, name, closing = match.group(1), match.group(2), match.group(4)
        block_scope, _, name = name.rpartition("/")
        if (block_scope or None) != scope:
            return match.group(0)
        if name.startswith("field:"):
            return opening + field_table(table, name[len("field:"):]) + closing
        if name not in BLOCKS:
            return match.group(0)
        return opening + BLOCKS[name](table) + closing

    return _BLOCK.sub(replace, text)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kerascam.report", description=__doc__.splitlines()[0])
    parser.add_argument("table", help="an evaluation's table.json (evaluate.py writes WORKDIR/eval/table.json)")
    parser.add_argument("documents", nargs="+", help="Markdown files with <!-- generated:NAME --> blocks")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a block differs")
    parser.add_argument("--scope", help="rewrite only the blocks named SCOPE/NAME (default: those without a scope)")
    args = parser.parse_args(argv)
    try:
        with open(args.table) as f:
            table = json.load(f)
        stale = []
        for path in args.documents:
            with open(path) as f:
                text = f.read()
            scopes = {name.rpartition("/")[0] or None for _, name, _, _ in _BLOCK.findall(text)}
            if args.scope not in scopes:
                named = f"{args.scope}/NAME" if args.scope else "NAME"
                raise ValueError(f"{path} has no <!-- generated:{named} --> block")
            new = render(text, table, args.scope)
            if new != text:
                stale.append(path)
                if not args.check:
                    from kerascam import io

                    io.write_text(path, new)
    except (OSError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if args.check and stale:
        print(f"stale generated tables in: {', '.join(stale)} (run without --check to rewrite them)")
        return 1
    for path in stale:
        print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
