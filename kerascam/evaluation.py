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
"""

import csv
import dataclasses
import io as _io
import json
import os
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


def _batches(config, data_config):
    """The number of images this run explains, and their batches.

    Returns:
        ``(count, iterator)``; the iterator streams (image ids, images,
        labels, masks or None) batches of the split (this shard's part).
    """
    from kerascam.data import load_split
    from kerascam.data.pipeline import evaluation_batches

    split = load_split(data_config, config.split, boxes_dir=config.boxes_dir)
    count = len(range(config.shard, min(config.num_images, split.num_examples), config.num_shards))
    crop_size = data_config.image_size if split.needs_crop else None
    examples = split.examples.take(config.num_images).enumerate()
    if config.num_shards > 1:
        examples = examples.filter(lambda i, _: i % config.num_shards == config.shard)
    ids = examples.map(lambda i, _: i).batch(config.batch_size)
    batches = evaluation_batches(examples.map(lambda _, ex: ex), config.batch_size, crop_size=crop_size)

    def iterate():
        for image_ids, batch in zip(ids.as_numpy_iterator(), batches.as_numpy_iterator()):
            yield image_ids, batch["image"], batch["label"], batch.get("mask")

    return count, iterate()


def explain_batch(models, methods, images, labels, class_index="predicted", max_N=None, batch_size=None,
                  backend="kerascam"):
    """Maps of every model x method for one batch.

    Returns:
        ``{(model, method): (maps (N,H,W) in [0,1], native (N,h,w), status (N,))}``
        and ``{model: predicted classes (N,)}``.
    """
    from kerascam.models import target_layer_name

    out, predictions = {}, {}
    for name, model in models.items():
        predicted = cams.predicted_classes(model, images)
        predictions[name] = predicted
        target = labels if class_index == "true" else predicted
        channels = model.get_layer(target_layer_name(model)).output.shape[-1]
        for method in methods:
            # max_N at or above the channel count means all channels.
            kwargs = {"max_N": max_N} if method == "scorecam" and max_N and max_N < channels else {}
            maps, native = cams.explain(
                model, images, method, class_index=target, return_native=True, batch_size=batch_size,
                backend=backend, **kwargs
            )
            out[(name, method)] = (maps, native, metrics.map_status(native))
    return out, predictions


def _cell(values):
    values = np.asarray(values, dtype=float)
    ci = metrics.mean_confidence_interval(values)
    return {
        "mean": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n,
        "undefined": int(np.sum(~np.isfinite(values))),
    }


def aggregate(records, models, methods, sweep=None):
    """The tables of ``table.json`` from the per-image records (the single source of truth)."""
    by_key = {}
    for r in records:
        by_key.setdefault((r["model"], r["method"]), []).append(r)
    table = {}
    for score in SCORES:
        table[score] = {
            m: {k: _cell([float(r[score]) if r[score] != "" else np.nan for r in by_key.get((m, k), [])]) for k in methods}
            for m in models
        }
    paired = {}
    if "unet" in models and "unet_ablated" in models:
        for score in ("score_reference", "score_ground_truth"):
            paired[score] = {}
            for method in methods:
                a = {r["image_id"]: _as_float(r[score]) for r in by_key.get(("unet", method), [])}
                b = {r["image_id"]: _as_float(r[score]) for r in by_key.get(("unet_ablated", method), [])}
                ids = sorted(set(a) & set(b))
                d = metrics.paired_difference([a[i] for i in ids], [b[i] for i in ids])
                paired[score][method] = d._asdict()
    table["paired_unet_minus_ablated"] = paired
    if sweep:
        table["threshold_sweep"] = sweep
    return table


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
            lines.append(f"| uniform map (chance) | " + " | ".join(_percent(table["chance"][score]) for _ in methods) + " |")
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

    Args:
        config: An ``EvalConfig``.
        progress: Show a progress bar.

    Returns:
        The table dict written to ``table.json``.
    """
    import keras

    started = time.time()
    runs = find_models(config.workdir, config.models)
    models = {name: model for name, (model, _) in runs.items()}
    data_config = _data_config(runs, config.dataset)
    for method in config.methods:
        cams.get_method(method)
    out_dir = os.path.join(config.workdir, "eval")
    reference_needed = REFERENCE[0] in models
    reference_model = {REFERENCE[0]: models[REFERENCE[0]]} if reference_needed else {}

    records, figure_parts = [], []
    sweep_sums = {}
    # What a uniform map scores: the mask's share of the image.
    chance = {"score_reference": [], "score_ground_truth": []}
    total, batches = _batches(config, data_config)
    bar = keras.utils.Progbar(total, verbose=1 if progress else 0, unit_name="image")
    done = 0
    for ids, images, labels, masks in batches:
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
            chance["score_reference"] += [float(f) for f, st in zip(ref_fraction, ref_status) if st == "ok"]
        if masks is not None:
            chance["score_ground_truth"] += [float(f) for f in (masks > 0).reshape(len(ids), -1).mean(axis=1)]
        for (name, method), (maps, native, status) in results.items():
            s_ref = metrics.localization_score(maps, ref_masks[config.mask_threshold]) if reference_needed else None
            s_gt = metrics.localization_score(maps, masks) if masks is not None else None
            hits = metrics.pointing_game(maps, masks)[0] if masks is not None else None
            for t in config.sweep_thresholds if reference_needed else ():
                s = metrics.localization_score(maps, ref_masks[t])
                ok = np.isfinite(s) & (ref_status == "ok")
                acc = sweep_sums.setdefault((name, method, t), [0.0, 0])
                acc[0] += float(np.sum(s[ok]))
                acc[1] += int(np.sum(ok))
            for i in range(len(ids)):
                ok = status[i] == "ok"
                ref_ok = reference_needed and ref_status[i] == "ok"
                records.append({
                    "image_id": int(ids[i]),
                    "label": int(labels[i]),
                    "model": name,
                    "method": method,
                    "predicted": int(predictions[name][i]),
                    "explained_class": int(labels[i] if config.class_index == "true" else predictions[name][i]),
                    "status": status[i],
                    "score_reference": f"{s_ref[i]:.6f}" if ok and ref_ok else "",
                    "score_ground_truth": f"{s_gt[i]:.6f}" if ok and s_gt is not None else "",
                    "pointing_hit": int(hits[i]) if ok and hits is not None else "",
                    "reference_status": ref_status[i] if reference_needed else "missing",
                    "max_N": config.max_N if method == "scorecam" else "",
                })
        if config.shard == 0 and sum(len(p[0]) for p in figure_parts) < config.num_figures:
            keep = config.num_figures - sum(len(p[0]) for p in figure_parts)
            figure_parts.append((
                images[:keep], None if masks is None else masks[:keep], labels[:keep],
                {k: v[0][:keep] for k, v in results.items()},
                {k: v[1][:keep] for k, v in results.items()},
                {k: v[:keep] for k, v in predictions.items()},
            ))
        done += len(ids)
        bar.update(done)

    settings = {
        "images": done, "split": config.split, "dataset": data_config.dataset, "image_size": data_config.image_size,
        "class": config.class_index, "scorecam_max_N": config.max_N, "mask_threshold": config.mask_threshold,
        "reference": "+".join(REFERENCE) if reference_needed else "none (resnet50 not evaluated)",
        "backend": config.backend,
    }
    partial = {
        "models": list(models), "records": records, "chance": chance, "settings": settings,
        "sweep_sums": [[m, k, t, total, count] for (m, k, t), (total, count) in sweep_sums.items()],
    }
    if figure_parts:
        _write_figures(out_dir, figure_parts, runs)
    if config.num_shards > 1:
        io.write_json(_shard_path(out_dir, config.shard, config.num_shards), partial)
        missing = [i for i in range(config.num_shards) if not os.path.exists(_shard_path(out_dir, i, config.num_shards))]
        if missing:
            return {"settings": settings, "missing_shards": missing}
        return merge_shards(config, started)
    return _finish(out_dir, [partial], config, started)


def _shard_path(out_dir, shard, num_shards):
    return os.path.join(out_dir, "shards", f"shard-{shard}-of-{num_shards}.json")


def merge_shards(config, started=None):
    """Builds the tables from the saved results of all ``config.num_shards`` shards."""
    out_dir = os.path.join(config.workdir, "eval")
    paths = [_shard_path(out_dir, i, config.num_shards) for i in range(config.num_shards)]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) not evaluated yet, e.g. {missing[0]}")
    return _finish(out_dir, [io.read_json(p) for p in paths], config, started)


