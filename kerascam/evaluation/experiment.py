"""The experiment: every model x method x score on the first images of a split.

For each image, each trained model and each column (a CAM method, a fused
variant or a baseline map, `kerascam.evaluation.maps`), one record: the base
fields (label, prediction, the class explained, the map's status, ScoreCAM's
``max_N``) and the fields of every scorer of the run
(`kerascam.evaluation.scorer`). Maps that are undefined (all zero, constant
or non-finite) are kept as records with their status and no score; tables
count them separately.

Outputs in ``WORKDIR/eval/``: ``records.csv``, ``table.md``, ``table.csv``,
``table.json`` and ``figures/``; the saved parts that make a run resumable
are described in `kerascam.evaluation.parts`.
"""

import collections
import dataclasses
import json
import os
import time

import numpy as np

from kerascam import backend, io
from kerascam.evaluation import parts
from kerascam.evaluation.maps import available_columns, check_columns, explain_batch
from kerascam.evaluation.scorer import Batch, ScoreResult, get_scorers
from kerascam.evaluation.scores.reference import REFERENCE
from kerascam.models import MODEL_NAMES

# What each need of a scorer is called in the one line that says it is missing.
_MISSING = {
    "ground_truth": "the dataset has no ground-truth masks",
    "evidence": "the dataset has no evidence masks (only the embedded shapes and markers have them)",
    "parts": "the dataset has no map of its images' parts (only the embedded markers data has one)",
    "interventions": "the dataset has no generator to draw its images again without each part "
                     "(only the embedded markers data has one)",
    "reference": "ResNet50, whose GradCAM++ map is the reference, is not evaluated",
}


def find_models(workdir, names=None):
    """Trained models in ``workdir``: {name: (model, run.json dict)}.

    A model is a folder of ``workdir`` holding a ``model.keras``: the paper's
    four (`MODEL_NAMES`, in that order) and any other, sorted by name after
    them. A folder without ``run.json`` (a model of your own) gets
    ``{"config": {"image_size": its input side, "dataset": None}}``: the
    dataset then comes from the other runs or ``--dataset``.
    """
    from kerascam.export import load_keras

    if names:
        wanted = list(names)
    else:
        present = [n for n in sorted(os.listdir(workdir)) if os.path.isfile(os.path.join(workdir, n, "model.keras"))]
        wanted = [n for n in MODEL_NAMES if n in present] + [n for n in present if n not in MODEL_NAMES]
    if not wanted:
        raise FileNotFoundError(
            f"no trained model in {workdir!r} (expected {workdir}/MODEL/model.keras); run train.py first"
        )
    found = {}
    for name in wanted:
        path = os.path.join(workdir, name, "model.keras")
        if not os.path.exists(path):
            if name in MODEL_NAMES:
                raise FileNotFoundError(f"{path} does not exist; train it with: python train.py --model {name}")
            present = [n for n in sorted(os.listdir(workdir)) if os.path.isfile(os.path.join(workdir, n, "model.keras"))]
            raise FileNotFoundError(f"{path} does not exist; models in {workdir}: {', '.join(present) or 'none'}")
        model = load_keras(path)
        run_path = os.path.join(workdir, name, "run.json")
        if os.path.exists(run_path):
            run = io.read_json(run_path)
        else:
            run = {"config": {"image_size": model.input_shape[1], "dataset": None}}
        found[name] = (model, run)
    return found


