"""The embedded markers testbed: its rule, its masks, its interventions, and maps that cannot win."""

import dataclasses

import numpy as np
import pytest

from kerascam import metrics
from kerascam.data import get_dataset, load_split, markers
from kerascam.evaluation.baselines import edge_maps, noise_maps
from kerascam.evaluation.scores.decoys import evidence_among_markers

CONFIG = markers.MarkersConfig(train_examples=8, validation_examples=300, seed=3)


@pytest.fixture(scope="module")
def data():
    return markers.generate(CONFIG, "validation")


def test_the_generator_is_deterministic_per_seed_and_per_image(data):
    small = dataclasses.replace(CONFIG, validation_examples=6)
    again = markers.generate(small, "validation")
    for name, array in markers.generate(small, "validation").items():
        np.testing.assert_array_equal(array, again[name])
    other = markers.generate(dataclasses.replace(small, seed=4), "validation")
    assert not np.array_equal(other["image"], again["image"])
    # Any image drawn again alone is the same image.
    image, parts = markers.render(markers.draw_scene(CONFIG, "validation", 123))
    np.testing.assert_array_equal(image, data["image"][123])
    np.testing.assert_array_equal(parts, data["parts"][123])


def test_the_evidence_is_exactly_the_upright_marker_and_decoys_lie(data):
    for i in range(40):
        image, parts, evidence, mask = data["image"][i], data["parts"][i], data["evidence"][i], data["mask"][i]
        # Read from the image alone: inside the carrier disk, the pixels not
        # of the disk's (most common) colour are the marker.
        colours, counts = np.unique(image[mask == 1], axis=0, return_counts=True)
        other = np.any(image != colours[np.argmax(counts)], axis=-1) & (mask == 1)
        np.testing.assert_array_equal(other, evidence == 1)
        kind = markers.CLASS_NAMES[data["label"][i]]
        rows, cols = np.nonzero(evidence)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        cell = width if kind == "bar" else width // 2
        assert height == 3 * cell and evidence.sum() == len(markers.KIND_CELLS[kind]) * cell ** 2
        for decoy in range(3, 2 * CONFIG.objects_per_image, 2):
            rows, cols = np.nonzero(parts == decoy)
            assert np.ptp(cols) > np.ptp(rows)  # lying: wider than tall
    # Small evidence occurs, as designed: a tenth (1-px cells, 3-4 px), the
    # rest 3-px cells (27 px for a bar, 36 px for the others).
    area = data["evidence"].reshape(len(data["label"]), -1).sum(axis=1)
    assert set(np.unique(area)) == {3, 4, 27, 36}
    assert 0.05 < np.mean(area <= 4) < 0.2


def test_removing_the_marker_removes_the_class_and_nothing_else():
    scene = markers.draw_scene(CONFIG, "validation", 7)
    image, parts = markers.render(scene)
    label = markers.rule_label(scene)
    assert label == markers.labels(CONFIG, "validation")[7]
    without, _ = markers.render(scene, omit=(markers.EVIDENCE_PART,))
    changed = np.any(without != image, axis=-1)
    np.testing.assert_array_equal(changed, parts == markers.EVIDENCE_PART)
    np.testing.assert_array_equal(without[changed], np.broadcast_to(scene.disks[0].colour, without[changed].shape))
    assert markers.rule_label(scene, omit=(markers.EVIDENCE_PART,)) == -1
    # A decoy's marker does not decide: its removal keeps the class.
    assert markers.rule_label(scene, omit=(3,)) == label
    # Another kind standing upright is another class.
    other = (label + 1) % 4
    swapped = dataclasses.replace(scene, disks=(dataclasses.replace(
        scene.disks[0], marker=dataclasses.replace(scene.disks[0].marker, kind=markers.CLASS_NAMES[other])),
        *scene.disks[1:]))
    assert markers.rule_label(swapped) == other


def test_the_stored_interventions_are_the_image_without_each_part(data):
    scene = markers.draw_scene(CONFIG, "validation", 11)
    for part in range(1, CONFIG.num_parts + 1):
        np.testing.assert_array_equal(data["interventions"][11, part - 1], markers.render(scene, omit=(part,))[0])
        changed = np.any(data["interventions"][11, part - 1] != data["image"][11], axis=-1)
        assert changed.any() and np.all(data["parts"][11][changed] == part)


