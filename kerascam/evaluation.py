"""The paper's experiment: localization of every model x CAM method.

For each image of a split, each trained model and each method, one record:

- ``score_reference``: the paper's score s = sum(A*M) / sum(A), with M the
  ResNet50 + GradCAM++ map of the same image thresholded at
  ``mask_threshold`` (Mascolini et al. 2022, Table I);
- ``score_ground_truth``: the same score against the dataset's ground-truth
  mask (the Score-CAM paper's energy-based pointing game; Quantus' relevance
  mass accuracy);
- ``pointing_hit``: whether the map's maximum lies inside the ground truth.

Maps that are undefined (all zero, constant or non-finite) are kept as
records with their status and no score; tables count them separately.

Outputs in ``WORKDIR/eval/``: ``records.csv``, ``table.md``, ``table.csv``,
``table.json`` and ``figures/``.

Resuming: a run saves its results in parts, one every ``chunk`` batches, in
``eval/shards/shard-I-of-N/`` (``chunk-00000.json``, ... written atomically,
beside a ``manifest.json`` of the settings that produced them). The same
command run again after a kill skips the batches of the saved parts (no
explaining; the data pipeline skips their examples) and says ``resuming: K of
M chunks done``. Parts saved under other settings (models, whose identity is
the SHA-256 of their ``model.keras``, methods, data, number of images, batch
and chunk size, thresholds, ...) are never mixed in: the run moves them to
``eval/stale/`` (replacing what an earlier change left there), says which
settings changed, and starts afresh. The parts stay after the run: the same
command again rebuilds the tables without explaining anything, and the shards
of a sharded run are merged from them. Records, tables and figures are built
only from the parts, streaming, so memory does not grow with the number of
images (``benchmarks/eval_memory.py``).
"""

import array
import csv
import dataclasses
import hashlib
import heapq
import io as _io
import json
import os
import shutil
import time
from typing import Optional, Sequence

import numpy as np

from kerascam import cams, io, metrics
from kerascam.models import MODEL_NAMES

REFERENCE = ("resnet50", "gradcam++")
RECORD_FIELDS = (
    "image_id", "label", "model", "method", "predicted", "explained_class", "status",
    "score_reference", "score_ground_truth", "pointing_hit", "reference_status", "max_N",
)
SCORES = {
    "score_reference": "s against the thresholded ResNet50 + GradCAM++ map (the paper's Table I)",
    "score_ground_truth": "s against the ground-truth mask (energy-based pointing game)",
    "pointing_hit": "pointing game: the map's maximum inside the ground-truth mask",
}


@dataclasses.dataclass
class EvalConfig:
    """Settings of one evaluation (saved in ``table.json``).

    Attributes:
        workdir: Folder of the trained runs (``WORKDIR/MODEL/model.keras``).
        models: Models to explain; None for every trained model found.
        methods: CAM methods (``kerascam.cams.available_methods()``).
        num_images: Images of the split to explain (from its start).
        split: Dataset split.
        dataset: Dataset; None for the one the models were trained on.
        batch_size: Images per step.
        max_N: ScoreCAM channels (Faster-ScoreCAM); None for all.
        mask_threshold: Threshold of the normalised reference map.
        sweep_thresholds: Further thresholds reported in a sweep table.
        class_index: ``"predicted"`` or ``"true"``: which class is explained.
        num_figures: Images shown in the overview figure.
        boxes_dir: ImageNet: folder of the validation box XMLs, whose boxes
            become the ground-truth masks.
        backend: ``"kerascam"`` (the compiled engine) or ``"tf-keras-vis"``
            (the reference implementation); they give the same maps.
        shard, num_shards: This run explains the images whose index i (in
            the first ``num_images``) has ``i % num_shards == shard``; each
            shard saves its results, and once all exist the tables are built
            from them (the same tables as one unsharded run).
        chunk: Batches per saved part of the results; a killed run resumes
            after its last saved part.
    """

    workdir: str = "runs"
    models: Optional[Sequence[str]] = None
    methods: Sequence[str] = ("gradcam", "gradcam++", "scorecam")
    num_images: int = 200
    split: str = "validation"
    dataset: Optional[str] = None
    batch_size: int = 25
    max_N: Optional[int] = 32
    mask_threshold: float = 0.5
    sweep_thresholds: Sequence[float] = (0.3, 0.5, 0.7)
    class_index: str = "predicted"
    num_figures: int = 6
    boxes_dir: Optional[str] = None
    backend: str = "kerascam"
    shard: int = 0
    num_shards: int = 1
    chunk: int = 10


