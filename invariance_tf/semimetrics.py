"""Semimetrics h(f(x), f(x~)) between the logits of natural and transformed inputs.

Each takes logits `a` (natural) and `b` (transformed), [B, classes], and returns
a per-example float32 vector [B]. They are >= 0 and zero when `a == b`.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

Semimetric = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def kl(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """KL(softmax(a) || softmax(b)) per example, in nats."""
    log_p = tf.nn.log_softmax(a, axis=-1)
    log_q = tf.nn.log_softmax(b, axis=-1)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def l2(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Squared Euclidean distance of the logits per example (symmetric)."""
    return tf.reduce_sum(tf.square(a - b), axis=-1)


SEMIMETRICS: dict[str, Semimetric] = {"kl": kl, "l2": l2}


def get(name: str) -> Semimetric:
    """Returns the semimetric registered as `name` ('kl' or 'l2')."""
    if name not in SEMIMETRICS:
        raise ValueError(f"Unknown semimetric h={name!r}; valid names are {sorted(SEMIMETRICS)}")
    return SEMIMETRICS[name]
