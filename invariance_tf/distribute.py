"""tf.distribute strategy selection and the chief/worker roles of multi-worker training."""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The strategy called `name`; create it before any other TF work of the program.

    "auto" is `MultiWorkerMirroredStrategy` when `TF_CONFIG` describes a
    cluster and the default (single-device) strategy otherwise; "mirrored"
    uses every local GPU (or the CPU).
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; valid strategies are {list(STRATEGIES)}")
    if name == "multi_worker" or (name == "auto" and os.environ.get("TF_CONFIG")):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def task() -> tuple[str, int]:
    """This process's `(task type, index)` in `TF_CONFIG`, or `("chief", 0)` outside a cluster."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    spec = config.get("task", {})
    return spec.get("type", "chief"), int(spec.get("index", 0))


def is_chief() -> bool:
    """Whether this process writes the run's outputs: the chief, else worker 0 of a chief-less cluster."""
    task_type, index = task()
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return task_type == "chief" or (task_type == "worker" and index == 0 and "chief" not in cluster)


class MultiWorkerWorkarounds:
    """Mixin for a `keras.Model` with its own `train_step`: the two fixes multi-worker training needs.

    Both are needed to train under `MultiWorkerMirroredStrategy`
    (keras-team/keras#20585), and kept in one place:

    - `_maybe_symbolic_build` overrides Keras' private hook that `fit` calls
      before training: it builds only the optimizer, in the strategy scope,
      because Keras' version first averages a data batch over replicas, which
      fails under MultiWorkerMirroredStrategy. Needs the network built already.
    - `_logs` gives metric results shape [1] under that strategy, where Keras
      averages logs over axis 0 across workers and fails on scalars.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None) -> None:
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def _logs(self, metrics: list[keras.metrics.Metric]) -> dict[str, tf.Tensor]:
        """Metric results by name, in the shape the current strategy's log reduction accepts."""
        if isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return {metric.name: tf.reshape(metric.result(), [1]) for metric in metrics}
        return {metric.name: metric.result() for metric in metrics}
