"""The steps of the training loop, called one by one: the stop rule, restoring, the numbered saves."""

import math

import pytest
import tensorflow as tf

from kerascam.training import CheckpointSaver, Resumed, RunState, TargetAccuracy, restore
from kerascam.training.state import progress_variables


@pytest.mark.parametrize("steps, checks", [(8, [2, 4, 6, 8]), (3, [1, 2, 3]), (1, [1]), (10, [2, 5, 8, 10])])
def test_the_target_is_checked_every_quarter_epoch(steps, checks):
    # round() halves to even: 3 * 2/4 = 1.5 -> 2, 10 * 1/4 = 2.5 -> 2, 10 * 3/4 = 7.5 -> 8.
    assert TargetAccuracy(0.9, steps).checks == checks
    assert TargetAccuracy(None, steps).checks == ()


def test_the_stop_decision():
    target = TargetAccuracy(0.75, steps_per_epoch=8)
    assert target.reached(0.75) and target.reached(1.0)
    assert not target.reached(0.7499) and not target.reached(math.nan)
    assert not TargetAccuracy(None, 8).reached(1.0)
    # A stop recorded in a checkpoint holds while its accuracy meets the target.
    assert target.still_holds(stopped_at_step=11, stopped_accuracy=0.8)
    assert not TargetAccuracy(0.85, 8).still_holds(11, 0.8)  # a higher target: train on
    assert not TargetAccuracy(None, 8).still_holds(11, 0.8)  # no target: train on
    assert not target.still_holds(0, 0.8)  # step 0: never stopped
    # Global steps (1-based) as run.json names them: 8 steps an epoch.
    assert target.position(1) == {"epoch": 1, "step": 1, "global_step": 1}
    assert target.position(11) == {"epoch": 2, "step": 3, "global_step": 11}
    assert target.position(16) == {"epoch": 2, "step": 8, "global_step": 16}


def _state():
    """A RunState of the position variables alone (no model): what restore and the saver touch."""
    epoch, progress = tf.Variable(0, dtype=tf.int64), progress_variables()
    return RunState(None, None, epoch, progress, tf.train.Checkpoint(epoch=epoch, **progress))


def _saver(directory, resumed, steps=4):
    state = _state()
    manager = tf.train.CheckpointManager(state.checkpoint, str(directory), max_to_keep=3)
    return state, CheckpointSaver(state, manager, steps, resumed)


FRESH = Resumed(None, 0, 0, False, 0.0)


def test_restore_of_an_empty_folder_is_a_fresh_start(tmp_path):
    assert restore(_state(), str(tmp_path), TargetAccuracy(None, 4)) == FRESH


def test_saves_are_numbered_by_global_step_and_restore_takes_the_newest(tmp_path):
    state, saver = _saver(tmp_path, FRESH)
    saver.save(epoch=0, done=2, loss_sum=1.5, correct_sum=3.0)  # mid-epoch: the epoch's sums kept
    saver.save(epoch=1, done=1, loss_sum=0.5, correct_sum=2.0)
    assert [p.rsplit("-", 1)[1] for p in saver.manager.checkpoints] == ["2", "5"]

    restored = _state()
    resumed = restore(restored, str(tmp_path), TargetAccuracy(None, 4))
    assert resumed == Resumed(str(tmp_path / "ckpt-5"), epoch=1, step=1, stopped=False, stopped_accuracy=0.0)
    assert float(restored.progress["loss_sum"].numpy()) == 0.5
    assert float(restored.progress["correct_sum"].numpy()) == 2.0

    # An epoch's last step: the checkpoint names the next epoch, at its start, with empty sums.
    saver.save(epoch=1, done=4, loss_sum=9.0, correct_sum=9.0)
    resumed = restore(restored, str(tmp_path), TargetAccuracy(None, 4))
    assert (resumed.checkpoint, resumed.epoch, resumed.step) == (str(tmp_path / "ckpt-8"), 2, 0)
    assert resumed.where() == "epoch 2"
    assert float(restored.progress["loss_sum"].numpy()) == 0.0
    assert Resumed("x", 2, 3, False, 0.0).where() == "epoch 3 step 3, mid-epoch"


def test_a_number_already_saved_is_never_written_again(tmp_path):
    state, saver = _saver(tmp_path, FRESH)
    saver.save(0, 2, 1.0, 1.0)
    resumed = restore(_state(), str(tmp_path), TargetAccuracy(None, 4))
    # Resumed from ckpt-2: saving step 2 again (a stop right after the resume) writes nothing.
    state, saver = _saver(tmp_path, resumed)
    assert saver.last_saved == 2
    state.progress["loss_sum"].assign(123.0)
    saver.save(0, 2, 123.0, 1.0)
    assert [p.rsplit("-", 1)[1] for p in saver.manager.checkpoints] == ["2"]
    restored = _state()
    restore(restored, str(tmp_path), TargetAccuracy(None, 4))
    assert float(restored.progress["loss_sum"].numpy()) == 1.0


@pytest.mark.parametrize("target, stays_stopped", [(0.8, True), (0.9, True), (0.95, False), (None, False)])
def test_a_run_stopped_at_its_target_stays_stopped_while_the_target_holds(tmp_path, target, stays_stopped):
    state, saver = _saver(tmp_path, FRESH)
    state.mark_stopped(global_step=3, val_accuracy=0.9)
    saver.save(0, 3, 2.0, 2.0)
    restored = _state()
    resumed = restore(restored, str(tmp_path), TargetAccuracy(target, 4))
    assert resumed.stopped is stays_stopped
    assert resumed.stopped_accuracy == pytest.approx(0.9)
    # Trained on: the old stop is cleared, so the next checkpoint does not carry it.
    assert int(restored.progress["stopped_at_step"].numpy()) == (3 if stays_stopped else 0)
