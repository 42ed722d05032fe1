"""The S-PGD attack: spatial PGD on the cross-entropy (`adversaries.SPGD`), then the pairs it finds classified."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from invariance_tf import transforms
from invariance_tf.adversaries import SPGD
from invariance_tf.evaluation.pairs import DEFAULT_SEED, PairEvaluator, check_inputs, check_seed
from invariance_tf.evaluation.result import Model, RobustResult


def spgd_accuracy(
    model: Model,
    images,
    labels,
    steps: int = 5,
    limits: Sequence[float] = transforms.DEFAULT_LIMITS,
    restarts: int = 1,
    random_start: bool = True,
    seed: Sequence[int] = DEFAULT_SEED,
    batch_size: int | None = None,
    resampling: str = transforms.EVALUATION_RESAMPLING,
) -> RobustResult:
    """Accuracy at the transformations that spatial PGD finds (`adversaries.SPGD`, cross-entropy objective).

    S-PGD attacks `batch_size` images at a time, batch i with the i-th seed
    split from the stateless `seed` (two integers).
    """
    images, labels, batch_size = check_inputs(images, labels, batch_size)
    adversary = SPGD(
        steps=steps, objective="ce", limits=limits, restarts=restarts, random_start=random_start, resampling=resampling
    )
    attack = tf.function(lambda x, y, s: adversary(model, x, y, seed=s), reduce_retracing=True)
    starts = range(0, len(images), batch_size)
    seeds = tf.random.split(check_seed(seed), len(starts))
    params = np.concatenate(
        [
            attack(
                tf.cast(images[start : start + batch_size], tf.float32), labels[start : start + batch_size], seeds[i]
            ).numpy()
            for i, start in enumerate(starts)
        ]
    )
    evaluator = PairEvaluator(model, images, labels, params, batch_size, resampling=resampling)
    evaluator(np.arange(len(images)), np.arange(len(images)))
    return evaluator.result()
