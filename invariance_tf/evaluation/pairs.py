"""The engine every attack runs on: (image, transformation) pairs classified in fixed-size batches.

Every model call sees exactly `batch_size` pairs (the last batch zero-padded),
inside one tf.function traced once per model, so an evaluation costs one
trace however many batches it runs. Also here: the checks of the arguments
that all attacks share (images, labels, batch size, seed).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from invariance_tf import semimetrics, transforms
from invariance_tf.evaluation.result import Model, RobustResult, correct_and_margin
from invariance_tf.model_files.rules import float32_logits

DEFAULT_SEED = (0, 0)
_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_batch_size() -> int:
    """(image, transformation) pairs per model call when `batch_size` is None.

    1024 on a GPU. 128 on CPU, where small batches keep activations in cache:
    a ResNet-8 grid evaluation needs about 17% less CPU time at 128 than at 1024.
    """
    return 1024 if tf.config.list_physical_devices("GPU") else 128


def check_inputs(images, labels, batch_size: int | None) -> tuple[np.ndarray, np.ndarray, int]:
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


def check_seed(seed: Sequence[int]) -> tf.Tensor:
    """A stateless seed: two integers, as a tf.int64 tensor."""
    if np.shape(seed) != (2,) or not np.issubdtype(np.asarray(seed).dtype, np.integer):
        raise ValueError(f"seed must be two integers; got {seed!r}")
    return tf.constant(seed, tf.int64)


def traced(build: Callable[[Model], Callable]) -> Callable[[Model], Callable]:
    """Memoises `build(model)` per model, so the chunks of `resumable` share one traced tf.function.

    The function sees the model through a weak proxy: the cache never keeps a model (or its graphs) alive.
    """

    def cached(model: Model) -> Callable:
        functions = _TRACED.setdefault(model, {})
        if build.__name__ not in functions:
            functions[build.__name__] = build(weakref.proxy(model))
        return functions[build.__name__]

    return cached


def in_fixed_batches(fn: Callable[..., Sequence[tf.Tensor]], batch_size: int, *columns: np.ndarray) -> list[np.ndarray]:
    """`fn` on fixed-size batches of the rows of `columns`, each output concatenated over the batches.

    The last batch is zero-padded, so a tf.function traces once; the padding is removed from the outputs.
    """
    size = len(columns[0])
    padded = -(-size // batch_size) * batch_size
    columns = [np.concatenate([c, np.zeros((padded - size, *c.shape[1:]), c.dtype)]) for c in columns]
    outputs = [fn(*(c[start : start + batch_size] for c in columns)) for start in range(0, padded, batch_size)]
    return [np.concatenate([o[i].numpy() for o in outputs])[:size] for i in range(len(outputs[0]))]


@traced
def _classify_pairs_fn(model: Model) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
    """A tf.function classifying the pairs (images[i], params[j]) of one batch of indices."""

    @tf.function(reduce_retracing=True)
    def classify(images, labels, params, image_index, param_index, resampling):
        moved = transforms.transform_xla(
            tf.cast(tf.gather(images, image_index), tf.float32), tf.gather(params, param_index), resampling
        )
        return correct_and_margin(model(moved, training=False), tf.gather(labels, image_index))

    return classify


@traced
def _profile_pairs_fn(model: Model) -> Callable[..., tuple[tf.Tensor, ...]]:
    """`_classify_pairs_fn`, also comparing each pair with its image's clean logits: same argmax, and the KL."""

    @tf.function(reduce_retracing=True)
    def profile(images, labels, params, image_index, param_index, resampling, clean_logits):
        moved = transforms.transform_xla(
            tf.cast(tf.gather(images, image_index), tf.float32), tf.gather(params, param_index), resampling
        )
        logits = float32_logits(model(moved, training=False))
        clean = tf.gather(clean_logits, image_index)
        agrees = tf.equal(tf.argmax(logits, axis=-1), tf.argmax(clean, axis=-1))
        return (*correct_and_margin(logits, tf.gather(labels, image_index)), agrees, semimetrics.kl(clean, logits))

    return profile


