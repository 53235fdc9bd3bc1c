"""Ground truth by intervention: what each part of an image does to the model, against the map.

The embedded ``markers`` data is drawn from a seed, so each validation image
comes drawn again without each of its parts in turn (``interventions``,
`kerascam.data.markers.render`): the evidence marker, the rest of the disk
that carries it, each decoy's marker and the rest of each decoy's disk. The
drop of the explained class's logit when a part is removed is that part's
measured importance for this model (FunnyBirds, Hesse et al. ICCV 2023:
ground truth by removing parts). Per image:

* ``part_spearman``: Spearman's rank correlation between the map's mass per
  part and the measured importance per part (logit drops);
  ``part_spearman_probability`` the same against the drops of the class's
  softmax probability. NaN where either is the same for every part.
* ``part_top``: the part with the most map mass is the part whose removal
  lowers the logit most (a tie for the most mass is a miss).
* ``follows_evidence``: the part whose removal lowers the logit most is the
  designed evidence, the upright marker. It depends on the model alone (the
  same for every method): a model that is right for another reason (a
  shortcut) shows here, and its maps should then not be judged by the
  designed evidence.

``summarize`` also reports, per model, the mean logit drop of each kind of
part. Data without a generator (ImageNet, folders) have no
``interventions``: the score is skipped with one line.
"""

import numpy as np

from kerascam import metrics
from kerascam.evaluation.scorer import Field, Scorer, ScoreResult, register

# Forward passes per call: (P + 1) images per image of the batch.
_FORWARD_BATCH = 256

# How the table groups the parts (`kerascam.data.markers.part_names`).
_GROUPS = ("evidence", "carrier", "decoy markers", "decoy disks")


def _group(part):
    """The `_GROUPS` index of part value ``part`` (1-based)."""
    return part - 1 if part <= 2 else (2 if part % 2 else 3)


def class_logits(model, images):
    """The model's logits (n, C) of raw images (n, H, W, 3), in slices of `_FORWARD_BATCH`."""
    import keras

    from kerascam.cams.logits import logits_model

    network = logits_model(model)
    dtype = model.inputs[0].dtype
    images = np.asarray(images)
    out = [keras.ops.convert_to_numpy(network(keras.ops.cast(images[s:s + _FORWARD_BATCH], dtype), training=False))
           for s in range(0, len(images), _FORWARD_BATCH)]
    return np.concatenate(out).astype(np.float64)


def softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def part_masses(maps, parts, num_parts):
    """The map's mass on each part and whether the image has it.

    Args:
        maps: (n, H, W) maps.
        parts: (n, H, W) parts maps, values 0 (no part) to ``num_parts``.
        num_parts: P.

    Returns:
        ``(masses, present)``: float (n, P), the sum of the map over part
        p + 1; bool (n, P).
    """
    maps = np.asarray(maps, dtype=np.float64)
    parts = np.asarray(parts)
    if maps.shape != parts.shape or maps.ndim != 3:
        raise ValueError(f"maps and parts must be (n, H, W) of one shape. Received: {maps.shape} and {parts.shape}")
    flat_parts = parts.reshape(len(parts), -1).astype(np.int64)
    masses = np.zeros((len(maps), num_parts + 1))
    counts = np.zeros((len(maps), num_parts + 1))
    for i, (m, p) in enumerate(zip(maps.reshape(len(maps), -1), flat_parts)):
        masses[i] = np.bincount(p, weights=m, minlength=num_parts + 1)[: num_parts + 1]
        counts[i] = np.bincount(p, minlength=num_parts + 1)[: num_parts + 1]
    return masses[:, 1:], counts[:, 1:] > 0


def part_importance(original, intervened, classes):
    """The drop of class ``classes[i]``'s score when each part is removed.

    Args:
        original: (n, C) scores (logits or probabilities) of the images.
        intervened: (n, P, C) scores of the images without part p + 1.
        classes: (n,) the class each image is explained for.

    Returns:
        float (n, P): ``original[i, c] - intervened[i, p, c]``.
    """
    rows = np.arange(len(classes))
    classes = np.asarray(classes, dtype=np.int64)
    return original[rows, classes][:, None] - intervened[rows, :, classes]


def _strict_argmax(values):
    """The index of the one highest value, or -1 when it is tied."""
    best = int(np.argmax(values))
    return best if np.count_nonzero(values == values[best]) == 1 else -1