def _finish(out_dir, partials, config, started=None):
    """Tables from one or more partial results (records, sweep sums, chance values)."""
    model_names = partials[0]["models"]
    records = sorted((r for p in partials for r in p["records"]), key=lambda r: (int(r["image_id"]), r["model"], r["method"]))
    sweep_sums = {}
    for p in partials:
        for m, k, t, total, count in p["sweep_sums"]:
            acc = sweep_sums.setdefault((m, k, float(t)), [0.0, 0])
            acc[0] += total
            acc[1] += count
    sweep = None
    if sweep_sums:
        sweep = {m: {k: {t: _mean_or_none(*sweep_sums[(m, k, float(t))]) for t in config.sweep_thresholds}
                     for k in config.methods} for m in model_names}
    table = aggregate(records, model_names, config.methods, sweep)
    chance = {score: [v for p in partials for v in p["chance"][score]] for score in partials[0]["chance"]}
    table["chance"] = {score: _cell(values) for score, values in chance.items() if values}
    settings = dict(partials[0]["settings"], images=sum(p["settings"]["images"] for p in partials))
    table["settings"] = settings
    table["seconds"] = time.time() - started if started else None
    _write_outputs(out_dir, records, table, model_names, config.methods, settings)
    return table


def _write_outputs(out_dir, records, table, models, methods, settings):
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, RECORD_FIELDS)
    writer.writeheader()
    writer.writerows(records)
    io.write_text(os.path.join(out_dir, "records.csv"), buffer.getvalue())
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


def _write_figures(out_dir, parts, runs):
    from kerascam import figures

    images = np.concatenate([p[0] for p in parts])
    masks = None if parts[0][1] is None else np.concatenate([p[1] for p in parts])
    labels = np.concatenate([p[2] for p in parts])
    keys = list(parts[0][3])
    maps = {k: np.concatenate([p[3][k] for p in parts]) for k in keys}
    predictions = {m: np.concatenate([p[5][m] for p in parts]) for m in parts[0][5]}
    class_names = next(iter(runs.values()))[1].get("class_names")
    folder = os.path.join(out_dir, "figures")
    figures.plot_explanations(
        os.path.join(folder, "explanations.png"), images, masks, maps,
        labels=labels, predictions=predictions, class_names=class_names, image_ids=np.arange(len(images)),
    )
    natives = {k: parts[0][4][k][0] for k in keys}
    figures.plot_native_maps(os.path.join(folder, "native_maps.png"), images[0], natives)


def load_table(workdir):
    with open(os.path.join(workdir, "eval", "table.json"), encoding="utf-8") as f:
        return json.load(f)
