"""Robust accuracy under the spatial transformations of `invariance_tf.transforms`.

An example counts as correct under a set of transformations only if the
model's argmax is its label for every one of them. The *margin* of a
classification is the true-class logit minus the largest other logit; the
most damaging transformation of an example is the one with the lowest margin.

Every function takes a model (a Keras model or any callable
`model(images, training=False)` returning logits), raw images (pixel values
in [0, 255], any real or integer dtype, [N, H, W, C]) and integer labels
[N], and classifies (image, transformation) pairs in batches of
`batch_size` pairs (None: `default_batch_size()`) inside one tf.function.
Transformations are `(dx, dy, angle)` rows: pixels right, pixels down,
degrees counter-clockwise (see `invariance_tf.transforms`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import weakref
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from invariance_tf import export, files, transforms
from invariance_tf.adversaries import SPGD
from invariance_tf.networks import pretrained

Model = Callable[..., tf.Tensor]
METHODS = ("brute", "early_exit")

def default_batch_size() -> int:
    """(image, transformation) pairs per model call when `batch_size` is None.

    1024 on a GPU. 128 on CPU, where small batches keep activations in cache:
    a ResNet-8 grid evaluation needs about 17% less CPU time at 128 than at 1024.
    """
    return 1024 if tf.config.list_physical_devices("GPU") else 128


@dataclasses.dataclass
class RobustResult:
    """Outcome of a robust evaluation of N examples.

    Attributes:
        accuracy: fraction of examples correct under every transformation evaluated.
        correct: bool [N], whether each example is correct under all of them.
        worst_transform: float32 [N, 3], per example the evaluated transformation
            with the lowest margin (dx pixels, dy pixels, angle degrees).
        per_transform_accuracy: float [T], the accuracy under each grid
            transformation, in `transforms.grid` order; only `grid_accuracy`
            with `method="brute"` computes it, otherwise None.
        evaluations: number of (image, transformation) pairs classified,
            excluding the padding of the last batch (a gradient step of
            `refine` counts as one).
        margin: float32 [N], the margin at `worst_transform` (negative: misclassified).
        lowest_transforms: float32 [N, m, 3], per example the m evaluated
            transformations with the lowest margins, lowest first; only
            `grid_accuracy` with `keep_lowest=m > 1` keeps them, otherwise None.
        resumed_examples: examples whose results `resumable` read from its
            state folder instead of evaluating them.
    """

    accuracy: float
    correct: np.ndarray
    worst_transform: np.ndarray
    per_transform_accuracy: np.ndarray | None = None
    evaluations: int = 0
    margin: np.ndarray | None = None
    lowest_transforms: np.ndarray | None = None
    resumed_examples: int = 0


DEFAULT_SEED = (0, 0)
_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _traced(build: Callable[[Model], Callable]) -> Callable[[Model], Callable]:
    """Memoises `build(model)` per model, so the chunks of `resumable` share one traced tf.function.

    The function sees the model through a weak proxy: the cache never keeps a model (or its graphs) alive.
    """

    def cached(model: Model) -> Callable:
        functions = _TRACED.setdefault(model, {})
        if build.__name__ not in functions:
            functions[build.__name__] = build(weakref.proxy(model))
        return functions[build.__name__]

    return cached


def _correct_and_margin(logits: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per example: whether the argmax is the label, and the margin (true logit minus the largest other)."""
    logits = tf.cast(logits, tf.float32)
    correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels)
    is_label = tf.one_hot(labels, tf.shape(logits)[-1], on_value=True, off_value=False)
    other = tf.reduce_max(tf.where(is_label, float("-inf"), logits), axis=-1)
    return correct, tf.gather(logits, labels, batch_dims=1) - other