def find_models(workdir, names=None):
    """Trained models in ``workdir``: {name: (model, run.json dict)}, in MODEL_NAMES order."""
    from kerascam.export import load_keras

    wanted = list(names) if names else [n for n in MODEL_NAMES if os.path.exists(os.path.join(workdir, n, "model.keras"))]
    if not wanted:
        raise FileNotFoundError(
            f"no trained model in {workdir!r} (expected {workdir}/MODEL/model.keras); run train.py first"
        )
    found = {}
    for name in wanted:
        path = os.path.join(workdir, name, "model.keras")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist; train it with: python train.py --model {name}")
        run = io.read_json(os.path.join(workdir, name, "run.json"))
        found[name] = (load_keras(path), run)
    return found


def _data_config(runs, dataset):
    sizes = {run["config"]["image_size"] for _, run in runs.values()}
    datasets = {run["config"]["dataset"] for _, run in runs.values()}
    if len(sizes) > 1 or len(datasets) > 1:
        raise ValueError(
            f"the models were trained on different data (image sizes {sorted(sizes)}, datasets {sorted(datasets)}); "
            "evaluate them separately with --models"
        )
    from kerascam.configs import TrainConfig

    config = next(iter(runs.values()))[1]["config"]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in config.items() if k in fields})
    if dataset:
        config = dataclasses.replace(config, dataset=dataset)
    return config


def check_num_classes(models, num_classes, dataset):
    """Raises ValueError when a model has fewer outputs than the dataset has classes.

    Labels past a model's last output cannot be explained as the true class
    nor ever be predicted: the evaluation would be meaningless, so it stops
    before any work.
    """
    for name, model in models.items():
        outputs = model.output_shape[-1]
        if outputs is not None and num_classes > outputs:
            raise ValueError(
                f"model {name!r} has {outputs} outputs but dataset {dataset!r} has {num_classes} classes, "
                f"so labels {outputs} to {num_classes - 1} have no output; evaluate it on the data it was trained on"
            )


def _batches(config, split, crop_size, skip=0):
    """Batches of the split's first ``num_images`` (this shard's), from its ``skip``-th image.

    Yields:
        (image ids, images, labels, masks or None); ``skip`` drops examples
        before they are cropped or batched, so resuming costs no explaining.
    """
    from kerascam.data.pipeline import evaluation_batches

    examples = split.examples.take(config.num_images).enumerate()
    if config.num_shards > 1:
        examples = examples.filter(lambda i, _: i % config.num_shards == config.shard)
    examples = examples.map(lambda i, ex: dict(ex, image_id=i))
    if skip:
        examples = examples.skip(skip)
    for batch in evaluation_batches(examples, config.batch_size, crop_size=crop_size).as_numpy_iterator():
        yield batch["image_id"], batch["image"], batch["label"], batch.get("mask")


