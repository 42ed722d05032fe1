"""Learning-rate schedules against their closed forms."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from invariance_tf import builders, experiment_config
from invariance_tf.schedules import OneCycle


def test_one_cycle_is_the_triangle_it_describes():
    schedule = OneCycle(0.4, total_steps=100, warmup_steps=20)
    steps = np.arange(0, 121)
    expected = 0.4 * np.clip(np.minimum(steps / 20, (100 - steps) / 80), 0, 1)
    np.testing.assert_allclose([float(schedule(step)) for step in steps], expected, atol=1e-7)
    assert float(schedule(20)) == pytest.approx(0.4) and float(schedule(100)) == 0.0


def test_one_cycle_round_trips_through_keras_serialization():
    schedule = OneCycle(0.1, total_steps=10, warmup_steps=0)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(restored, OneCycle) and restored.get_config() == schedule.get_config()
    assert float(restored(0)) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"peak": 0.0, "total_steps": 10, "warmup_steps": 1}, "peak"),
        ({"peak": 0.1, "total_steps": 10, "warmup_steps": 10}, "warmup"),
    ],
)
def test_one_cycle_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OneCycle(**kwargs)


@pytest.mark.parametrize("steps_per_epoch", [1, 3, 100])
def test_experiment_schedules_fit_any_run_length(steps_per_epoch):
    config = dataclasses.replace(
        experiment_config.ExperimentConfig(), epochs=1, lr=0.2, lr_schedule="onecycle", warmup_fraction=0.9
    )
    schedule = builders.learning_rate_schedule(config, steps_per_epoch)
    assert max(float(schedule(step)) for step in range(steps_per_epoch)) == pytest.approx(
        0.2, abs=0.2 / steps_per_epoch
    )


def test_step_schedule_divides_by_10_after_half_and_three_quarters_of_training():
    config = dataclasses.replace(experiment_config.ExperimentConfig(), epochs=4, lr=0.2, lr_schedule="step")
    schedule = builders.learning_rate_schedule(config, steps_per_epoch=25)
    rates = {step: float(schedule(step)) for step in (0, 50, 51, 75, 76, 99)}
    assert rates == pytest.approx({0: 0.2, 50: 0.2, 51: 0.02, 75: 0.02, 76: 0.002, 99: 0.002})
