"""The tables' statistics (kerascam/evaluation/tables.py): Wilson for hit rates, Holm over the paired family."""

import numpy as np
import pytest

from kerascam import metrics
from kerascam.evaluation import tables
from kerascam.evaluation.scorer import Field

SHARE = Field("share", "a share", paired=True)
HIT = Field("hit", "a hit", digits=0)
RATIO = Field("ratio", "a ratio", percent=False, paired=True)


class _Scorer:
    fields = (SHARE, HIT, RATIO)

    def markdown(self, summary, models, methods):
        return []


def _records():
    rng = np.random.default_rng(0)
    records = []
    for image in range(12):
        for model, offset in (("unet", 0.2), ("unet_ablated", 0.0)):
            for method in ("gradcam", "edges"):
                lift = offset if method == "gradcam" else 0.0  # the U-Net differs on gradcam only
                records.append({
                    "image_id": image, "model": model, "method": method,
                    "share": f"{0.3 + lift + 0.05 * rng.standard_normal():.6f}",
                    "hit": 0,  # never a hit: Wilson's [0, 0.24], not t's [0, 0]
                    "ratio": f"{1.0 + 0.1 * rng.standard_normal():.6f}",
                })
    return records


def test_hit_rates_get_wilson_and_paired_tests_get_holm_and_d_z():
    builder = tables.TableBuilder(("unet", "unet_ablated"), ("gradcam", "edges"), (SHARE, HIT, RATIO))
    for record in _records():
        builder.add(record)
    table = builder.table()
    hit = table["hit"]["unet"]["gradcam"]
    assert (hit["mean"], hit["low"], hit["n"]) == (0.0, 0.0, 12)
    assert hit["high"] == pytest.approx(metrics.wilson_interval(np.zeros(12)).high)  # 0.2425
    share = table["share"]["unet"]["gradcam"]
    assert share["low"] < share["mean"] < share["high"]  # Student-t for a share
    paired = table["paired_unet_minus_ablated"]
    assert set(paired) == {"share", "ratio"}  # the paired fields
    tests = [paired[f][m] for f in ("share", "ratio") for m in ("gradcam", "edges")]
    p = [d["p_value"] for d in tests]
    np.testing.assert_allclose([d["p_holm"] for d in tests], metrics.holm_adjust(p))
    assert all(d["family_size"] == 4 for d in tests)
    assert paired["share"]["gradcam"]["p_holm"] < 1e-6 < paired["share"]["edges"]["p_holm"]
    assert paired["share"]["gradcam"]["d_z"] > 2  # a lift of 0.2 over a noise of 0.05 * sqrt(2)

    text = tables.markdown(table, ("unet", "unet_ablated"), ("gradcam", "edges"), {"images": 12}, [_Scorer()])
    assert "### a hit, 95 % Wilson interval" in text
    assert "0.00 [0.00, 24.25] (n=12)" in text
    assert "| d_z | p (paired t) | p (Holm, 4 tests) | n |" in text
    row = next(line for line in text.splitlines() if line.startswith("| gradcam | +2"))
    assert row.count("< 1e-6") == 2  # p and Holm's p, never 1e-50
    assert "e-" not in row.replace("< 1e-6", "")


def test_join_keeps_each_models_curves_and_refuses_other_steps():
    from kerascam.evaluation.join import join_tables

    def table(model, curve, x=(0.0, 0.5, 1.0)):
        cell = {"mean": 0.4, "low": 0.3, "high": 0.5, "n": 3, "undefined": 0}
        return {"settings": {"scores": "faithfulness", "images": 3}, "chance": {},
                "insertion_auc": {model: {"gradcam": cell, "noise": cell}},
                "faithfulness_curves": {"x": list(x), "curves": {model: {"gradcam": curve}}}}

    joined, models, methods = join_tables([("b", table("vgg16", [3, 2, 1])), ("a", table("unet", [1, 2, 3]))])
    assert models == ["unet", "vgg16"] and methods == ["gradcam", "noise"]  # the registry's and evaluate.py's order
    assert joined["faithfulness_curves"] == {"x": [0.0, 0.5, 1.0],
                                             "curves": {"unet": {"gradcam": [1, 2, 3]}, "vgg16": {"gradcam": [3, 2, 1]}}}
    assert list(joined["insertion_auc"]) == ["unet", "vgg16"] and joined["paired_unet_minus_ablated"] == {}
    with pytest.raises(ValueError, match="faithfulness_curves differ in their x values"):
        join_tables([("b", table("vgg16", [3, 2, 1])), ("a", table("unet", [1, 2, 3], x=(0.0, 1.0, 2.0)))])