def explain_batch(models, methods, images, labels, class_index="predicted", max_N=None, batch_size=None,
                  backend="kerascam"):
    """Maps of every model x method for one batch.

    Returns:
        ``{(model, method): (maps (N,H,W) in [0,1], native (N,h,w), status (N,))}``
        and ``{model: predicted classes (N,)}``.
    """
    out, predictions = {}, {}
    for name, model in models.items():
        # Explaining the labels needs a pass of its own for the predictions;
        # otherwise the first method's forward pass gives them (the kerascam
        # engine reads them from its logits) and the other methods explain them.
        predicted = cams.predicted_classes(model, images, batch_size) if class_index == "true" else None
        for method in methods:
            cam = cams.get_method(method)(model)
            # max_N at or above the channel count means all channels.
            kwargs = {"max_N": max_N} if cam.supports_max_N and max_N and max_N < cam.channels else {}
            target = labels if class_index == "true" else predicted
            result = cam.compute(images, target, batch_size=batch_size, backend=backend, **kwargs)
            if predicted is None:
                predicted = result.classes
            out[(name, method)] = (result.maps, result.native, metrics.map_status(result.native))
        predictions[name] = predicted
    return out, predictions


def _cell(values):
    values = np.asarray(values, dtype=float)
    ci = metrics.mean_confidence_interval(values)
    return {
        "mean": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n,
        "undefined": int(np.sum(~np.isfinite(values))),
    }


class TableBuilder:
    """The cells of ``table.json``, fed one record at a time.

    Keeps a float per record and score (and an image id for the paired U-Net
    comparison), not the records themselves. Feed the records in image order,
    as ``aggregate`` and the saved parts do, so that every run adds the same
    values in the same order (equal tables, not equal up to rounding).
    """

    PAIRED = ("unet", "unet_ablated")

    def __init__(self, models, methods):
        self.models, self.methods = list(models), list(methods)
        self.values = {}
        self.paired = {}

    def add(self, record):
        key = (record["model"], record["method"])
        for score in SCORES:
            self.values.setdefault((score,) + key, array.array("d")).append(_as_float(record[score]))
        if record["model"] in self.PAIRED:
            for score in ("score_reference", "score_ground_truth"):
                ids, values = self.paired.setdefault((score,) + key, (array.array("q"), array.array("d")))
                ids.append(int(record["image_id"]))
                values.append(_as_float(record[score]))

    def table(self, sweep=None):
        table = {}
        for score in SCORES:
            table[score] = {
                m: {k: _cell(self.values.get((score, m, k), ())) for k in self.methods} for m in self.models
            }
        paired = {}
        if all(m in self.models for m in self.PAIRED):
            for score in ("score_reference", "score_ground_truth"):
                paired[score] = {}
                for method in self.methods:
                    ids_a, a = self.paired.get((score, self.PAIRED[0], method), ((), ()))
                    ids_b, b = self.paired.get((score, self.PAIRED[1], method), ((), ()))
                    _, in_a, in_b = np.intersect1d(
                        np.asarray(ids_a, dtype=np.int64), np.asarray(ids_b, dtype=np.int64),
                        assume_unique=True, return_indices=True,
                    )
                    d = metrics.paired_difference(np.asarray(a)[in_a], np.asarray(b)[in_b])
                    paired[score][method] = d._asdict()
        table["paired_unet_minus_ablated"] = paired
        if sweep:
            table["threshold_sweep"] = sweep
        return table


def aggregate(records, models, methods, sweep=None):
    """The tables of ``table.json`` from the per-image records (the single source of truth)."""
    builder = TableBuilder(models, methods)
    for r in sorted(records, key=_record_order):
        builder.add(r)
    return builder.table(sweep)


def _record_order(record):
    return int(record["image_id"]), record["model"], record["method"]


def _mean_or_none(total, count):
    return total / count if count else None


def _as_float(value):
    return float(value) if value not in ("", None) else float("nan")


def _percent(cell):
    if cell["n"] == 0:
        return "n/a"
    if not np.isfinite(cell["low"]):
        return f"{100 * cell['mean']:.2f} (n={cell['n']})"
    text = f"{100 * cell['mean']:.2f} [{100 * cell['low']:.2f}, {100 * cell['high']:.2f}] (n={cell['n']})"
    if cell["undefined"]:
        text += f", {cell['undefined']} undefined"
    return text


