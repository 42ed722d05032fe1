"""tf.distribute strategy selection and the chief/worker roles of multi-worker training."""

from __future__ import annotations

import json
import os

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