def _in_fixed_batches(fn: Callable[..., Sequence[tf.Tensor]], batch_size: int,
                      *columns: np.ndarray) -> list[np.ndarray]:
    """`fn` on fixed-size batches of the rows of `columns` (the last batch zero-padded, so a tf.function
    traces once); each of its outputs concatenated over the batches, padding removed."""
    size = len(columns[0])
    padded = -(-size // batch_size) * batch_size
    columns = [np.concatenate([c, np.zeros((padded - size, *c.shape[1:]), c.dtype)]) for c in columns]
    outputs = [fn(*(c[start:start + batch_size] for c in columns)) for start in range(0, padded, batch_size)]
    return [np.concatenate([o[i].numpy() for o in outputs])[:size] for i in range(len(outputs[0]))]


@_traced
def _classify_pairs_fn(model: Model) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
    """A tf.function classifying the pairs (images[i], params[j]) of one batch of indices."""

    @tf.function(reduce_retracing=True)
    def classify(images, labels, params, image_index, param_index, resampling):
        moved = transforms.transform_xla(tf.cast(tf.gather(images, image_index), tf.float32),
                          tf.gather(params, param_index), resampling)
        return _correct_and_margin(model(moved, training=False), tf.gather(labels, image_index))

    return classify


class _PairEvaluator:
    """Classifies (image, transformation) pairs in fixed-size batches and keeps per-example tallies.

    `params` is the table of transformations [T, 3] that pairs index into.
    Every model call sees exactly `batch_size` pairs (the last batch of a call
    is padded), so the tf.function is traced once. Per example it keeps the
    `keep` transformations with the lowest margins seen (column 0 the lowest).
    `resampling` is `transforms`' resampling of the transformed images.
    """

    def __init__(self, model: Model, images: np.ndarray, labels: np.ndarray, params: np.ndarray,
                 batch_size: int, keep: int = 1, resampling: str = "composed"):
        self.images = tf.convert_to_tensor(images)
        self.labels = tf.convert_to_tensor(labels, tf.int32)
        self.params = tf.convert_to_tensor(params, tf.float32)
        self.batch_size = batch_size
        self.keep = keep
        self.resampling = transforms.validate_resampling(resampling)
        self.evaluations = 0
        num_images = len(images)
        self.correct = np.ones(num_images, bool)
        self.margin = np.full((num_images, keep), np.inf, np.float32)
        self.worst = np.zeros((num_images, keep), np.int64)
        self._classify = _classify_pairs_fn(model)

    def __call__(self, image_index: np.ndarray, param_index: np.ndarray) -> np.ndarray:
        """Classifies the pairs (image_index[p], param_index[p]) and returns whether each is correct."""
        correct, margin = _in_fixed_batches(
            lambda images, params: self._classify(self.images, self.labels, self.params, images, params,
                                                  self.resampling),
            self.batch_size, np.asarray(image_index, np.int32), np.asarray(param_index, np.int32))
        self._tally(np.asarray(image_index), np.asarray(param_index), correct, margin)
        return correct

    def _tally(self, image_index, param_index, correct, margin) -> None:
        """Marks mistakes and merges the new margins into each example's `keep` lowest (ties keep the older)."""
        self.evaluations += len(image_index)
        self.correct[image_index[~correct]] = False
        images, inverse = np.unique(image_index, return_inverse=True)
        owner = np.concatenate([np.repeat(np.arange(len(images)), self.keep), inverse])
        margins = np.concatenate([self.margin[images].ravel(), margin])
        params = np.concatenate([self.worst[images].ravel(), param_index])
        order = np.lexsort((margins, owner))
        first = np.searchsorted(owner[order], np.arange(len(images)))
        rank = np.arange(len(order)) - np.repeat(first, np.bincount(owner, minlength=len(images)))
        kept = order[rank < self.keep]
        self.margin[images] = margins[kept].reshape(-1, self.keep)
        self.worst[images] = params[kept].reshape(-1, self.keep)

    def result(self, per_transform_accuracy: np.ndarray | None = None) -> RobustResult:
        lowest = self.params.numpy()[self.worst]
        return RobustResult(
            accuracy=float(self.correct.mean()),
            correct=self.correct.copy(),
            worst_transform=lowest[:, 0],
            per_transform_accuracy=per_transform_accuracy,
            evaluations=self.evaluations,
            margin=self.margin[:, 0].copy(),
            lowest_transforms=lowest if self.keep > 1 else None,
        )


def _check_inputs(images, labels, batch_size: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Validates the common arguments; returns them as arrays (labels int32) and the batch size."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C]; got shape {images.shape}")
    if not np.issubdtype(images.dtype, np.number):
        raise ValueError(f"images must be numbers (raw pixel values); got dtype {images.dtype}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be [N] = [{len(images)}] to match images; got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers; got dtype {labels.dtype}")
    if len(images) == 0:
        raise ValueError("images is empty; need at least one example")
    if batch_size is None:
        batch_size = default_batch_size()
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1 or None; got {batch_size!r}")
    return images, labels.astype(np.int32, copy=False), int(batch_size)


def _check_seed(seed: Sequence[int]) -> tf.Tensor:
    """A stateless seed: two integers, as a tf.int64 tensor."""
    if np.shape(seed) != (2,) or not np.issubdtype(np.asarray(seed).dtype, np.integer):
        raise ValueError(f"seed must be two integers; got {seed!r}")
    return tf.constant(seed, tf.int64)


def clean_result(model: Model, images, labels, batch_size: int | None = None) -> RobustResult:
    """Per-example outcome on the untransformed images (the clean attack), so reports can list which are
    wrong before any transformation: `worst_transform` is the identity (0, 0, 0), `margin` its margin."""
    images, labels, batch_size = _check_inputs(images, labels, batch_size)
    evaluator = _PairEvaluator(model, images, labels, np.zeros((1, 3), np.float32), batch_size)
    evaluator(np.arange(len(images)), np.zeros(len(images), np.int64))
    return evaluator.result()


def clean_accuracy(model: Model, images, labels, batch_size: int | None = None) -> float:
    """Accuracy on the untransformed images (`clean_result`'s accuracy)."""
    return clean_result(model, images, labels, batch_size).accuracy


def grid_accuracy(
    model: Model,
    images,
    labels,
    method: str = "early_exit",
    limits: Sequence[float] = transforms.DEFAULT_LIMITS,
    granularity: Sequence[int] = transforms.DEFAULT_GRANULARITY,
    batch_size: int | None = None,
    verbose: bool = False,
    keep_lowest: int = 1,
    resampling: str = "composed",
) -> RobustResult:
    """Accuracy under every transformation of `transforms.grid(limits, granularity)` (the grid attack).

    `method="brute"` classifies every (image, transformation) pair and also
    reports the accuracy per transformation. `method="early_exit"` gives the
    same `correct` with fewer model calls, the fewer the less robust the
    model: it classifies the identity first and stops evaluating an example
    at its first mistake (see `_early_exit`). `verbose` shows a Keras
    progress bar over the pairs decided so far. `keep_lowest=m > 1` also
    returns each example's m lowest-margin transformations (`refine` starts
    from them); for an example that survives the grid they are its m lowest
    on the whole grid. `resampling` ("composed" or "reference", see
    `transforms`) is how the transformed images are resampled.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown grid method {method!r}; valid methods are {list(METHODS)}")
    images, labels, batch_size = _check_inputs(images, labels, batch_size)
    params = transforms.grid(limits, granularity)
    if int(keep_lowest) != keep_lowest or not 1 <= keep_lowest <= len(params):
        raise ValueError(f"keep_lowest must be an integer in [1, {len(params)}]; got {keep_lowest!r}")
    evaluator = _PairEvaluator(model, images, labels, params, batch_size, keep=int(keep_lowest),
                               resampling=resampling)
    progbar = keras.utils.Progbar(len(images) * len(params), verbose=int(bool(verbose)), unit_name="pair")
    if method == "brute":
        return _brute(evaluator, progbar)
    return _early_exit(evaluator, transforms.validate_limits(limits), progbar)


def _brute(evaluator: _PairEvaluator, progbar: keras.utils.Progbar) -> RobustResult:
    """Classifies all pairs, transformation-major, one batch per call."""
    num_images, num_params = len(evaluator.correct), len(evaluator.params)
    total = num_images * num_params
    correct_count = np.zeros(num_params)
    for start in range(0, total, evaluator.batch_size):
        pair = np.arange(start, min(start + evaluator.batch_size, total))
        correct = evaluator(pair % num_images, pair // num_images)
        correct_count += np.bincount(pair // num_images, weights=correct, minlength=num_params)
        progbar.update(pair[-1] + 1)
    return evaluator.result(per_transform_accuracy=correct_count / num_images)


def _spread_order(params: np.ndarray, limits: tuple[float, float, float]) -> np.ndarray:
    """Transformation indices: the one nearest the identity, then each the farthest from all before it.

    Distances are Euclidean in units of `limits`, so the order starts with
    the grid's corners (largest shift and angle) and keeps spreading out:
    an example correct under the transformations tried so far is most likely
    to fail far from all of them. Ordering by damage alone (largest |angle|
    and shift, or most kills) tries similar transformations one after another;
    on a ResNet-8 trained for a minute, the first mistake of an example
    correct on the identity came after 6.8 transformations on average in
    this order, 15 largest-first and 13 by kill counts.
    """
    points = params / np.where(np.asarray(limits) > 0, limits, 1.0)
    order = [int(np.argmin((points**2).sum(axis=1)))]
    distance = ((points - points[order[0]]) ** 2).sum(axis=1)
    for _ in range(len(points) - 1):
        distance[order[-1]] = -1.0
        order.append(int(np.argmax(distance)))
        distance = np.minimum(distance, ((points - points[order[-1]]) ** 2).sum(axis=1))
    return np.asarray(order)


def _fair_share(position: np.ndarray, num_params: int, budget: int) -> np.ndarray:
    """Pairs per example for a batch of `budget` pairs, the examples furthest behind first.

    `position` [A] is how many transformations each example has done.
    """
    left = num_params - position
    behind = np.argsort(position, kind="stable")
    share = np.zeros_like(position)
    if len(position) >= budget:
        share[behind[:budget]] = 1
        return share
    share[:] = np.minimum(left, budget // len(position))
    spare = budget - share.sum()
    extra = behind[(left[behind] > share[behind])][:spare]
    share[extra] += 1
    return share


def _early_exit(evaluator: _PairEvaluator, limits: tuple[float, float, float],
                progbar: keras.utils.Progbar) -> RobustResult:
    """Classifies each example until its first mistake.

    All examples follow `_spread_order`, the identity first. Each batch holds
    about `batch_size` pairs, every example still correct getting an equal
    share of its next transformations, so the share grows as examples fail.
    """
    params = evaluator.params.numpy()
    num_images, num_params = len(evaluator.correct), len(params)
    order = _spread_order(params, limits)
    position = np.zeros(num_images, np.int64)
    while True:
        active = np.flatnonzero(evaluator.correct & (position < num_params))
        if not active.size:
            break
        share = _fair_share(position[active], num_params, evaluator.batch_size)
        image_index = np.repeat(active, share)
        step = np.arange(len(image_index)) - np.repeat(np.cumsum(share) - share, share)
        param_index = order[np.repeat(position[active], share) + step]
        evaluator(image_index, param_index)
        position[active] += share
        progbar.update(int(np.where(evaluator.correct, position, num_params).sum()))
    return evaluator.result()


def worst_of_k_accuracy(
    model: Model,
    images,
    labels,
    k: int = 10,
    limits: Sequence[float] = transforms.DEFAULT_LIMITS,
    seed: Sequence[int] = DEFAULT_SEED,
    batch_size: int | None = None,
    resampling: str = "composed",
) -> RobustResult:
    """Accuracy under `k` transformations per example drawn uniformly within `limits`.

    The draws come from `transforms.sample_uniform` with the stateless `seed`
    (two integers), so a seed gives the same transformations on every run;
    images are resampled by `resampling` (see `transforms`).
    """
    images, labels, batch_size = _check_inputs(images, labels, batch_size)
    if int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    num_images = len(images)
    params = transforms.sample_uniform(int(k) * num_images, limits, _check_seed(seed)).numpy()
    evaluator = _PairEvaluator(model, images, labels, params, batch_size, resampling=resampling)
    pair = np.arange(len(params))
    evaluator(pair % num_images, pair)
    return evaluator.result()


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
    resampling: str = "composed",
) -> RobustResult:
    """Accuracy at the transformations that spatial PGD finds (`adversaries.SPGD`, cross-entropy objective).

    S-PGD attacks `batch_size` images at a time, batch i with the i-th seed
    split from the stateless `seed` (two integers).
    """
    images, labels, batch_size = _check_inputs(images, labels, batch_size)
    adversary = SPGD(steps=steps, objective="ce", limits=limits, restarts=restarts,
                     random_start=random_start, resampling=resampling)
    attack = tf.function(lambda x, y, s: adversary(model, x, y, seed=s), reduce_retracing=True)
    starts = range(0, len(images), batch_size)
    seeds = tf.random.split(_check_seed(seed), len(starts))
    params = np.concatenate([
        attack(tf.cast(images[start:start + batch_size], tf.float32), labels[start:start + batch_size],
               seeds[i]).numpy()
        for i, start in enumerate(starts)])
    evaluator = _PairEvaluator(model, images, labels, params, batch_size, resampling=resampling)
    evaluator(np.arange(len(images)), np.arange(len(images)))
    return evaluator.result()


@_traced
def _margin_gradient_fn(model: Model) -> Callable[..., tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    """A tf.function: per pair (images[i], params[p]) whether it is correct, its margin and d margin / d params."""

    @tf.function(reduce_retracing=True)
    def margin_and_gradient(images, labels, image_index, params, resampling):
        picked = tf.cast(tf.gather(images, image_index), tf.float32)
        labels = tf.gather(labels, image_index)
        with tf.GradientTape() as tape:
            tape.watch(params)
            moved = transforms.transform_xla(picked, params, resampling)
            correct, margin = _correct_and_margin(model(moved, training=False), labels)
        return correct, margin, tape.gradient(margin, params)

    return margin_and_gradient


def refine(
    model: Model,
    images,
    labels,
    grid: RobustResult,
    steps: int = 10,
    step_size: Sequence[float] | None = None,
    limits: Sequence[float] = transforms.DEFAULT_LIMITS,
    granularity: Sequence[int] = transforms.DEFAULT_GRANULARITY,
    batch_size: int | None = None,
    resampling: str = "composed",
) -> RobustResult:
    """A stronger attack than the grid: S-PGD on the margin in the continuous box, from the grid's weakest points.

    Every example that survives `grid` (a `grid_accuracy` result, with
    `keep_lowest=m` for m starts per example) gets m searches, one from each of its m lowest-margin
    grid transformations: `steps` steps of projected sign-gradient descent
    on the margin (true logit minus the largest other), `step_size` per
    coordinate (dx px, dy px, angle deg; default a quarter of the grid
    spacing), projected onto `[-limits, limits]`. A search stops at its
    first misclassification (the early-exit economy: examples the grid
    already breaks are never searched). The result's `correct` is the grid's
    and-ed with the searches', so its accuracy never exceeds the grid's;
    `worst_transform` and `margin` are the lowest-margin point of grid and
    searches; `evaluations` counts the searches' gradient steps (the grid's
    pairs are in `grid.evaluations`).
    """
    images, labels, batch_size = _check_inputs(images, labels, batch_size)
    if len(grid.correct) != len(images):
        raise ValueError(f"grid must be a grid_accuracy result on these {len(images)} images; "
                         f"got one on {len(grid.correct)} examples")
    if grid.margin is None:
        raise ValueError("grid must be a grid_accuracy result with per-example margins; this one has none")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
    limits = transforms.validate_limits(limits)
    transforms.validate_resampling(resampling)
    step = _refine_step_size(step_size, limits, granularity)
    survivors = np.flatnonzero(grid.correct)
    lowest = grid.worst_transform[:, None] if grid.lowest_transforms is None else grid.lowest_transforms
    starts = lowest[survivors]
    image_index = np.repeat(survivors, starts.shape[1]).astype(np.int32)
    params = starts.reshape(-1, 3).astype(np.float32)
    correct, margin, worst = grid.correct.copy(), grid.margin.copy(), grid.worst_transform.copy()
    search = _margin_gradient_fn(model)
    images_t, labels_t = tf.convert_to_tensor(images), tf.convert_to_tensor(labels, tf.int32)
    evaluations = 0
    for _ in range(int(steps) + 1):
        active = np.flatnonzero(correct[image_index])
        if not active.size:
            break
        pair_correct, pair_margin, gradient = _in_fixed_batches(
            lambda index, points: search(images_t, labels_t, index, tf.constant(points), resampling), batch_size,
            image_index[active].astype(np.int32), params[active].astype(np.float32))
        evaluations += active.size
        _keep_lowest_margin(image_index[active], params[active], pair_correct, pair_margin, correct, margin, worst)
        params[active] = np.clip(params[active] - step * np.sign(gradient), -np.asarray(limits), limits)
    return RobustResult(accuracy=float(correct.mean()), correct=correct, worst_transform=worst,
                        evaluations=evaluations, margin=margin)


def _refine_step_size(step_size: Sequence[float] | None, limits: tuple[float, float, float],
                      granularity: Sequence[int]) -> np.ndarray:
    """`step_size` as float32 [3], by default a quarter of the grid spacing (the limit where an axis has 1 point)."""
    if step_size is None:
        spacing = [2 * l / (g - 1) if g > 1 else l for l, g in zip(limits, granularity)]
        return np.asarray(spacing, np.float32) / 4
    step = np.asarray(step_size, np.float32)
    if step.shape != (3,) or np.any(step < 0):
        raise ValueError(f"step_size must be 3 values >= 0 (dx px, dy px, angle deg); got {step_size!r}")
    return step


def _keep_lowest_margin(image_index, params, pair_correct, pair_margin, correct, margin, worst) -> None:
    """Updates per-example `correct`, lowest `margin` and its transformation `worst` in place with new pairs."""
    correct[image_index[~pair_correct]] = False
    order = np.lexsort((pair_margin, image_index))
    images, first = np.unique(image_index[order], return_index=True)
    lowest = order[first]
    lower = pair_margin[lowest] < margin[images]
    margin[images[lower]] = pair_margin[lowest[lower]]
    worst[images[lower]] = params[lowest[lower]]


INPUT_RANGES = {"0-255": 1.0, "0-1": 1.0 / 255.0}
LAYOUTS = ("auto", "nhwc", "nchw")


class Classifier:
    """A classifier loaded from disk as `classifier(images, training=False) -> logits`.

    Takes raw pixel values (0-255, [N, H, W, C]) like every function here,
    after any transformation, and feeds the model
    `(pixels_in_range - mean) / std`: rescaled to the range the model
    expects (`INPUT_RANGES`: "0-1" divides by 255), then normalised per
    channel (`mean`, `std`: 1 value or one per channel, in that range; None
    leaves the pixels as they are), then transposed to [N, C, H, W] for an
    "nchw" model. The black canvas of a transformation is 0 before all this.

    Attributes:
        input_shape: the model's declared input shape in its `layout`, e.g. (None, 32, 32, 3).
        variables: the model's variables (for `fingerprint`).
        layout: "nhwc" or "nchw", the axis order the model takes.
        mean, std: the per-channel normalisation, tuples of floats or None.
        digest: a hex digest of the model's file for `fingerprint` when it has no variables (ONNX), else None.
    """

    def __init__(self, fn: Callable[[tf.Tensor], tf.Tensor], input_shape: tuple, variables: Sequence[tf.Variable],
                 input_range: str = "0-255", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, layout: str = "nhwc", digest: str | None = None):
        if input_range not in INPUT_RANGES:
            raise ValueError(f"Unknown input_range {input_range!r}; valid ranges are {list(INPUT_RANGES)}")
        if layout not in LAYOUTS[1:]:
            raise ValueError(f"Unknown layout {layout!r}; valid layouts are {list(LAYOUTS[1:])}")
        self._fn = fn
        self._scale = INPUT_RANGES[input_range]
        self.input_shape = tuple(input_shape)
        self.variables = list(variables)
        self.mean = _per_channel("mean", mean)
        self.std = _per_channel("std", std)
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be > 0 per channel (it divides the pixels); got {list(self.std)}")
        self.layout = layout
        self.digest = digest

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The normalisation and layout that differ from the defaults (nothing for a plain nhwc model)."""
        settings = {"mean": self.mean, "std": self.std, "layout": self.layout if self.layout != "nhwc" else None}
        return {name: value for name, value in settings.items() if value is not None}

    def __call__(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        images = tf.cast(images, tf.float32) * self._scale
        if self.mean is not None:
            images = images - tf.constant(self.mean, tf.float32)
        if self.std is not None:
            images = images / tf.constant(self.std, tf.float32)
        if self.layout == "nchw":
            images = tf.transpose(images, [0, 3, 1, 2])
        return self._fn(images)


def _per_channel(name: str, values: Sequence[float] | None) -> tuple[float, ...] | None:
    """`values` as a tuple of floats, or None; raises ValueError unless they are one or more finite numbers."""
    if values is None:
        return None
    array = np.asarray(values, np.float64).ravel()
    if not array.size or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be one or more finite numbers (per channel); got {list(values)}")
    return tuple(float(value) for value in array)


def load_classifier(path: str | Path, input_range: str = "0-255", mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None, layout: str = "auto",
                    image_shape: Sequence[int] | None = None) -> Classifier:
    """Loads a Keras `.keras` file, a SavedModel folder (its `serving_default` signature) or an `.onnx` file
    as a `Classifier` with the given `input_range`, `mean` and `std` (see `Classifier`).

    A SavedModel signature or an ONNX graph must take one image tensor; of
    its outputs it uses `logits` if present, else its only output. Keras and
    SavedModel classifiers take "nhwc" images; an ONNX model takes "nhwc" or
    "nchw" ones, `layout="auto"` detecting which from its declared input
    shape and `image_shape`, the data's (height, width, channels) (see
    `detect_layout`). ONNX models run in onnxruntime, without gradients.
    """
    path = Path(path)
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; valid layouts are {list(LAYOUTS)}")
    preprocessing = {"input_range": input_range, "mean": mean, "std": std}
    if path.is_file() and path.suffix == ".onnx":
        return _onnx_classifier(path, layout, image_shape, **preprocessing)
    if layout == "nchw":
        raise ValueError(f"layout 'nchw' is for ONNX models; {path} is a Keras or SavedModel classifier, "
                         "which takes nhwc images")
    if path.is_file() and path.suffix == ".keras":
        model = pretrained.load_keras(path)
        network = export.classifier_network(model)
        return Classifier(lambda x: model(x, training=False), network.input_shape, model.weights, **preprocessing)
    if (path / "saved_model.pb").is_file():
        return _saved_model_classifier(path, **preprocessing)
    raise ValueError(f"model path {path} is neither a .keras file, a SavedModel folder (with saved_model.pb) "
                     "nor an .onnx file")


def _saved_model_classifier(path: Path, **preprocessing: Any) -> Classifier:
    """The `serving_default` signature of a SavedModel; `preprocessing` are `Classifier`'s input_range, mean, std."""
    loaded = tf.saved_model.load(str(path))
    if "serving_default" not in loaded.signatures:
        raise ValueError(f"SavedModel {path} has no serving_default signature; it has {list(loaded.signatures)}")
    signature = loaded.signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(inputs) != 1:
        raise ValueError(f"SavedModel {path}: serving_default must take one image input; it takes {sorted(inputs)}")
    if "logits" not in outputs and len(outputs) != 1:
        raise ValueError(f"SavedModel {path}: serving_default has no 'logits' output and more than one output "
                         f"({sorted(outputs)}); cannot tell which are the class scores")
    (input_name, spec), = inputs.items()
    output_name = "logits" if "logits" in outputs else next(iter(outputs))
    return Classifier(lambda x: signature(**{input_name: x})[output_name], spec.shape.as_list(),
                      loaded.variables, **preprocessing)


def _onnx_classifier(path: Path, layout: str, image_shape: Sequence[int] | None, **preprocessing: Any) -> Classifier:
    """An ONNX model run by onnxruntime on CPU, called from tf.function through `tf.numpy_function` (so without
    gradients); `fingerprint` digests the file's bytes. `preprocessing` are `Classifier`'s input_range, mean, std."""
    session, errors = _onnx_session(path)
    inputs, outputs = session.get_inputs(), [output.name for output in session.get_outputs()]
    if len(inputs) != 1:
        raise ValueError(f"ONNX model {path} must take one image input; it takes {[i.name for i in inputs]}")
    if "logits" not in outputs and len(outputs) != 1:
        raise ValueError(f"ONNX model {path} has no 'logits' output and more than one output ({outputs}); "
                         "cannot tell which are the class scores")
    (image_input,) = inputs
    if image_input.type != "tensor(float)":
        raise ValueError(f"ONNX model {path} takes {image_input.type} images; only float32 ones (tensor(float)) "
                         "are supported")
    declared = [dim if isinstance(dim, int) else None for dim in image_input.shape]
    if layout == "auto":
        if image_shape is None:
            raise ValueError(f"detecting the layout of the ONNX model {path} needs image_shape, the data's "
                             "(height, width, channels); or give layout='nhwc' or 'nchw'")
        layout = detect_layout(declared, image_shape)
    output_name = "logits" if "logits" in outputs else outputs[0]
    output_shape = session.get_outputs()[outputs.index(output_name)].shape
    output_dims = [dim if isinstance(dim, int) else None for dim in output_shape[1:]]

    def run(images: np.ndarray) -> np.ndarray:
        """The logits of `images`, in slices of the model's batch size if it declares one (the last zero-padded):
        an export traced on one example (PyTorch's default) takes batches of exactly that size."""
        size = declared[0] or len(images)
        padded = np.concatenate([images, np.zeros((-len(images) % size, *images.shape[1:]), images.dtype)])
        try:
            scores = [session.run([output_name], {image_input.name: padded[start:start + size]})[0]
                      for start in range(0, len(padded), size)]
        except errors as error:
            raise ValueError(f"onnxruntime fails on {path}: {str(error).strip().splitlines()[0]}") from None
        return np.concatenate(scores)[:len(images)].astype(np.float32, copy=False)

    def logits(images: tf.Tensor) -> tf.Tensor:
        scores = tf.numpy_function(run, [images], tf.float32, stateful=False)
        scores.set_shape([images.shape[0], *output_dims])
        return scores

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Classifier(logits, declared, [], layout=layout, digest=digest, **preprocessing)


def _onnx_session(path: Path) -> tuple[Any, tuple[type[Exception], ...]]:
    """An onnxruntime CPU session of the ONNX file `path` (warnings silenced), and onnxruntime's exception types
    (they share no base class below Exception)."""
    try:
        import onnxruntime
        from onnxruntime.capi import onnxruntime_pybind11_state
    except ImportError:
        raise ImportError(f"reading the ONNX model {path} needs onnxruntime: pip install -e \".[onnx]\"") from None
    errors = tuple(value for value in vars(onnxruntime_pybind11_state).values()
                   if isinstance(value, type) and issubclass(value, Exception))
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]), errors
    except errors as error:
        raise ValueError(f"onnxruntime cannot read {path}: {str(error).strip().splitlines()[0]}") from None


