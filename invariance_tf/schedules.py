"""Learning-rate schedules beyond Keras' own."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="invariance_tf")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`.

    The one-cycle schedule of fast CIFAR training (Smith & Topin 2019; Page 2018):
    a short budget reaches a higher accuracy than with the paper's step schedule.
    Steps past `total_steps` get 0.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        if not peak > 0:
            raise ValueError(f"OneCycle peak must be > 0; got {peak}")
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(f"OneCycle needs 0 <= warmup_steps < total_steps; got {warmup_steps}, {total_steps}")
        self.peak, self.total_steps, self.warmup_steps = float(peak), int(total_steps), int(warmup_steps)

    def __call__(self, step: int):
        """The learning rate at optimizer step `step` (0-based)."""
        step = ops.cast(step, "float32")
        up = step / self.warmup_steps if self.warmup_steps else 1.0
        down = (self.total_steps - step) / (self.total_steps - self.warmup_steps)
        return self.peak * ops.clip(ops.minimum(up, down), 0.0, 1.0)

    def get_config(self) -> dict:
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}