@traced
def _logits_fn(model: Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """A tf.function: the model's float32 logits on a batch of untransformed images."""

    @tf.function(reduce_retracing=True)
    def logits(images):
        return (float32_logits(model(tf.cast(images, tf.float32), training=False)),)

    return logits


class Tally:
    """Per example: whether it is correct under every pair seen, and the `keep` lowest margins with what gave them.

    `worst` [N, keep, ...] holds, per example and margin, the transformation that gave it: an index into a table of
    transformations (`PairEvaluator`) or the (dx, dy, angle) row itself (`refine`). Column 0 is the lowest margin.

    Attributes:
        correct: bool [N], false once a pair of the example is misclassified.
        margin: float32 [N, keep], the lowest margins seen, ascending (inf: none yet).
        worst: [N, keep, ...], the transformation of each margin.
        evaluations: the pairs tallied.
    """

    def __init__(self, correct: np.ndarray, margin: np.ndarray, worst: np.ndarray):
        self.correct, self.margin, self.worst = correct, margin, worst
        self.keep = margin.shape[1]
        self.evaluations = 0

    def add(self, image_index: np.ndarray, worst: np.ndarray, correct: np.ndarray, margin: np.ndarray) -> None:
        """Marks mistakes and merges the pairs' margins into each example's `keep` lowest (ties keep the older)."""
        self.evaluations += len(image_index)
        self.correct[image_index[~correct]] = False
        images, inverse = np.unique(image_index, return_inverse=True)
        owner = np.concatenate([np.repeat(np.arange(len(images)), self.keep), inverse])
        margins = np.concatenate([self.margin[images].ravel(), margin])
        tail = self.worst.shape[2:]
        points = np.concatenate([self.worst[images].reshape(-1, *tail), worst])
        order = np.lexsort((margins, owner))
        first = np.searchsorted(owner[order], np.arange(len(images)))
        rank = np.arange(len(order)) - np.repeat(first, np.bincount(owner, minlength=len(images)))
        kept = order[rank < self.keep]
        self.margin[images] = margins[kept].reshape(-1, self.keep)
        self.worst[images] = points[kept].reshape(-1, self.keep, *tail)


class PairEvaluator(Tally):
    """Classifies (image, transformation) pairs in fixed-size batches and keeps per-example tallies (`Tally`).

    `params` is the table of transformations [T, 3] that pairs index into.
    Every model call sees exactly `batch_size` pairs (the last batch of a call
    is padded), so the tf.function is traced once. Per example it keeps the
    `keep` transformations with the lowest margins seen (column 0 the lowest).
    `resampling` is `transforms`' resampling of the transformed images.
    With `profile`, each pair is also compared with the model on its
    untransformed image, and per example it counts the pairs whose argmax is
    the clean argmax (`agreeing`) and sums KL(f(x) || f(T x)) in nats (`kl_sum`).
    """

    def __init__(
        self,
        model: Model,
        images: np.ndarray,
        labels: np.ndarray,
        params: np.ndarray,
        batch_size: int,
        keep: int = 1,
        resampling: str = transforms.EVALUATION_RESAMPLING,
        profile: bool = False,
    ):
        num_images = len(images)
        super().__init__(
            np.ones(num_images, bool),
            np.full((num_images, keep), np.inf, np.float32),
            np.zeros((num_images, keep), np.int64),
        )
        self.images = tf.convert_to_tensor(images)
        self.labels = tf.convert_to_tensor(labels, tf.int32)
        self.params = tf.convert_to_tensor(params, tf.float32)
        self.batch_size = batch_size
        self.resampling = transforms.validate_resampling(resampling)
        self._classify = _classify_pairs_fn(model)
        self._profile = _profile_pairs_fn(model)
        self.clean_logits = self._clean_logits(model) if profile else None
        self.agreeing = np.zeros(num_images, np.int64)
        self.kl_sum = np.zeros(num_images, np.float64)

    def _clean_logits(self, model: Model) -> tf.Tensor:
        """The model's logits on the untransformed images, in fixed-size batches."""
        (logits,) = in_fixed_batches(_logits_fn(model), self.batch_size, self.images.numpy())
        return tf.convert_to_tensor(logits)

    def __call__(self, image_index: np.ndarray, param_index: np.ndarray) -> np.ndarray:
        """Classifies the pairs (image_index[p], param_index[p]) and returns whether each is correct."""
        image_index, param_index = np.asarray(image_index, np.int32), np.asarray(param_index, np.int32)
        correct, margin, *compared = in_fixed_batches(self._batch, self.batch_size, image_index, param_index)
        if compared:
            self.agreeing += np.bincount(image_index, weights=compared[0], minlength=len(self.correct)).astype(np.int64)
            self.kl_sum += np.bincount(image_index, weights=compared[1], minlength=len(self.correct))
        self.add(image_index, param_index, correct, margin)
        return correct

    def _batch(self, image_index: np.ndarray, param_index: np.ndarray) -> tuple[tf.Tensor, ...]:
        """One fixed-size batch of pairs: correct and margin, and with `profile` agreement and KL."""
        arguments = (self.images, self.labels, self.params, image_index, param_index, self.resampling)
        if self.clean_logits is None:
            return self._classify(*arguments)
        return self._profile(*arguments, self.clean_logits)

    def result(self, per_transform_accuracy: np.ndarray | None = None) -> RobustResult:
        """The tallies so far as a `RobustResult` (`lowest_transforms` only when keeping more than one).

        With `profile`, `invariance` and `mean_kl` average over every transformation of `params`, so they are
        meaningful once every pair has been classified.
        """
        lowest = self.params.numpy()[self.worst]
        profiled = self.clean_logits is not None
        return RobustResult(
            accuracy=float(self.correct.mean()),
            correct=self.correct.copy(),
            worst_transform=lowest[:, 0],
            per_transform_accuracy=per_transform_accuracy,
            evaluations=self.evaluations,
            margin=self.margin[:, 0].copy(),
            lowest_transforms=lowest if self.keep > 1 else None,
            invariance=(self.agreeing / len(self.params)).astype(np.float32) if profiled else None,
            mean_kl=(self.kl_sum / len(self.params)).astype(np.float32) if profiled else None,
        )