def agreement(masses, importance, present):
    """Per image, how the map's mass per part follows the parts' importance.

    Args:
        masses: (n, P) the map's mass per part.
        importance: (n, P) measured importance per part.
        present: (n, P) which parts the image has.

    Returns:
        ``(spearman, top)``, float (n,): Spearman's rank correlation over the
        parts present (NaN when masses or importances are all equal, or
        fewer than two parts); 1.0 where the part of most mass is the one of
        most importance (0.0 on a tie for the most mass).
    """
    spearman = np.full(len(masses), np.nan)
    top = np.full(len(masses), np.nan)
    for i, (mass, weight, here) in enumerate(zip(masses, importance, present)):
        if here.sum() < 2:
            continue
        spearman[i] = metrics.rank_correlation(mass[here][None], weight[here][None])
        top[i] = float(_strict_argmax(mass[here]) == int(np.argmax(weight[here])))
    return spearman, top


@register
class InterventionScore(Scorer):
    name = "intervention"
    description = "the map's mass per part against what removing each part does to the logit (markers data)"
    fields = (
        Field("part_spearman", "intervention: Spearman correlation of the map's mass per part with the logit "
                               "drop when the part is removed", percent=False, paired=True),
        Field("part_spearman_probability", "intervention: the same against the drop of the class probability",
              percent=False),
        Field("part_top", "intervention: the part of most map mass is the part whose removal lowers the logit most",
              digits=0),
        Field("follows_evidence", "intervention: removing the designed evidence lowers the logit most "
                                  "(the model's, the same for every method)", digits=0),
    )
    needs = ("parts", "interventions", "model")

    def begin_batch(self, batch, explained):
        # The forward passes depend on the model only: once per model and batch.
        n, num_parts = batch.interventions.shape[:2]
        self._ids = batch.ids
        self._scores = {}
        for one in explained.values():
            if one.model_name in self._scores:
                continue
            logits = class_logits(one.model, np.concatenate(
                [batch.images, batch.interventions.reshape((n * num_parts,) + batch.images.shape[1:])]))
            self._scores[one.model_name] = (logits[:n], logits[n:].reshape(n, num_parts, -1))

    def score(self, batch, one):
        rows = np.searchsorted(self._ids, batch.ids) if not np.array_equal(self._ids, batch.ids) else slice(None)
        original, intervened = (a[rows] for a in self._scores[one.model_name])
        num_parts = intervened.shape[1]
        masses, present = part_masses(one.maps, batch.parts, num_parts)
        logit_drop = part_importance(original, intervened, one.classes)
        probability_drop = part_importance(softmax(original), softmax(intervened), one.classes)
        spearman, top = agreement(masses, logit_drop, present)
        spearman_probability, _ = agreement(masses, probability_drop, present)
        follows = np.array([float(int(np.argmax(np.where(h, d, -np.inf))) == 0) if h[0] else np.nan
                            for d, h in zip(logit_drop, present)])
        # Sums of the logit drop per group of parts, for the table of what each part does.
        sums = np.zeros((len(_GROUPS), 2))
        for p in range(num_parts):
            here = present[:, p]
            sums[_group(p + 1)] += [logit_drop[here, p].sum(), here.sum()]
        values = {"part_spearman": spearman, "part_spearman_probability": spearman_probability,
                  "part_top": top, "follows_evidence": follows}
        return ScoreResult(values, sums.tolist())

    def summarize(self, extras):
        sums = {}
        for model, method, extra in extras:
            first = sums.setdefault(model, {"method": method, "sums": np.zeros((len(_GROUPS), 2))})
            if first["method"] == method:  # the same for every method: count one
                first["sums"] += np.asarray(extra)
        if not sums:
            return {}
        return {"intervention_logit_drop": {
            model: {g: (s[0] / s[1] if s[1] else None) for g, s in zip(_GROUPS, value["sums"])}
            for model, value in sums.items()}}

    def markdown(self, summary, models, methods):
        drops = summary.get("intervention_logit_drop")
        if not drops:
            return []
        lines = ["### Intervention: mean drop of the explained class's logit when a part is removed", "",
                 "| model | " + " | ".join(_GROUPS) + " |", "|---" + "|---" * len(_GROUPS) + "|"]
        for m in models:
            if m in drops:
                cells = ("n/a" if drops[m].get(g) is None else f"{drops[m][g]:.3f}" for g in _GROUPS)
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
        return lines + [""]
