"""The map-only scores of issue 23: the sticker within its disk, Zhang et al.'s pointing game (scorer level)."""

import numpy as np
import pytest

from kerascam import metrics
from kerascam.evaluation.scorer import Batch, Explained
from kerascam.evaluation.scores.pointing_zhang import ZhangPointingGame
from kerascam.evaluation.scores.sticker_in_disk import StickerInDisk, sticker_disks


def _disks():
    """Two 12x12 images: the first with two disks (squares here), a sticker on the left one; the second none."""
    masks = np.zeros((2, 12, 12), np.uint8)
    evidence = np.zeros((2, 12, 12), np.uint8)
    masks[0, 1:5, 1:5] = 1  # 16 px, carries the sticker
    masks[0, 7:11, 7:11] = 1  # 16 px, no sticker
    evidence[0, 2:4, 2:4] = 1  # 4 px: a quarter of its disk
    masks[1, 2:6, 2:6] = 1
    return masks, evidence


def _explained(maps):
    status = metrics.map_status(maps)
    return Explained(maps, maps, status, np.zeros(len(maps), np.int64), "unet", None, "gradcam", None)


def test_sticker_disks_are_the_objects_that_carry_a_sticker():
    masks, evidence = _disks()
    disks = sticker_disks(masks, evidence)
    assert disks[0].sum() == 16 and disks[0, 1:5, 1:5].all() and not disks[1].any()


def test_sticker_in_disk_scorer_hand_values():
    masks, evidence = _disks()
    maps = np.zeros((2, 12, 12), np.float32)
    maps[0, 1:5, 1:5] = 0.5
    maps[0, 2:4, 2:4] = 1.0  # 4 / (4 + 6) = 0.4 of the disk's mass, over its share 1/4: 1.6
    maps[0, 7:11, 7:11] = 1.0  # the other disk: ignored here, not by the image-relative ratio
    maps[1, 0, 0] = 1.0
    batch = Batch(np.arange(2), np.zeros((2, 12, 12, 3)), np.array([4, 0]), masks, evidence)
    scorer = StickerInDisk(None)
    result = scorer.score(batch, _explained(maps))
    assert result["sticker_disk_ratio"][0] == pytest.approx(1.6) and result["sticker_disk_ratio"][1] is None
    assert metrics.evidence_ratio(maps[0], evidence[0]) == pytest.approx((4 / 26) / (4 / 144))  # 5.54
    np.testing.assert_array_equal(scorer.chance(batch)["sticker_disk_ratio"], [1.0, np.nan])


def test_zhang_scorer_scores_object_and_sticker_and_its_chance():
    masks, evidence = _disks()
    maps = np.zeros((2, 12, 12), np.float32)
    maps[0, 3, 3] = 1.0  # on the sticker
    maps[1, 11, 11] = 1.0  # 5 px from (5, 5) diagonally: 7.07 px, beyond 15 * 12 / 224 = 0.80 px
    batch = Batch(np.arange(2), np.zeros((2, 12, 12, 3)), np.array([4, 0]), masks, evidence)
    scorer = ZhangPointingGame(None)
    result = scorer.score(batch, _explained(maps))
    assert result["pointing_hit_zhang"] == [1.0, 0.0]
    assert result["sticker_hit_zhang"] == [1.0, None]  # no sticker: not scored
    chance = scorer.chance(batch)
    # A tolerance of 0.80 px adds no pixel: chance is the mask's share.
    np.testing.assert_allclose(chance["pointing_hit_zhang"], [32 / 144, 16 / 144])
    np.testing.assert_allclose(chance["sticker_hit_zhang"], [4 / 144, np.nan])
    no_evidence = scorer.score(batch._replace(evidence=None), _explained(maps))
    assert no_evidence["sticker_hit_zhang"] == [None, None]