def _input_dims(image_shape: Sequence[int], layout: str) -> tuple[int, ...]:
    """The per-example input shape of a `layout` model for images of `image_shape` (height, width, channels)."""
    height, width, channels = image_shape
    return (channels, height, width) if layout == "nchw" else (height, width, channels)


def _fits(declared: Sequence[int | None], dims: Sequence[int]) -> bool:
    """Whether a declared input shape [batch, ...] (None: any size) takes examples of shape `dims`."""
    return len(declared) == len(dims) + 1 and all(d is None or d == e for d, e in zip(tuple(declared)[1:], dims))


def detect_layout(declared: Sequence[int | None], image_shape: Sequence[int]) -> str:
    """"nhwc" or "nchw": the axis order in which a model's declared input shape [batch, ...] (None: any size)
    takes images of `image_shape` (height, width, channels), i.e. where its channel axis is; raises ValueError
    (one line) when both orders fit (e.g. every size unknown) or neither does."""
    fitting = [layout for layout in LAYOUTS[1:] if _fits(declared, _input_dims(image_shape, layout))]
    if len(fitting) == 1:
        return fitting[0]
    nhwc, nchw = (", ".join(map(str, _input_dims(image_shape, layout))) for layout in LAYOUTS[1:])
    if fitting:
        raise ValueError(f"cannot tell the layout of the model input {list(declared)}: both [batch, {nhwc}] (nhwc) "
                         f"and [batch, {nchw}] (nchw) fit; give --input_layout=nhwc or --input_layout=nchw")
    raise ValueError(f"model input must be [batch, {nhwc}] (nhwc) or [batch, {nchw}] (nchw) to fit the data; "
                     f"the model declares {list(declared)}")


