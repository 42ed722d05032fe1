"""Timing helpers of the throughput benchmarks: clocks, medians of repeated calls, timed training steps.

Wall times vary with the load of other processes on shared cores, so the benchmarks take medians after
untimed warm-up calls (tracing included there) and print CPU times and the load average beside wall times.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from invariance_tf import networks

# The CIFAR-10 ImageFolder copy beside the repository, read by the timing benchmarks unless given --data_dir.
DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10"


class Clock:
    """Wall and process CPU seconds since creation."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def elapsed(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def load_average() -> str:
    """The 1-minute load average and the number of CPUs, to read wall times by."""
    return f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"


def median_times(fn: Callable[[], object], repeats: int = 5, warmup: int = 2) -> tuple[float, float]:
    """Median (wall, CPU) seconds of `fn()` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        clock = Clock()
        fn()
        times.append(clock.elapsed())
    return statistics.median(wall for wall, _ in times), statistics.median(cpu for _, cpu in times)


def compile_plain(model: keras.Model, learning_rate: float = 0.01, jit_compile: bool | str = "auto") -> keras.Model:
    """`model` compiled as a plain Keras classifier: SGD with momentum 0.9 on cross-entropy from logits."""
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


class StepTimer(keras.callbacks.Callback):
    """Records the wall time of every training batch."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def median_step(model: keras.Model, images, labels, batch_size: int, steps: int, warmup: int = 3) -> float:
    """Median wall seconds of `model.fit`'s steps on batches of `batch_size`, after `warmup` untimed steps."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(batch_size, drop_remainder=True)
    timer = StepTimer()
    model.fit(ds.prefetch(2), steps_per_epoch=steps + warmup, epochs=1, verbose=0, callbacks=[timer])
    return statistics.median(timer.times[warmup:])


def training_throughput(model: keras.Model, batch_size: int, steps: int, warmup: int) -> float:
    """Images per second of `train_on_batch` on one batch of random raw pixels, after `warmup` untimed steps."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(batch_size, *model.input_shape[1:])).astype(np.float32)
    labels = rng.integers(0, 10, size=batch_size)
    compile_plain(model, learning_rate=0.1)
    for _ in range(warmup):
        model.train_on_batch(images, labels)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    return steps * batch_size / (time.perf_counter() - start)


class StopAfter(keras.callbacks.Callback):
    """Stops training once `seconds` of wall time have passed."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.model.stop_training = time.perf_counter() - self.start > self.seconds


def train_resnet8(images: np.ndarray, labels: np.ndarray, seconds: float) -> keras.Model:
    """A ResNet-8 trained with Adam (seed 0) for about `seconds` of wall time: a real model to time evaluations on."""
    keras.utils.set_random_seed(0)
    model = networks.build("resnet", n=1)
    model.compile(
        keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    history = model.fit(
        images.astype(np.float32), labels, batch_size=128, epochs=1000, verbose=0, callbacks=[StopAfter(seconds)]
    )
    print(
        f"trained ResNet-8 for {len(history.epoch)} epochs of {len(images)} images "
        f"(train accuracy {history.history['accuracy'][-1]:.3f})"
    )
    return model
