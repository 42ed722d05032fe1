"""The worst-of-k attack: k random transformations per example, correct only if all k are."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from invariance_tf import transforms
from invariance_tf.evaluation.pairs import DEFAULT_SEED, PairEvaluator, check_inputs, check_seed
from invariance_tf.evaluation.result import Model, RobustResult


def worst_of_k_accuracy(
    model: Model,
    images,
    labels,
    k: int = 10,
    limits: Sequence[float] = transforms.DEFAULT_LIMITS,
    seed: Sequence[int] = DEFAULT_SEED,
    batch_size: int | None = None,
    resampling: str = transforms.EVALUATION_RESAMPLING,
) -> RobustResult:
    """Accuracy under `k` transformations per example drawn uniformly within `limits`.

    The draws come from `transforms.sample_uniform` with the stateless `seed`
    (two integers), so a seed gives the same transformations on every run;
    images are resampled by `resampling` (see `transforms`).
    """
    images, labels, batch_size = check_inputs(images, labels, batch_size)
    if int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    num_images = len(images)
    params = transforms.sample_uniform(int(k) * num_images, limits, check_seed(seed)).numpy()
    evaluator = PairEvaluator(model, images, labels, params, batch_size, resampling=resampling)
    pair = np.arange(len(params))
    evaluator(pair % num_images, pair)
    return evaluator.result()