def _data_config(runs, dataset, max_pixels=None):
    sizes = {run["config"]["image_size"] for _, run in runs.values()} - {None}  # None: a model of any input size
    datasets = {run["config"]["dataset"] for _, run in runs.values()} - {None}  # None: a model without run.json
    if not datasets and not dataset:
        raise ValueError(f"no run.json beside {', '.join(runs)}: say which data to evaluate on with --dataset")
    if len(sizes) > 1 or len(datasets) > 1:
        raise ValueError(
            f"the models were trained on different data (image sizes {sorted(sizes)}, datasets {sorted(datasets)}); "
            "evaluate them separately with --models"
        )
    from kerascam.configs import TrainConfig

    trained = [run["config"] for _, run in runs.values() if run["config"]["dataset"] is not None]
    config = trained[0] if trained else {"dataset": dataset, **({"image_size": sizes.pop()} if sizes else {})}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in config.items() if k in fields})
    if dataset:
        config = dataclasses.replace(config, dataset=dataset)
    if max_pixels is not None:
        config = dataclasses.replace(config, max_pixels=max_pixels)
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
        `Batch`es; ``skip`` drops examples before they are cropped or
        batched, so resuming costs no explaining.
    """
    if split.examples is None:  # an embedded dataset under JAX: its arrays, no tf.data
        yield from _array_batches(config, split.arrays, skip)
        return
    from kerascam.data.pipeline import evaluation_batches

    examples = split.examples.take(config.num_images).enumerate()
    if config.num_shards > 1:
        examples = examples.filter(lambda i, _: i % config.num_shards == config.shard)
    examples = examples.map(lambda i, ex: dict(ex, image_id=i))
    if skip:
        examples = examples.skip(skip)
    for batch in evaluation_batches(examples, config.batch_size, crop_size=crop_size).as_numpy_iterator():
        yield _batch(batch)


def _array_batches(config, arrays, skip):
    """`_batches` over a split's NumPy arrays: the same images, ids and features as tf.data gives."""
    ids = np.arange(min(config.num_images, len(arrays["label"])))
    ids = ids[ids % config.num_shards == config.shard][skip:]
    features = {k: v for k, v in arrays.items() if k != "file_name"}
    for start in range(0, len(ids), config.batch_size):
        window = ids[start:start + config.batch_size]
        batch = {k: v[window] for k, v in features.items()}
        yield _batch(dict(batch, image_id=window.astype(np.int64), label=batch["label"].astype(np.int64)))


def _batch(batch):
    return Batch(batch["image_id"], batch["image"], batch["label"], batch.get("mask"), batch.get("evidence"),
                 batch.get("parts"), batch.get("interventions"))


def _available(need, batch, models):
    if need == "ground_truth":
        return batch.masks is not None
    if need == "evidence":
        return batch.evidence is not None
    if need == "parts":
        return batch.parts is not None
    if need == "interventions":
        return batch.interventions is not None
    if need == "reference":
        return REFERENCE[0] in models
    return True


def evaluate(config, *, progress=True):
    """Runs the experiment and writes records, tables and figures.

    Resumes from the parts that an interrupted run with the same settings
    saved (`kerascam.evaluation.parts`).

    Args:
        config: An `EvalConfig`.
        progress: Show a progress bar.

    Returns:
        The table dict written to ``table.json``; for a shard whose siblings
        are not all done, ``{"settings": ..., "missing_shards": [...]}``.
    """
    started = time.time()
    if config.chunk < 1:
        raise ValueError(f"chunk must be a positive number of batches. Received: chunk={config.chunk}")
    setup = _set_up(config)
    out_dir = os.path.join(config.workdir, "eval")
    total = len(range(config.shard, min(config.num_images, setup.split.num_examples), config.num_shards))
    settings = _settings(config, setup, total)
    manifest = _manifest(config, setup, settings, total)
    folder = parts.shard_dir(out_dir, config.shard, config.num_shards)
    done_chunks = parts.open_parts(folder, manifest, out_dir)
    if done_chunks:
        print(f"resuming: {done_chunks} of {manifest['num_chunks']} chunks done ({folder})", flush=True)
    seconds = _run_batches(config, setup, folder, total, done_chunks, progress)
    return _finish(config, setup.split, settings, out_dir, started, seconds)


@dataclasses.dataclass
class _Setup:
    """What a run evaluates, found and checked before any work (`_set_up`)."""

    methods: list  # the map columns, those every model can have
    scorers: list
    runs: dict  # {name: (model, run.json dict)}, `find_models`
    models: dict  # {name: model}
    data_config: object  # the `TrainConfig` whose data the models are evaluated on
    split: object  # the loaded split


def _set_up(config):
    """The columns, scorers, models and data of a run; one-line errors for what does not fit together."""
    from kerascam.data import load_split

    methods = check_columns(available_columns() if config.methods is None else config.methods)
    scorers = get_scorers(config.scores, config)
    runs = find_models(config.workdir, config.models)
    models = {name: model for name, (model, _) in runs.items()}
    methods = _columns_every_model_has(methods, models)
    data_config = _data_config(runs, config.dataset, config.max_pixels)
    split = load_split(data_config, config.split, boxes_dir=config.boxes_dir)
    check_num_classes(models, split.num_classes, data_config.dataset)
    return _Setup(methods, scorers, runs, models, data_config, split)


