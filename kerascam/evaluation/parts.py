"""Saved parts of an evaluation: resuming, shards, and the tables built from them.

A run saves its results in parts, one every ``chunk`` batches, in
``eval/shards/shard-I-of-N/`` (``chunk-00000.json``, ... written atomically,
beside a ``manifest.json`` of the settings that produced them). A part holds
the chunk's records (dicts whose fields the scorers declare), the chance
values and each scorer's extras (curves, sums), and an ``.npz`` of figure
data for the first images. The same command run again after a kill skips the
batches of the saved parts (no explaining; the data pipeline skips their
examples) and says ``resuming: K of M chunks done``. Parts saved under other
settings (models, whose identity is the SHA-256 of their ``model.keras``,
methods, scores and their settings, data, number of images, batch and chunk
size, ...) are never mixed in: the run moves them to ``eval/stale/``
(replacing what an earlier change left there), says which settings changed,
and starts afresh. Records, tables and figures are built only from the parts,
streaming, so memory does not grow with the number of images
(``benchmarks/eval_memory.py``).
"""

import csv
import hashlib
import heapq
import os
import shutil
import time
import zipfile

import numpy as np

from kerascam import io
from kerascam.evaluation import tables
from kerascam.evaluation.scorer import get_scorers

BASE_FIELDS = ("image_id", "label", "model", "method", "predicted", "explained_class", "status", "max_N")


def record_fields(scorers):
    """The columns of ``records.csv``: the base fields, then every scorer's."""
    return [*BASE_FIELDS, *(f.name for s in scorers for f in s.fields)]


def record_order(record):
    return int(record["image_id"]), record["model"], record["method"]


def file_digest(path):
    # The content, not the modification time: a copied workdir (another
    # machine of a sharded run) keeps its identity, a retrained model does not.
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_dir(out_dir, shard, num_shards):
    return os.path.join(out_dir, "shards", f"shard-{shard}-of-{num_shards}")


def part_path(folder, index, suffix=".json"):
    return os.path.join(folder, f"chunk-{index:05d}{suffix}")


def open_parts(folder, manifest, out_dir):
    """Prepares ``folder`` for a run with ``manifest``; returns the number of chunks already done.

    Parts of other settings are moved to ``eval/stale/`` (replacing an older
    copy there), never mixed in.
    """
    path = os.path.join(folder, "manifest.json")
    if os.path.exists(path):
        old = io.read_json(path)
        if old.get("identity") == manifest["identity"]:
            done = 0
            while done < manifest["num_chunks"] and os.path.exists(part_path(folder, done)):
                if not part_is_whole(folder, done):
                    # A crash in the middle of a write where rename is not atomic
                    # (some network file systems): recompute from this part on.
                    print(f"saved part {part_path(folder, done, '')} is damaged (truncated or unreadable "
                          f".json or .npz); recomputing from chunk {done}", flush=True)
                    for later in range(done, manifest["num_chunks"]):
                        for suffix in (".json", ".npz"):
                            if os.path.exists(part_path(folder, later, suffix)):
                                os.remove(part_path(folder, later, suffix))
                    break
                done += 1
            return done
        changed = sorted(k for k in set(old.get("identity", {})) | set(manifest["identity"])
                         if old.get("identity", {}).get(k) != manifest["identity"].get(k))
        reason = f"the settings changed ({', '.join(changed)})"
    elif os.path.isdir(folder) and os.listdir(folder):
        reason = "they have no manifest"
    else:
        reason = None
    if reason:
        stale = os.path.join(out_dir, "stale", os.path.basename(folder))
        shutil.rmtree(stale, ignore_errors=True)
        os.makedirs(os.path.dirname(stale), exist_ok=True)
        os.replace(folder, stale)
        print(f"not resuming from the saved results in {folder}: {reason}; starting afresh "
              f"(the old results are in {stale})", flush=True)
    os.makedirs(folder, exist_ok=True)
    io.write_json(path, manifest)
    return 0


