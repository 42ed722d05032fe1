"""Class-balanced subsets of a split: a held-out validation set, evaluation subsets and their positions.

A subset is drawn with a seed: the same labels, size and seed give the same examples. `check_count` and
`check_arrays` are the argument checks the package shares.
"""

from __future__ import annotations

import numpy as np

from invariance_tf.options import is_count


def subset(labels: np.ndarray, examples: int | None, seed: int) -> np.ndarray | slice:
    """Indices of the class-balanced subset `load` keeps (`balanced_subset`), or all when `examples` is None."""
    if examples is None:
        return slice(None)
    check_count("examples", examples, len(labels))
    return balanced_subset(labels, examples, seed)


def subset_indices(labels: np.ndarray, examples: int | None, seed: int) -> np.ndarray:
    """The positions, in the whole split's loader order, of the examples `load(..., examples, seed)` returns.

    `labels` are the whole split's; the positions come sorted, so they name the same images as `load`'s output
    in its order.
    """
    return np.arange(len(labels))[subset(np.asarray(labels), examples, seed)]


def balanced_subset(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Sorted indices of `count` examples, spread over classes as evenly as possible.

    Each class contributes `count // num_classes` or one more (a seeded choice
    of classes gets the remainder), or all its examples if it has fewer; the
    examples within a class are a seeded random choice. Same `labels`, `count`
    and `seed` give the same indices.
    """
    labels = np.asarray(labels)
    check_count("count", count, len(labels))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    _, classes = np.unique(labels[order], return_inverse=True)
    by_class = np.argsort(classes, kind="stable")
    class_start = np.searchsorted(classes[by_class], classes[by_class])
    rank = np.empty(len(labels), np.int64)
    rank[by_class] = np.arange(len(labels)) - class_start
    class_priority = rng.permutation(classes.max() + 1)[classes]
    chosen = np.lexsort((class_priority, rank))[:count]
    return np.sort(order[chosen])


def at_most(labels: np.ndarray, count: int, seed: int) -> np.ndarray | slice:
    """Indices of a class-balanced subset of `count` examples: the images an evaluation of at most `count` reads.

    Every index when `count` is 0 or not smaller than their number; the subset is `balanced_subset`'s.
    """
    return balanced_subset(labels, count, seed) if 0 < count < len(labels) else slice(None)


def train_validation_split(
    images: np.ndarray, labels: np.ndarray, validation: int | float, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Splits off a class-balanced validation set: `((train_x, train_y), (val_x, val_y))`.

    `validation` is a count of examples (int) or a fraction in (0, 1) of
    `len(images)` (float, rounded). Both parts keep the input order.
    """
    check_arrays(images, labels)
    n = len(images)
    if isinstance(validation, float):
        if not 0.0 < validation < 1.0:
            raise ValueError(f"validation fraction must be in (0, 1); got {validation}")
        validation = round(validation * n)
    check_count("validation", validation, n - 1)
    is_validation = np.zeros(n, bool)
    is_validation[balanced_subset(labels, validation, seed)] = True
    train = images[~is_validation], labels[~is_validation]
    return train, (images[is_validation], labels[is_validation])


def check_count(name: str, value: int, maximum: int) -> None:
    """Raises ValueError unless `value` is a count (`options.is_count`) of at most `maximum`."""
    if not (is_count(value) and value <= maximum):
        raise ValueError(f"{name} must be an integer in [1, {maximum}]; got {value!r}")


def check_arrays(images: np.ndarray, labels: np.ndarray) -> None:
    """Raises ValueError unless images are `[N, H, W, C]` with N labels, N >= 1."""
    if np.ndim(images) != 4 or np.ndim(labels) != 1 or len(images) != len(labels) or not len(images):
        raise ValueError(
            "Expected images [N, H, W, C] and labels [N] with N >= 1; "
            f"got shapes {np.shape(images)} and {np.shape(labels)}"
        )