def _settings(config, setup, total):
    """The settings a table reports: the run's own, then each scorer's that are not there yet."""
    data_config, models, scorers = setup.data_config, setup.models, setup.scorers
    settings = {
        "images": total, "split": config.split, "dataset": data_config.dataset, "image_size": data_config.image_size,
        "class": config.class_index, "scorecam_max_N": config.max_N, "mask_threshold": config.mask_threshold,
        "reference": "+".join(REFERENCE) if REFERENCE[0] in models else "none (resnet50 not evaluated)",
        "backend": config.backend, "keras_backend": backend.name(), "scores": "+".join(s.name for s in scorers),
    }
    for scorer in scorers:
        settings.update({k: v for k, v in scorer.settings().items() if k not in settings})
    if setup.split.skipped:  # folders: unreadable image files left out of the split
        settings["unreadable_files_skipped"] = len(setup.split.skipped)
    return settings


def _manifest(config, setup, settings, total):
    """The manifest of the saved parts (`kerascam.evaluation.parts.open_parts`)."""
    return {
        "identity": _identity(config, setup.runs, setup.data_config, setup.split, setup.methods, setup.scorers),
        "models": list(setup.models),
        "methods": setup.methods,
        "scores": [s.name for s in setup.scorers],
        "class_names": next(iter(setup.runs.values()))[1].get("class_names"),
        "num_chunks": -(-total // (config.batch_size * config.chunk)),
        "settings": settings,
    }


def _run_batches(config, setup, folder, total, done_chunks, progress):
    """Explains and scores the images after the ``done_chunks`` saved, saving a part every ``config.chunk`` batches.

    Returns:
        A Counter of this process's wall-clock seconds per stage: "explain"
        and each scorer's name.
    """
    import keras

    done = min(total, done_chunks * config.batch_size * config.chunk)
    bar = keras.utils.Progbar(total, verbose=1 if progress else 0, unit_name="image")
    if done:
        bar.update(done)
    crop_size = setup.data_config.image_size if setup.split.needs_crop else None
    part = parts.Part(done_chunks)
    active = None
    seconds = collections.Counter()  # wall-clock of this process per stage: "explain" and each score
    for batch in _batches(config, setup.split, crop_size, skip=done):
        if active is None:
            active = _active_scorers(setup.scorers, batch, setup.models)
        tic = time.perf_counter()
        explained, context, predictions = _explain_with_reference(config, setup, active, batch)
        seconds["explain"] += time.perf_counter() - tic
        _score_batch(config, setup.scorers, active, batch, explained, context, predictions, part, seconds)
        keep = config.num_figures - done if config.shard == 0 else 0
        if keep > 0:
            part.figures.append(_figure_entry(batch, explained, predictions, keep, with_native=done == 0))
        done += len(batch.ids)
        part.batches += 1
        part.images += len(batch.ids)
        bar.update(done)
        if part.batches == config.chunk or done == total:
            part.save(folder)
            part = parts.Part(part.index + 1)
    return seconds


def _explain_with_reference(config, setup, active, batch):
    """The batch's maps of every model and column, and the context the scorers read.

    Returns:
        (explained, context, predictions): ``explain_batch``'s maps and
        predictions; ``context`` adds the reference map (ResNet50's GradCAM++)
        when a scorer needs it and it is not among the columns.
    """
    models = setup.models
    explained, predictions = explain_batch(
        models, setup.methods, batch.images, batch.labels, config.class_index, config.max_N, backend=config.backend
    )
    if any("reference" in s.needs for s in active) and REFERENCE not in explained:
        explained_ref, _ = explain_batch({REFERENCE[0]: models[REFERENCE[0]]}, [REFERENCE[1]], batch.images,
                                         batch.labels, config.class_index, backend=config.backend)
        return explained, {**explained, **explained_ref}, predictions
    return explained, explained, predictions


def _figure_entry(batch, explained, predictions, keep, *, with_native):
    """What the figures need of the batch's first ``keep`` images; the native maps of the run's first image."""
    return {
        "images": batch.images[:keep], "masks": None if batch.masks is None else batch.masks[:keep],
        "labels": batch.labels[:keep], "maps": {k: v.maps[:keep] for k, v in explained.items()},
        "native": {k: v.native[0] for k, v in explained.items()} if with_native else None,
        "predicted": {k: v[:keep] for k, v in predictions.items()},
    }


def _finish(config, split, settings, out_dir, started, seconds):
    """Reports the skipped files and the seconds, then merges the shards' parts into the tables once all are done."""
    if split.skipped:
        from kerascam.data import describe_skipped

        print(describe_skipped(split.skipped), flush=True)
    if seconds:
        print("seconds of this run: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.most_common()), flush=True)
    if config.num_shards > 1:
        missing = [i for i in range(config.num_shards)
                   if not parts.is_complete(parts.shard_dir(out_dir, i, config.num_shards))]
        if missing:
            return {"settings": settings, "missing_shards": missing}
    return parts.merge_shards(config, started, dict(seconds))


def _columns_every_model_has(methods, models):
    """``methods`` without the fused columns when a model has no declared fusion layers; one line each.

    The tables compare every model on every column, so a fused column that
    one model (a model of your own) cannot have is left out for all; evaluate
    that model apart (--models) to keep the column for the others.
    """
    from kerascam.evaluation.maps import FUSED_SUFFIX
    from kerascam.models import fusion_layer_names

    fused = [m for m in methods if m.endswith(FUSED_SUFFIX)]
    if not fused:
        return methods
    lacking = []
    for name, model in models.items():
        try:
            fusion_layer_names(model)
        except ValueError:
            lacking.append(name)
    if not lacking:
        return methods
    for column in fused:
        print(f"column {column!r} skipped: no fusion layers are declared for {', '.join(map(repr, lacking))} "
              f"(evaluate the others apart with --models to keep it)", flush=True)
    kept = [m for m in methods if m not in fused]
    if not kept:
        raise ValueError(f"nothing to evaluate: {', '.join(fused)} need fusion layers, which "
                         f"{', '.join(map(repr, lacking))} do not declare; add a CAM method with --cam")
    return kept


def _active_scorers(scorers, batch, models):
    """The scorers whose needs the data meets; one line for each of the others."""
    active = []
    for scorer in scorers:
        missing = [need for need in scorer.needs if not _available(need, batch, models)]
        if missing:
            print(f"score {scorer.name!r} skipped: {_MISSING[missing[0]]}", flush=True)
        else:
            active.append(scorer)
    return active


def _score_batch(config, scorers, active, batch, explained, context, predictions, part, seconds):
    """Appends the batch's records, chance values and extras to ``part``; adds each scorer's time to ``seconds``."""
    for scorer in active:
        tic = time.perf_counter()
        scorer.begin_batch(batch, context)
        seconds[scorer.name] += time.perf_counter() - tic
        for field, values in scorer.chance(batch).items():
            part.chance.setdefault(field, []).extend(
                [int(i), float(v)] for i, v in zip(batch.ids, values) if np.isfinite(v))
    columns = {}  # (key, field) -> per-image formatted values
    for key, one in explained.items():
        for scorer in active:
            rows = np.arange(len(batch.ids))
            if scorer.max_images is not None:
                rows = rows[batch.ids < scorer.max_images]
            if len(rows) == 0:
                continue
            tic = time.perf_counter()
            result = scorer.score(batch.take(rows), one.take(rows))
            seconds[scorer.name] += time.perf_counter() - tic
            if not isinstance(result, ScoreResult):
                result = ScoreResult(result)
            for field in scorer.fields:
                formatted = [None] * len(batch.ids)
                values = result.values[field.name]
                for row, value in zip(rows, values):
                    formatted[row] = field.format(value)
                    if field.kind != "info" and formatted[row] is not None and one.status[row] != "ok":
                        formatted[row] = ""  # an undefined map is never scored
                columns[(key, field.name)] = formatted
            if result.extra is not None:
                part.extras.setdefault(scorer.name, []).append([key[0], key[1], result.extra])
    fields = [f.name for s in scorers for f in s.fields]
    for (name, method), one in explained.items():
        for i in range(len(batch.ids)):
            record = {
                "image_id": int(batch.ids[i]),
                "label": int(batch.labels[i]),
                "model": name,
                "method": method,
                "predicted": int(predictions[name][i]),
                "explained_class": int(one.classes[i]),
                "status": str(one.status[i]),
                "max_N": config.max_N if method == "scorecam" else "",
            }
            for field in fields:
                values = columns.get(((name, method), field))
                record[field] = None if values is None else values[i]
            part.records.append(record)


def _identity(config, runs, data_config, split, methods, scorers):
    """What the saved parts depend on: a run resumes only from parts of an equal identity."""
    identity = {
        "models": {name: parts.file_digest(os.path.join(config.workdir, name, "model.keras")) for name in runs},
        "methods": list(methods),
        "scores": {s.name: s.settings() for s in scorers},
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