def check_classifier(model: Model, images, num_classes: int) -> None:
    """Raises ValueError (one line) unless `model` maps images like `images` [N, H, W, C] to logits [N, num_classes].

    Checks the declared `input_shape` if the model has one (in its `layout`,
    "nhwc" unless it says otherwise), that a `mean` or `std` has 1 value or
    one per channel, then classifies two images: cheap, so a wrong model
    fails before any attack runs.
    """
    images = np.asarray(images)
    layout = getattr(model, "layout", "nhwc")
    expected = _input_dims(images.shape[1:], layout)
    declared = getattr(model, "input_shape", None)
    if declared is not None and not _fits(declared, expected):
        named = " (nchw)" if layout == "nchw" else ""
        raise ValueError(f"model input must be [batch, {', '.join(map(str, expected))}]{named} to fit the data; "
                         f"the model declares {list(declared)}")
    for name in ("mean", "std"):
        values = getattr(model, name, None)
        if values is not None and len(values) not in (1, images.shape[-1]):
            raise ValueError(f"{name} {list(values)} has {len(values)} values; give 1 or {images.shape[-1]} "
                             "(one per channel of the images)")
    sample = images[:2].astype(np.float32)
    try:
        logits = model(tf.constant(sample), training=False)
    except (ValueError, TypeError, tf.errors.OpError) as error:
        raise ValueError(f"model fails on a batch of shape {list(sample.shape)}: "
                         f"{str(error).strip().splitlines()[0]}") from None
    shape = tuple(logits.shape)
    if shape != (len(sample), num_classes) or not logits.dtype.is_floating:
        raise ValueError(f"model output must be float [batch, {num_classes}] (one score per class of the data); "
                         f"got {logits.dtype.name} {list(shape)} for a batch of {len(sample)}")