class Part:
    """The results of one chunk of batches, saved as ``chunk-NNNNN.json`` (+ ``.npz`` of figure data)."""

    def __init__(self, index):
        self.index, self.batches, self.images = index, 0, 0
        self.records = []
        self.chance = {}  # field -> [[image id, value], ...]
        self.extras = {}  # scorer -> [[model, method, extra], ...]
        self.figures = []  # dicts: images, masks, labels, maps, native, predicted

    def save(self, folder):
        figures = sum(len(f["images"]) for f in self.figures)
        if figures:
            # Before the JSON: a part whose JSON exists is complete.
            _save_figure_data(part_path(folder, self.index, ".npz"), self.figures)
        self.records.sort(key=record_order)
        data = {
            "chunk": self.index,
            "images": self.images,
            "figures": figures,
            "records": self.records,
            "chance": self.chance,
            "extras": self.extras,
        }
        io.write_text(part_path(folder, self.index), _compact_json(data) + "\n")


def _compact_json(data):
    import json

    return json.dumps(data, separators=(",", ":"))


def _save_figure_data(path, pieces):
    arrays = {
        "images": np.concatenate([p["images"] for p in pieces]),
        "labels": np.concatenate([p["labels"] for p in pieces]),
    }
    if pieces[0]["masks"] is not None:
        arrays["masks"] = np.concatenate([p["masks"] for p in pieces])
    for (model, method) in pieces[0]["maps"]:
        arrays[f"map::{model}::{method}"] = np.concatenate([p["maps"][(model, method)] for p in pieces])
        if pieces[0]["native"] is not None:
            arrays[f"native::{model}::{method}"] = pieces[0]["native"][(model, method)]
    for model in pieces[0]["predicted"]:
        arrays[f"predicted::{model}"] = np.concatenate([p["predicted"][model] for p in pieces])
    with io.atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def part_is_whole(folder, index):
    """Whether part ``index`` reads back complete: its JSON parses and is
    that part's, and its figure data (if any) opens with every array it names."""
    try:
        data = io.read_json(part_path(folder, index))
        if not isinstance(data, dict) or data.get("chunk") != index or not isinstance(data.get("records"), list):
            return False
        if data.get("figures"):
            with np.load(part_path(folder, index, ".npz")) as arrays:
                for key in arrays.files:
                    arrays[key]
        return True
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return False


def is_complete(folder):
    """Whether every part of a shard is saved and whole (a damaged one is
    recomputed by that shard's next run, never merged)."""
    path = os.path.join(folder, "manifest.json")
    if not os.path.exists(path):
        return False
    return all(os.path.exists(part_path(folder, i)) and part_is_whole(folder, i)
               for i in range(io.read_json(path)["num_chunks"]))


def merge_shards(config, started=None, seconds=None):
    """Builds the tables from the saved parts of all ``config.num_shards`` shards.

    Models, methods, scores and thresholds are those the shards were run with.
    """
    out_dir = os.path.join(config.workdir, "eval")
    shard_dirs = [shard_dir(out_dir, i, config.num_shards) for i in range(config.num_shards)]
    missing = [d for d in shard_dirs if not is_complete(d)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) not evaluated yet (or not finished), e.g. {missing[0]}")
    return finish(config, out_dir, shard_dirs, started, seconds)


def _check_same_evaluation(shard_dirs, manifests):
    first = {k: v for k, v in manifests[0]["identity"].items() if k != "shard"}
    for folder, manifest in zip(shard_dirs[1:], manifests[1:]):
        other = {k: v for k, v in manifest["identity"].items() if k != "shard"}
        changed = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        if changed:
            raise ValueError(
                f"{folder} was evaluated with other settings than {shard_dirs[0]} ({', '.join(changed)} differ); "
                "run every shard with the same flags"
            )


def _shard_records(folder, num_chunks, on_part):
    """The records of one shard in image order, reading one part at a time."""
    for index in range(num_chunks):
        data = io.read_json(part_path(folder, index))
        on_part(data)
        yield from data["records"]


