"""Kernel regularizers of the networks."""

from __future__ import annotations

import keras


def weight_decay_regularizer(weight_decay: float) -> keras.regularizers.Regularizer | None:
    """The kernel regularizer adding `weight_decay` * 1/2 ||w||^2 to the loss, or None when `weight_decay` is 0.

    The factor 1/2 is the paper's `tf.nn.l2_loss` convention.

    Keras' `L2(l2)` adds l2 * sum(w^2), whose gradient is 2 * l2 * w, so l2 = `weight_decay` / 2 gives the
    SGD-style decay `weight_decay` * w.
    """
    return keras.regularizers.L2(weight_decay / 2) if weight_decay else None