def fingerprint(model: Model) -> str:
    """A hex digest of the model's variables (names, shapes and values): equal for the same weights.

    A `Classifier` with a `digest` (an ONNX model, which has no variables)
    is named by it instead. A `Classifier`'s `preprocessing` (normalisation,
    nchw layout) is digested with it when set, so a changed one never reuses
    a resumable state; without it the digest is that of the variables alone,
    as before these settings existed.
    """
    if isinstance(model, Classifier) and (model.digest or model.preprocessing):
        key = {"model": model.digest or _variables_digest(model.variables), **model.preprocessing}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    variables = model.weights if isinstance(model, keras.Model) else getattr(model, "variables", None)
    if variables is None:
        raise ValueError(f"cannot fingerprint {type(model).__name__}: it has no weights or variables")
    return _variables_digest(variables)


def _variables_digest(variables: Sequence) -> str:
    """A hex digest of variables' paths (or names), shapes, dtypes and values."""
    digest = hashlib.sha256()
    for variable in variables:
        value = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
        digest.update(f"{getattr(variable, 'path', getattr(variable, 'name', ''))}{value.shape}{value.dtype}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def _digest_arrays(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


RESUMABLE_ATTACKS = ("grid", "worst_of_k", "spgd", "refined")
_ADDED_ARGUMENT_DEFAULTS = {"resampling": "composed"}
_ARRAY_FIELDS = ("correct", "worst_transform", "margin", "lowest_transforms", "per_transform_accuracy")


def resumable(
    attack: str,
    model: Model,
    images,
    labels,
    state_dir: str | Path,
    chunk_size: int = 1000,
    model_key: str | None = None,
    verbose: bool = False,
    **kwargs: Any,
) -> RobustResult:
    """Runs `attack` chunk by chunk of `chunk_size` examples, saving each chunk so a killed run resumes.

    `attack` is "grid" (`grid_accuracy`), "worst_of_k", "spgd" or "refined"
    (`refine`, with `grid=` a full result on the same images); `kwargs` go
    to it. Chunk i of a random attack gets the seed `seed` folded with i, so
    results depend on `chunk_size` but never on where a run was killed.

    Each finished chunk is written atomically (`files.atomic_path`)
    to `state_dir/<attack>-<key>/chunk_<i>.npz`, where the key digests the
    model (`model_key`, default `fingerprint(model)`), the images and
    labels, the attack, its arguments and `chunk_size`: a changed setting
    starts a new folder instead of reusing stale chunks. A rerun reads the
    chunks present and evaluates only the others; `resumed_examples` says
    how many were read.
    """
    if attack not in RESUMABLE_ATTACKS:
        raise ValueError(f"Unknown resumable attack {attack!r}; valid attacks are {list(RESUMABLE_ATTACKS)}")
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1; got {chunk_size!r}")
    if attack == "refined" and not isinstance(kwargs.get("grid"), RobustResult):
        raise ValueError("resumable('refined', ...) needs grid=<the grid's RobustResult on the same examples>")
    images, labels, _ = _check_inputs(images, labels, kwargs.get("batch_size"))
    folder = Path(state_dir) / f"{attack}-{_state_key(attack, model, images, labels, chunk_size, model_key, kwargs)}"
    folder.mkdir(parents=True, exist_ok=True)
    chunks, resumed = [], 0
    starts = range(0, len(images), int(chunk_size))
    for index, start in enumerate(starts):
        path = folder / f"chunk_{index:06d}.npz"
        stop = start + int(chunk_size)
        if path.is_file():
            chunks.append(_read_chunk(path))
            resumed += len(chunks[-1].correct)
            continue
        chunks.append(_run_chunk(attack, model, images[start:stop], labels[start:stop], index, start, stop,
                                 verbose, kwargs))
        _write_chunk(path, chunks[-1])
    if verbose and resumed:
        print(f"{attack}: resumed {resumed} of {len(images)} examples from {folder}")
    return dataclasses.replace(_concatenate(chunks), resumed_examples=resumed)


def _state_key(attack: str, model: Model, images: np.ndarray, labels: np.ndarray, chunk_size: int,
               model_key: str | None, kwargs: Mapping[str, Any]) -> str:
    """A 16-hex-digit digest naming the state folder of one (model, data, attack, arguments, chunking).

    Arguments added since states were first saved are left out at their defaults
    (`_ADDED_ARGUMENT_DEFAULTS`), so a state saved before they existed still resumes.
    """
    kwargs = {name: value for name, value in kwargs.items()
              if not (name in _ADDED_ARGUMENT_DEFAULTS and value == _ADDED_ARGUMENT_DEFAULTS[name])}
    arguments = {name: _digest_arrays(*(a for a in (value.correct, value.worst_transform, value.margin,
                                                     value.lowest_transforms) if a is not None))
                 if isinstance(value, RobustResult) else np.asarray(value).tolist()
                 for name, value in sorted(kwargs.items())}
    key = {"attack": attack, "model": model_key or fingerprint(model), "data": _digest_arrays(images, labels),
           "chunk_size": int(chunk_size), "arguments": arguments}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _run_chunk(attack: str, model: Model, images: np.ndarray, labels: np.ndarray, index: int, start: int,
               stop: int, verbose: bool, kwargs: dict) -> RobustResult:
    """One chunk of `resumable`: the attack on images[start:stop], with its seed folded with the chunk index."""
    kwargs = dict(kwargs)
    if attack in ("worst_of_k", "spgd"):
        seed = _check_seed(kwargs.get("seed", DEFAULT_SEED))
        kwargs["seed"] = tf.random.experimental.stateless_fold_in(seed, index).numpy()
    if attack == "grid":
        return grid_accuracy(model, images, labels, verbose=verbose, **kwargs)
    if attack == "worst_of_k":
        return worst_of_k_accuracy(model, images, labels, **kwargs)
    if attack == "spgd":
        return spgd_accuracy(model, images, labels, **kwargs)
    kwargs["grid"] = _slice(kwargs["grid"], start, stop)
    return refine(model, images, labels, **kwargs)


def _slice(result: RobustResult, start: int, stop: int) -> RobustResult:
    """The per-example fields of `result` for examples [start, stop) (evaluations and per-transform dropped)."""
    fields = {name: getattr(result, name)[start:stop] for name in _ARRAY_FIELDS[:4]
              if getattr(result, name) is not None}
    return RobustResult(accuracy=float(fields["correct"].mean()), **fields)


def _write_chunk(path: Path, result: RobustResult) -> None:
    """Saves a chunk's result atomically: a reader sees the old state or the whole new file, never a part."""
    arrays = {name: getattr(result, name) for name in _ARRAY_FIELDS if getattr(result, name) is not None}
    with files.atomic_path(path) as partial, open(partial, "wb") as file:
        np.savez(file, evaluations=result.evaluations, **arrays)


def _read_chunk(path: Path) -> RobustResult:
    with np.load(path) as saved:
        arrays = {name: saved[name] for name in _ARRAY_FIELDS if name in saved}
        evaluations = int(saved["evaluations"])
    return RobustResult(accuracy=float(arrays["correct"].mean()), evaluations=evaluations, **arrays)


def _concatenate(chunks: Sequence[RobustResult]) -> RobustResult:
    """One result from the results of consecutive chunks of examples."""
    sizes = np.asarray([len(chunk.correct) for chunk in chunks])
    fields = {name: np.concatenate([getattr(chunk, name) for chunk in chunks])
              for name in _ARRAY_FIELDS[:4] if getattr(chunks[0], name) is not None}
    per_transform = None
    if chunks[0].per_transform_accuracy is not None:
        per_transform = sum(chunk.per_transform_accuracy * size for chunk, size in zip(chunks, sizes)) / sizes.sum()
    return RobustResult(accuracy=float(fields["correct"].mean()), per_transform_accuracy=per_transform,
                        evaluations=sum(chunk.evaluations for chunk in chunks), **fields)