def finish(config, out_dir, shard_dirs, started=None, seconds=None):
    """Records, tables and figures from the saved parts of one or more shards, streaming."""
    import array

    manifests = [io.read_json(os.path.join(d, "manifest.json")) for d in shard_dirs]
    _check_same_evaluation(shard_dirs, manifests)
    first = manifests[0]
    model_names, methods = first["models"], first["methods"]
    scorers = get_scorers(first["scores"], config)
    chance = {}
    extras = {s.name: [] for s in scorers}
    images = [0]

    def on_part(data):
        images[0] += data["images"]
        for field, pairs in data["chance"].items():
            ids, values = chance.setdefault(field, (array.array("q"), array.array("d")))
            for image_id, value in pairs:
                ids.append(image_id)
                values.append(value)
        for name, entries in data["extras"].items():
            extras.setdefault(name, []).extend(entries)

    streams = [_shard_records(d, m["num_chunks"], on_part) for d, m in zip(shard_dirs, manifests)]
    builder = tables.TableBuilder(model_names, methods, tables.mean_fields(scorers))
    with io.atomic_path(os.path.join(out_dir, "records.csv")) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, record_fields(scorers))
            writer.writeheader()
            for record in heapq.merge(*streams, key=record_order):
                writer.writerow(record)
                builder.add(record)
            f.flush()
            os.fsync(f.fileno())
    table = builder.table()
    for scorer in scorers:
        table.update(scorer.summarize(extras.get(scorer.name, [])))
    table["chance"] = {}
    for field, (ids, values) in chance.items():
        if values:
            table["chance"][field] = tables.cell(np.asarray(values)[np.argsort(np.asarray(ids), kind="stable")])
    settings = dict(first["settings"], images=images[0])
    table["settings"] = settings
    table["seconds"] = time.time() - started if started else None
    if seconds:
        table["seconds_by_stage"] = {k: round(v, 1) for k, v in seconds.items()}
    # Keys that start with "_" are figure data of a scorer: not part of the tables.
    shown = {k: v for k, v in table.items() if not k.startswith("_")}
    tables.write_tables(out_dir, shown, model_names, methods, settings, scorers)
    folder = os.path.join(out_dir, "figures")
    if os.path.exists(part_path(shard_dirs[0], 0, ".npz")):  # shard 0 saves the figures' data
        _write_figures(folder, shard_dirs[0], model_names, methods, first["class_names"])
    for scorer in scorers:
        scorer.figures(table, folder, model_names, methods)
    return shown


def _write_figures(folder, first_shard, models, methods, class_names):
    """The overview figures from the figure data that shard 0's first parts saved."""
    from kerascam import figures

    parts, index = [], 0
    while os.path.exists(part_path(first_shard, index, ".npz")) and os.path.exists(part_path(first_shard, index)):
        with np.load(part_path(first_shard, index, ".npz")) as data:
            parts.append({k: data[k] for k in data.files})
        index += 1
    keys = [(m, k) for m in models for k in methods]
    images = np.concatenate([p["images"] for p in parts])
    masks = np.concatenate([p["masks"] for p in parts]) if "masks" in parts[0] else None
    labels = np.concatenate([p["labels"] for p in parts])
    maps = {key: np.concatenate([p["map::{}::{}".format(*key)] for p in parts]) for key in keys}
    predictions = {m: np.concatenate([p[f"predicted::{m}"] for p in parts]) for m in models}
    # One overview of every model x CAM method, and one figure per model with
    # every column, baselines included (a single grid of all would be too wide).
    from kerascam.evaluation.maps import is_baseline

    overview = {key: value for key, value in maps.items() if not is_baseline(key[1])}
    labelled = dict(labels=labels, predictions=predictions, class_names=class_names, image_ids=np.arange(len(images)))
    if overview:
        figures.plot_explanations(os.path.join(folder, "explanations.png"), images, masks, overview, **labelled)
    for model in models:
        figures.plot_explanations(os.path.join(folder, f"explanations_{model}.png"), images, masks,
                                  {key: value for key, value in maps.items() if key[0] == model},
                                  **labelled)
    natives = {key: parts[0]["native::{}::{}".format(*key)] for key in keys}
    figures.plot_native_maps(os.path.join(folder, "native_maps.png"), images[0], natives)
