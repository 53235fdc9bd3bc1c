"""``--target-accuracy``: when a run checks its validation accuracy, and when it stops."""

import dataclasses


def target_check_steps(steps_per_epoch):
    """Steps of an epoch after which ``target_accuracy`` is checked: every quarter epoch.

    The last one is the epoch's end, where the validation pass runs anyway.
    """
    return sorted({max(1, round(steps_per_epoch * k / 4)) for k in range(1, 5)})


@dataclasses.dataclass(frozen=True)
class TargetAccuracy:
    """The stop rule of ``TrainConfig.target_accuracy``.

    Attributes:
        accuracy: The validation accuracy to stop at, in (0, 1], or None (no
            target: the run trains all its epochs).
        steps_per_epoch: Steps of one epoch; a stop is recorded by global
            step (1-based over the run).
    """

    accuracy: float | None
    steps_per_epoch: int

    @property
    def checks(self):
        """Steps of an epoch (1-based) after which the accuracy is checked; none without a target."""
        return target_check_steps(self.steps_per_epoch) if self.accuracy is not None else ()

    def reached(self, val_accuracy):
        """True when ``val_accuracy`` is at or above the target (never without one, never for NaN)."""
        return self.accuracy is not None and val_accuracy >= self.accuracy

    def still_holds(self, stopped_at_step, stopped_accuracy):
        """Whether a run that a checkpoint records as stopped stays stopped.

        A run stopped at its target (``stopped_at_step`` > 0, with the
        accuracy ``stopped_accuracy`` of that check) stays stopped while the
        target holds; with a higher target, or none, it trains on.
        """
        return bool(stopped_at_step) and self.reached(stopped_accuracy)

    def position(self, global_step):
        """Epoch and step (both 1-based) of ``global_step``, as ``run.json``'s ``stopped_at`` names them."""
        epoch = (global_step - 1) // self.steps_per_epoch + 1
        return {"epoch": epoch, "step": global_step - (epoch - 1) * self.steps_per_epoch, "global_step": global_step}