def markdown(table, models, methods, settings):
    """The tables as Markdown: means in %, 95 % CI in brackets, n valid images."""
    lines = []
    for score, description in SCORES.items():
        lines += [f"### {description}", "", "| model | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
        for m in models:
            lines.append(f"| {m} | " + " | ".join(_percent(table[score][m][k]) for k in methods) + " |")
        if score in table.get("chance", {}):
            lines.append("| uniform map (chance) | " + " | ".join(_percent(table["chance"][score]) for _ in methods) + " |")
        lines.append("")
    for score, rows in table.get("paired_unet_minus_ablated", {}).items():
        lines += [
            f"### U-Net minus ablated U-Net, {score} (paired over images)", "",
            "| method | mean difference (points) | 95 % CI | p (paired t) | n |", "|---|---|---|---|---|",
        ]
        for method, d in rows.items():
            if d["n"] < 2:
                lines.append(f"| {method} | n/a | n/a | n/a | {d['n']} |")
                continue
            lines.append(
                f"| {method} | {100 * d['mean_difference']:+.2f} | [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] "
                f"| {d['p_value']:.2g} | {d['n']} |"
            )
        lines.append("")
    sweep = table.get("threshold_sweep")
    if sweep:
        thresholds = sorted(next(iter(next(iter(sweep.values())).values())))
        lines += [
            "### Reference-mask threshold sweep: mean s against the thresholded ResNet50 + GradCAM++ map (%)", "",
            "| model | method | " + " | ".join(f"t={t}" for t in thresholds) + " |", "|---|---" + "|---" * len(thresholds) + "|",
        ]
        for m in models:
            for k in methods:
                cells = ("n/a" if sweep[m][k][t] is None else f"{100 * sweep[m][k][t]:.2f}" for t in thresholds)
                lines.append(f"| {m} | {k} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    return "\n".join(lines) + "\n"


def evaluate(config, *, progress=True):
    """Runs the experiment and writes records, tables and figures.

    Resumes from the parts that an interrupted run with the same settings
    saved (see the module's docstring).

    Args:
        config: An ``EvalConfig``.
        progress: Show a progress bar.

    Returns:
        The table dict written to ``table.json``; for a shard whose siblings
        are not all done, ``{"settings": ..., "missing_shards": [...]}``.
    """
    import keras

    from kerascam.data import load_split

    started = time.time()
    if config.chunk < 1:
        raise ValueError(f"chunk must be a positive number of batches. Received: chunk={config.chunk}")
    runs = find_models(config.workdir, config.models)
    models = {name: model for name, (model, _) in runs.items()}
    data_config = _data_config(runs, config.dataset)
    for method in config.methods:
        cams.get_method(method)
    split = load_split(data_config, config.split, boxes_dir=config.boxes_dir)
    check_num_classes(models, split.num_classes, data_config.dataset)
    out_dir = os.path.join(config.workdir, "eval")
    reference_needed = REFERENCE[0] in models
    reference_model = {REFERENCE[0]: models[REFERENCE[0]]} if reference_needed else {}

    total = len(range(config.shard, min(config.num_images, split.num_examples), config.num_shards))
    images_per_chunk = config.batch_size * config.chunk
    settings = {
        "images": total, "split": config.split, "dataset": data_config.dataset, "image_size": data_config.image_size,
        "class": config.class_index, "scorecam_max_N": config.max_N, "mask_threshold": config.mask_threshold,
        "reference": "+".join(REFERENCE) if reference_needed else "none (resnet50 not evaluated)",
        "backend": config.backend,
    }
    if split.skipped:  # folders: unreadable image files left out of the split
        settings["unreadable_files_skipped"] = len(split.skipped)
    manifest = {
        "identity": _identity(config, runs, data_config, split),
        "models": list(models),
        "methods": list(config.methods),
        "sweep_thresholds": [float(t) for t in config.sweep_thresholds],
        "class_names": next(iter(runs.values()))[1].get("class_names"),
        "num_chunks": -(-total // images_per_chunk),
        "settings": settings,
    }
    shard_dir = _shard_dir(out_dir, config.shard, config.num_shards)
    done_chunks = _open_parts(shard_dir, manifest, out_dir)
    if done_chunks:
        print(f"resuming: {done_chunks} of {manifest['num_chunks']} chunks done ({shard_dir})", flush=True)

    done = min(total, done_chunks * images_per_chunk)
    bar = keras.utils.Progbar(total, verbose=1 if progress else 0, unit_name="image")
    if done:
        bar.update(done)
    crop_size = data_config.image_size if split.needs_crop else None
    part = _Part(done_chunks)
    for ids, images, labels, masks in _batches(config, split, crop_size, skip=done):
        results, predictions = explain_batch(
            models, config.methods, images, labels, config.class_index, config.max_N, backend=config.backend
        )
        if reference_needed:
            if REFERENCE[1] in config.methods:
                ref_maps, _, ref_status = results[REFERENCE]
            else:
                ref = explain_batch(
                    reference_model, [REFERENCE[1]], images, labels, config.class_index, backend=config.backend
                )[0]
                ref_maps, _, ref_status = ref[REFERENCE]
            ref_masks = {t: metrics.reference_mask(ref_maps, t) for t in {config.mask_threshold, *config.sweep_thresholds}}
            ref_fraction = ref_masks[config.mask_threshold].reshape(len(ids), -1).mean(axis=1)
            # What a uniform map scores: the mask's share of the image.
            part.chance["score_reference"] += [
                [int(i), float(f)] for i, f, st in zip(ids, ref_fraction, ref_status) if st == "ok"
            ]
        if masks is not None:
            mask_fraction = (masks > 0).reshape(len(ids), -1).mean(axis=1)
            part.chance["score_ground_truth"] += [[int(i), float(f)] for i, f in zip(ids, mask_fraction)]
        sweep_sums = []
        for (name, method), (maps, native, status) in results.items():
            s_ref = metrics.localization_score(maps, ref_masks[config.mask_threshold]) if reference_needed else None
            s_gt = metrics.localization_score(maps, masks) if masks is not None else None
            hits = metrics.pointing_game(maps, masks)[0] if masks is not None else None
            for t in config.sweep_thresholds if reference_needed else ():
                s = metrics.localization_score(maps, ref_masks[t])
                ok = np.isfinite(s) & (ref_status == "ok")
                sweep_sums.append([name, method, float(t), float(np.sum(s[ok])), int(np.sum(ok))])
            for i in range(len(ids)):
                ok = status[i] == "ok"
                ref_ok = reference_needed and ref_status[i] == "ok"
                part.records.append([
                    int(ids[i]),
                    int(labels[i]),
                    name,
                    method,
                    int(predictions[name][i]),
                    int(labels[i] if config.class_index == "true" else predictions[name][i]),
                    str(status[i]),
                    f"{s_ref[i]:.6f}" if ok and ref_ok else "",
                    f"{s_gt[i]:.6f}" if ok and s_gt is not None else "",
                    int(hits[i]) if ok and hits is not None else "",
                    str(ref_status[i]) if reference_needed else "missing",
                    config.max_N if method == "scorecam" else "",
                ])
        part.sweep_sums.append(sweep_sums)
        keep = config.num_figures - done if config.shard == 0 else 0
        if keep > 0:
            part.figures.append((images[:keep], None if masks is None else masks[:keep], labels[:keep],
                                 {k: v[0][:keep] for k, v in results.items()},
                                 {k: v[1][0] for k, v in results.items()} if done == 0 else None,
                                 {k: v[:keep] for k, v in predictions.items()}))
        done += len(ids)
        part.batches += 1
        part.images += len(ids)
        bar.update(done)
        if part.batches == config.chunk or done == total:
            part.save(shard_dir)
            part = _Part(part.index + 1)

    if split.skipped:
        from kerascam.data import describe_skipped

        print(describe_skipped(split.skipped), flush=True)
    if config.num_shards > 1:
        missing = [i for i in range(config.num_shards)
                   if not _is_complete(_shard_dir(out_dir, i, config.num_shards))]
        if missing:
            return {"settings": settings, "missing_shards": missing}
    return merge_shards(config, started)


def _identity(config, runs, data_config, split):
    """What the saved parts depend on: a run resumes only from parts of an equal identity."""
    identity = {
        "models": {name: _file_digest(os.path.join(config.workdir, name, "model.keras")) for name in runs},
        "methods": list(config.methods),
        "dataset": data_config.dataset,
        "image_size": data_config.image_size,
        "split": config.split,
        "split_examples": split.num_examples,
        "num_classes": split.num_classes,
        "boxes_dir": os.path.abspath(config.boxes_dir) if config.boxes_dir else None,
        "num_images": config.num_images,
        "batch_size": config.batch_size,
        "chunk": config.chunk,
        "max_N": config.max_N,
        "mask_threshold": config.mask_threshold,
        "sweep_thresholds": [float(t) for t in config.sweep_thresholds],
        "class_index": config.class_index,
        "num_figures": config.num_figures,
        "backend": config.backend,
        "shard": config.shard,
        "num_shards": config.num_shards,
    }
    return json.loads(json.dumps(identity))  # as it reads back from manifest.json


def _file_digest(path):
    # The content, not the modification time: a copied workdir (another
    # machine of a sharded run) keeps its identity, a retrained model does not.
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _shard_dir(out_dir, shard, num_shards):
    return os.path.join(out_dir, "shards", f"shard-{shard}-of-{num_shards}")


def _part_path(shard_dir, index, suffix=".json"):
    return os.path.join(shard_dir, f"chunk-{index:05d}{suffix}")


def _open_parts(shard_dir, manifest, out_dir):
    """Prepares ``shard_dir`` for a run with ``manifest``; returns the number of chunks already done.

    Parts of other settings are moved to ``eval/stale/`` (replacing an older
    copy there), never mixed in.
    """
    path = os.path.join(shard_dir, "manifest.json")
    if os.path.exists(path):
        old = io.read_json(path)
        if old.get("identity") == manifest["identity"]:
            done = 0
            while done < manifest["num_chunks"] and os.path.exists(_part_path(shard_dir, done)):
                done += 1
            return done
        changed = sorted(k for k in set(old.get("identity", {})) | set(manifest["identity"])
                         if old.get("identity", {}).get(k) != manifest["identity"].get(k))
        reason = f"the settings changed ({', '.join(changed)})"
    elif os.path.isdir(shard_dir) and os.listdir(shard_dir):
        reason = "they have no manifest"
    else:
        reason = None
    if reason:
        stale = os.path.join(out_dir, "stale", os.path.basename(shard_dir))
        shutil.rmtree(stale, ignore_errors=True)
        os.makedirs(os.path.dirname(stale), exist_ok=True)
        os.replace(shard_dir, stale)
        print(f"not resuming from the saved results in {shard_dir}: {reason}; starting afresh "
              f"(the old results are in {stale})", flush=True)
    os.makedirs(shard_dir, exist_ok=True)
    io.write_json(path, manifest)
    return 0


class _Part:
    """The results of one chunk of batches, saved as ``chunk-NNNNN.json`` (+ ``.npz`` of figure data)."""

    def __init__(self, index):
        self.index, self.batches, self.images = index, 0, 0
        self.records = []
        self.chance = {"score_reference": [], "score_ground_truth": []}
        self.sweep_sums = []  # per batch: [model, method, threshold, sum of s, count]
        self.figures = []

    def save(self, shard_dir):
        figures = sum(len(f[0]) for f in self.figures)
        if figures:
            # Before the JSON: a part whose JSON exists is complete.
            _save_figure_data(_part_path(shard_dir, self.index, ".npz"), self.figures)
        self.records.sort(key=lambda r: (r[0], r[2], r[3]))
        data = {
            "chunk": self.index,
            "images": self.images,
            "figures": figures,
            "records": self.records,
            "chance": self.chance,
            "sweep_sums": self.sweep_sums,
        }
        io.write_text(_part_path(shard_dir, self.index), json.dumps(data, separators=(",", ":")) + "\n")


def _save_figure_data(path, pieces):
    arrays = {
        "images": np.concatenate([p[0] for p in pieces]),
        "labels": np.concatenate([p[2] for p in pieces]),
    }
    if pieces[0][1] is not None:
        arrays["masks"] = np.concatenate([p[1] for p in pieces])
    for (model, method) in pieces[0][3]:
        arrays[f"map::{model}::{method}"] = np.concatenate([p[3][(model, method)] for p in pieces])
        if pieces[0][4] is not None:
            arrays[f"native::{model}::{method}"] = pieces[0][4][(model, method)]
    for model in pieces[0][5]:
        arrays[f"predicted::{model}"] = np.concatenate([p[5][model] for p in pieces])
    with io.atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def _is_complete(shard_dir):
    path = os.path.join(shard_dir, "manifest.json")
    if not os.path.exists(path):
        return False
    return all(os.path.exists(_part_path(shard_dir, i)) for i in range(io.read_json(path)["num_chunks"]))


def merge_shards(config, started=None):
    """Builds the tables from the saved parts of all ``config.num_shards`` shards.

    Models, methods and thresholds are those the shards were run with.
    """
    out_dir = os.path.join(config.workdir, "eval")
    shard_dirs = [_shard_dir(out_dir, i, config.num_shards) for i in range(config.num_shards)]
    missing = [d for d in shard_dirs if not _is_complete(d)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) not evaluated yet (or not finished), e.g. {missing[0]}")
    return _finish(out_dir, shard_dirs, started)


def _check_same_evaluation(shard_dirs, manifests):
    first = {k: v for k, v in manifests[0]["identity"].items() if k != "shard"}
    for shard_dir, manifest in zip(shard_dirs[1:], manifests[1:]):
        other = {k: v for k, v in manifest["identity"].items() if k != "shard"}
        changed = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        if changed:
            raise ValueError(
                f"{shard_dir} was evaluated with other settings than {shard_dirs[0]} ({', '.join(changed)} differ); "
                "run every shard with the same flags"
            )


def _shard_parts(shard, shard_dir, num_chunks, on_part):
    """The records of one shard in image order, reading one part at a time."""
    for index in range(num_chunks):
        data = io.read_json(_part_path(shard_dir, index))
        on_part(shard, data)
        for row in data["records"]:
            yield dict(zip(RECORD_FIELDS, row))


def _finish(out_dir, shard_dirs, started=None):
    """Records, tables and figures from the saved parts of one or more shards, streaming."""
    manifests = [io.read_json(os.path.join(d, "manifest.json")) for d in shard_dirs]
    _check_same_evaluation(shard_dirs, manifests)
    first = manifests[0]
    model_names, methods = first["models"], first["methods"]
    chance = {score: (array.array("q"), array.array("d")) for score in ("score_reference", "score_ground_truth")}
    shard_sweep_sums = [{} for _ in shard_dirs]
    images = [0]

    def on_part(shard, data):
        images[0] += data["images"]
        for score, pairs in data["chance"].items():
            for image_id, value in pairs:
                chance[score][0].append(image_id)
                chance[score][1].append(value)
        # Batch by batch, then shard by shard: the same additions in any
        # chunking, so a resumed run's sweep equals an uninterrupted one's.
        for batch in data["sweep_sums"]:
            for m, k, t, total, count in batch:
                acc = shard_sweep_sums[shard].setdefault((m, k, float(t)), [0.0, 0])
                acc[0] += total
                acc[1] += count

    streams = [_shard_parts(i, d, m["num_chunks"], on_part) for i, (d, m) in enumerate(zip(shard_dirs, manifests))]
    builder = TableBuilder(model_names, methods)
    with io.atomic_path(os.path.join(out_dir, "records.csv")) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, RECORD_FIELDS)
            writer.writeheader()
            for record in heapq.merge(*streams, key=_record_order):
                writer.writerow(record)
                builder.add(record)
            f.flush()
            os.fsync(f.fileno())
    sweep_sums = {}
    for sums in shard_sweep_sums:
        for key, (total, count) in sums.items():
            acc = sweep_sums.setdefault(key, [0.0, 0])
            acc[0] += total
            acc[1] += count
    sweep = None
    if sweep_sums:
        sweep = {m: {k: {t: _mean_or_none(*sweep_sums[(m, k, t)]) for t in first["sweep_thresholds"]}
                     for k in methods} for m in model_names}
    table = builder.table(sweep)
    table["chance"] = {}
    for score, (ids, values) in chance.items():
        if values:
            table["chance"][score] = _cell(np.asarray(values)[np.argsort(np.asarray(ids), kind="stable")])
    settings = dict(first["settings"], images=images[0])
    table["settings"] = settings
    table["seconds"] = time.time() - started if started else None
    _write_tables(out_dir, table, model_names, methods, settings)
    if os.path.exists(_part_path(shard_dirs[0], 0, ".npz")):  # shard 0 saves the figures' data
        _write_figures(out_dir, shard_dirs[0], model_names, methods, first["class_names"])
    return table


def _write_tables(out_dir, table, models, methods, settings):
    io.write_json(os.path.join(out_dir, "table.json"), table)
    io.write_text(os.path.join(out_dir, "table.md"), markdown(table, models, methods, settings))
    buffer = _io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["score", "model", "method", "mean", "ci_low", "ci_high", "n", "undefined"])
    for score in SCORES:
        for m in models:
            for k in methods:
                c = table[score][m][k]
                writer.writerow([score, m, k, c["mean"], c["low"], c["high"], c["n"], c["undefined"]])
    io.write_text(os.path.join(out_dir, "table.csv"), buffer.getvalue())


def _write_figures(out_dir, shard_dir, models, methods, class_names):
    """The overview figures from the figure data that shard 0's first parts saved."""
    from kerascam import figures

    parts, index = [], 0
    while os.path.exists(_part_path(shard_dir, index, ".npz")) and os.path.exists(_part_path(shard_dir, index)):
        with np.load(_part_path(shard_dir, index, ".npz")) as data:
            parts.append({k: data[k] for k in data.files})
        index += 1
    keys = [(m, k) for m in models for k in methods]
    images = np.concatenate([p["images"] for p in parts])
    masks = np.concatenate([p["masks"] for p in parts]) if "masks" in parts[0] else None
    labels = np.concatenate([p["labels"] for p in parts])
    maps = {key: np.concatenate([p["map::{}::{}".format(*key)] for p in parts]) for key in keys}
    predictions = {m: np.concatenate([p[f"predicted::{m}"] for p in parts]) for m in models}
    folder = os.path.join(out_dir, "figures")
    figures.plot_explanations(
        os.path.join(folder, "explanations.png"), images, masks, maps,
        labels=labels, predictions=predictions, class_names=class_names, image_ids=np.arange(len(images)),
    )
    natives = {key: parts[0]["native::{}::{}".format(*key)] for key in keys}
    figures.plot_native_maps(os.path.join(folder, "native_maps.png"), images[0], natives)


def load_table(workdir):
    with open(os.path.join(workdir, "eval", "table.json"), encoding="utf-8") as f:
        return json.load(f)
