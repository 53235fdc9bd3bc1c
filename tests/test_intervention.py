"""Ground truth by intervention: the core by hand, the scorer on a toy model, the skip line."""

import numpy as np
import pytest

from kerascam import metrics
from kerascam.evaluation.experiment import _active_scorers
from kerascam.evaluation.scorer import Batch, Explained, get_scorers
from kerascam.evaluation.scores.intervention import agreement, part_importance, part_masses

SIZE, PARTS, IMAGES = 8, 6, 200


def test_part_masses_importance_and_agreement_by_hand():
    parts = np.array([[[1, 2, 2, 0], [3, 3, 4, 0]]], np.uint8)  # part 5 and 6 absent
    cam = np.array([[[0.5, 0.25, 0.25, 9.0], [0.0, 0.1, 0.3, 0.0]]])
    masses, present = part_masses(cam, parts, num_parts=6)
    np.testing.assert_allclose(masses, [[0.5, 0.5, 0.1, 0.3, 0.0, 0.0]])
    np.testing.assert_array_equal(present, [[True, True, True, True, False, False]])
    original = np.array([[4.0, 1.0]])
    intervened = np.array([[[1.0, 0.0], [3.5, 0.0], [4.0, 0.0], [3.0, 0.0], [4.0, 0.0], [4.0, 0.0]]])
    drops = part_importance(original, intervened, [0])
    np.testing.assert_allclose(drops, [[3.0, 0.5, 0.0, 1.0, 0.0, 0.0]])
    spearman, top = agreement(masses, drops, present)
    # Over the 4 parts present: mass ranks (3.5, 3.5, 1, 2), drop ranks (4, 2, 1, 3).
    a, b = np.array([3.5, 3.5, 1, 2]) - 2.5, np.array([4, 2, 1, 3]) - 2.5
    np.testing.assert_allclose(spearman, [a @ b / np.sqrt((a @ a) * (b @ b))])
    np.testing.assert_array_equal(top, [0.0])  # two parts share the most mass: a miss


@pytest.fixture(scope="module")
def toy():
    """Images whose parts are fixed bands, and a linear model whose logit 0 reads only the marker.

    Removing a part sets its pixels to 0; the logit of class 0 is the sum of
    the evidence marker's pixels, so only the marker matters to the model.
    """
    import keras

    parts = np.zeros((SIZE, SIZE), np.uint8)
    for p in range(1, PARTS + 1):
        parts[p - 1] = p  # row p-1 is part p; rows 6-7 are background
    rng = np.random.default_rng(0)
    images = rng.uniform(1.0, 255.0, size=(IMAGES, SIZE, SIZE, 3)).astype(np.float32)
    interventions = np.repeat(images[:, None], PARTS, axis=1)
    for p in range(PARTS):
        interventions[:, p, p] = 0.0
    inputs = keras.Input((SIZE, SIZE, 3))
    logits = keras.layers.Dense(2, use_bias=False, name="predictions")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, logits)
    kernel = np.zeros((SIZE * SIZE * 3, 2), np.float32)
    kernel[:, 0] = np.repeat((parts == 1).ravel(), 3) / 100.0
    model.get_layer("predictions").set_weights([kernel])
    batch = Batch(ids=np.arange(IMAGES), images=images, labels=np.zeros(IMAGES, np.int64),
                  parts=np.repeat(parts[None], IMAGES, axis=0), interventions=interventions)
    return model, batch


def explained(model, maps):
    n = len(maps)
    return Explained(maps=maps.astype(np.float32), native=maps.astype(np.float32),
                     status=np.array(["ok"] * n), classes=np.zeros(n, np.int64), model_name="toy", model=model,
                     method="given", explain=None)


def test_the_scorer_on_a_model_that_reads_only_the_marker(toy):
    model, batch = toy
    (scorer,) = get_scorers(["intervention"], config=None)
    marker = np.repeat((batch.parts[:1] == 1).astype(np.float32), IMAGES, axis=0)
    random = np.random.default_rng(1).uniform(size=marker.shape).astype(np.float32)
    ones = {"marker": explained(model, marker), "random": explained(model, random)}
    scorer.begin_batch(batch, {("toy", k): v for k, v in ones.items()})
    exact = scorer.score(batch, ones["marker"]).values
    np.testing.assert_allclose(exact["part_spearman"], 1.0)
    np.testing.assert_allclose(exact["part_spearman_probability"], 1.0)
    np.testing.assert_array_equal(exact["part_top"], 1.0)
    np.testing.assert_array_equal(exact["follows_evidence"], 1.0)
    result = scorer.score(batch, ones["random"])
    mean, low, high, n = metrics.mean_confidence_interval(result.values["part_spearman"])
    assert n == IMAGES and low < 0.0 < high and abs(mean) < 0.1
    # The logit falls by the marker's sum / 100 when it is removed, by 0 otherwise.
    drops = scorer.summarize([("toy", "random", result.extra)])["intervention_logit_drop"]["toy"]
    np.testing.assert_allclose(drops["evidence"], batch.images[:, 0].sum(axis=(1, 2)).mean() / 100, rtol=1e-5)
    assert drops["carrier"] == drops["decoy markers"] == drops["decoy disks"] == 0.0


def test_a_dataset_without_a_generator_skips_the_score_in_one_line(capsys):
    batch = Batch(ids=np.arange(1), images=np.zeros((1, 4, 4, 3)), labels=np.zeros(1, np.int64),
                  masks=np.zeros((1, 4, 4), np.uint8))
    scorers = get_scorers(["ground_truth", "decoys", "intervention"], config=None)
    active = _active_scorers(scorers, batch, {"unet": None})
    assert [s.name for s in active] == ["ground_truth"]
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ["score 'decoys' skipped: the dataset has no map of its images' parts "
                     "(only the embedded markers data has one)",
                     "score 'intervention' skipped: the dataset has no map of its images' parts "
                     "(only the embedded markers data has one)"]
