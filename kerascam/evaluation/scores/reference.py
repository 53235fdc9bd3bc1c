"""The paper's score: s against the thresholded ResNet50 + GradCAM++ map.

Mascolini et al. 2022, Table I: s = sum(A * M) / sum(A), with M the
ResNet50 + GradCAM++ map of the same image, min-max normalised and
thresholded at ``mask_threshold`` (`kerascam.metrics.reference_mask`; the
paper states no threshold). Also the threshold sweep: the mean s at each of
``sweep_thresholds``. Needs ResNet50 among the evaluated models; its
GradCAM++ maps are computed for the reference even when GradCAM++ is not a
column of the table.
"""

import numpy as np

from kerascam import metrics
from kerascam.evaluation.scorer import Field, Scorer, ScoreResult, register

REFERENCE = ("resnet50", "gradcam++")


@register
class ReferenceScore(Scorer):
    name = "reference"
    description = "the paper's s against the thresholded ResNet50 + GradCAM++ map, and its threshold sweep"
    fields = (
        Field("score_reference", "s against the thresholded ResNet50 + GradCAM++ map (the paper's Table I)",
              paired=True),
        Field("reference_status", "status of the reference map", kind="info"),
    )
    needs = ("reference",)

    def settings(self):
        return {"mask_threshold": self.config.mask_threshold, "reference": "+".join(REFERENCE)}

    def _thresholds(self):
        return sorted({float(self.config.mask_threshold), *map(float, self.config.sweep_thresholds)})

    def begin_batch(self, batch, explained):
        reference = explained[REFERENCE]
        self._status = reference.status
        self._masks = {t: metrics.reference_mask(reference.maps, t) for t in self._thresholds()}

    def score(self, batch, one):
        ref_ok = self._status == metrics.OK
        s = metrics.localization_score(one.maps, self._masks[float(self.config.mask_threshold)])
        # Per batch, the sum and count of defined scores at every sweep threshold.
        sweep = []
        for t in map(float, self.config.sweep_thresholds):
            swept = metrics.localization_score(one.maps, self._masks[t])
            ok = np.isfinite(swept) & ref_ok
            sweep.append([t, float(np.sum(swept[ok])), int(np.sum(ok))])
        return ScoreResult(
            {"score_reference": np.where(ref_ok, s, np.nan), "reference_status": list(self._status)}, sweep
        )

    def chance(self, batch):
        # What a uniform map scores: the mask's share of the image.
        fraction = self._masks[float(self.config.mask_threshold)].reshape(len(batch.ids), -1).mean(axis=1)
        return {"score_reference": np.where(self._status == metrics.OK, fraction, np.nan)}

    def summarize(self, extras):
        sums = {}
        for model, method, sweep in extras:
            for t, total, count in sweep:
                acc = sums.setdefault(model, {}).setdefault(method, {}).setdefault(float(t), [0.0, 0])
                acc[0] += total
                acc[1] += count
        if not sums:
            return {}
        return {"threshold_sweep": {m: {k: {t: (total / count if count else None) for t, (total, count) in ts.items()}
                                        for k, ts in methods.items()} for m, methods in sums.items()}}

    def markdown(self, summary, models, methods):
        sweep = summary.get("threshold_sweep")
        if not sweep:
            return []
        thresholds = sorted(float(t) for t in next(iter(next(iter(sweep.values())).values())))
        lines = [
            "### Reference-mask threshold sweep: mean s against the thresholded ResNet50 + GradCAM++ map (%)", "",
            "| model | method | " + " | ".join(f"t={t}" for t in thresholds) + " |",
            "|---|---" + "|---" * len(thresholds) + "|",
        ]
        for m in models:
            for k in methods:
                values = {float(t): v for t, v in sweep.get(m, {}).get(k, {}).items()}
                cells = ("n/a" if values.get(t) is None else f"{100 * values[t]:.2f}" for t in thresholds)
                lines.append(f"| {m} | {k} | " + " | ".join(cells) + " |")
        return lines + [""]