def test_flips_keep_the_class_and_quarter_turns_make_decoys():
    # Training flips images left-right: an upright marker must stay upright
    # and of its kind, and no kind's upright form may be another's.
    def forms(kind, upright):
        return {frozenset(markers.marker_cells(kind, upright, r, c)) for r in (0, 1) for c in (0, 1)}

    upright = {k: forms(k, True) for k in markers.CLASS_NAMES}
    lying = {k: forms(k, False) for k in markers.CLASS_NAMES}
    for kind, shapes in upright.items():
        for cells in shapes:
            width = 1 + max(c for _, c in cells)
            assert frozenset((r, width - 1 - c) for r, c in cells) in shapes
    every = [f for shapes in (*upright.values(), *lying.values()) for f in shapes]
    # Upright forms: bar 1, tee 2, ell 4, ess 2; as many lying; all distinct.
    assert len(set(every)) == len(every) == 18
    # Only the orientation tells evidence from decoy: lying = upright transposed.
    for kind in markers.CLASS_NAMES:
        assert {frozenset((c, r) for r, c in f) for f in upright[kind]} == lying[kind]


@pytest.mark.parametrize("baseline", [edge_maps, noise_maps])
def test_edges_and_noise_put_chance_mass_on_the_evidence_among_decoys(data, baseline):
    maps = baseline(data["image"])
    share, object_share, first = evidence_among_markers(maps, data["parts"])
    # Three markers (and disks) exchangeable for these maps: 1/3 in expectation.
    for values in (share, object_share, first):
        mean, low, high, n = metrics.mean_confidence_interval(values)
        assert n == 300 and low < 1 / 3 < high, (baseline.__name__, mean, low, high)
    if baseline is edge_maps:
        # Against the whole image, the edges prefer every marker, the
        # evidence included: the trap the decoys close.
        ratio = metrics.evidence_ratio(maps, data["evidence"])
        assert np.mean(ratio) > 1.5


def test_evidence_among_markers_by_hand():
    parts = np.zeros((1, 4, 6), np.uint8)
    parts[0, 0, :2] = 1  # evidence, 2 px
    parts[0, 0, 2:] = 2
    parts[0, 2, :4] = 3  # a decoy's marker, 4 px
    cam = np.zeros((1, 4, 6))
    cam[0, 0, 0] = 2.0
    parts[0, 3, :] = 4  # the rest of the decoy's disk
    cam[0, 2, :4] = 1.0
    cam[0, 0, 5] = 1.0  # on the carrier, off its marker
    cam[0, 3, 0] = 3.0
    share, object_share, first = evidence_among_markers(cam, parts)
    # mass 2 of 6 on the evidence; means 1.0 and 1.0: a tie is a miss;
    # disks: 2 + 1 against 4 + 3.
    np.testing.assert_allclose(share, [2 / 6])
    np.testing.assert_allclose(object_share, [3 / 10])
    np.testing.assert_array_equal(first, [0.0])
    cam[0, 0, 1] = 0.5
    share, _, first = evidence_among_markers(cam, parts)
    np.testing.assert_allclose(share, [2.5 / 6.5])
    np.testing.assert_array_equal(first, [1.0])


def test_the_registry_loads_markers_as_a_split_and_names_the_known_datasets():
    @dataclasses.dataclass
    class Data:
        dataset: str = "markers"
        image_size: int = 32
        train_examples: int = 4
        validation_examples: int = 3

    split = load_split(Data(), "validation")
    assert (split.num_examples, split.num_classes, split.class_names) == (3, 4, markers.CLASS_NAMES)
    example = next(iter(split.examples))
    assert example["interventions"].shape == (6, 32, 32, 3) and example["parts"].shape == (32, 32)
    assert "interventions" not in load_split(Data(), "train").examples.element_spec
    assert get_dataset("folder:/data").name == "folder:"
    with pytest.raises(ValueError, match=r"^Unknown dataset 'folder:'. Choose one of: shapes, markers, "
                                         r"imagenet2012, folder:PATH$"):
        get_dataset("folder:")
