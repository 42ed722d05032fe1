"""The data of one run: its training, validation and test arrays (`load_splits`) and what `fit` reads of them.

`fit_inputs` turns a run's splits into the arguments of `keras.Model.fit`, for `experiment.run` and the tuner's
trials alike; `grid_choice` picks the test images of the final grid attack.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from invariance_tf import data, report
from invariance_tf.experiment_config import ExperimentConfig


@dataclasses.dataclass
class Splits:
    """The data of one run: training, validation (may be empty) and test arrays, and the dataset info."""

    train: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    info: data.DatasetInfo
    test_positions: np.ndarray | None = None
    """Each test example's position in the whole test split (loader order); None: the whole split, in order."""
    test_split_size: int | None = None
    """Images in the whole test split; None: as many as `test` holds."""


def load_splits(config: ExperimentConfig) -> Splits:
    """The run's arrays, with `--validation_examples` held out of the training data.

    They are held out of a training subset of `--train_examples` plus that many, or of the whole training split
    when `--train_examples=0`.
    """
    images, labels, info = data.load(
        config.dataset, config.data_root, "train", examples=config.train_subset_size, seed=config.seed
    )
    if config.validation_examples >= len(images):
        raise ValueError(
            f"--validation_examples={config.validation_examples} leaves no training examples: the "
            f"training split has {len(images)}"
        )
    if config.validation_examples:
        train, validation = data.train_validation_split(images, labels, config.validation_examples, seed=config.seed)
    else:
        train, validation = (images, labels), (images[:0], labels[:0])
    test_images, test_labels, _ = data.load(config.dataset, config.data_root, "test")
    kept = data.subset_indices(test_labels, config.test_subset_size, config.seed)
    return Splits(train, validation, (test_images[kept], test_labels[kept]), info, kept, len(test_labels))


def augmentation(config: ExperimentConfig) -> str:
    """The `data.AUGMENTATIONS` entry `--augment` names ("auto": the dataset's standard choice)."""
    if config.augment == "auto":
        return "crop_flip" if data.standard_augmentation(config.dataset) else "off"
    return {"on": "crop_flip", "flip": "flip", "off": "off"}[config.augment]


def grid_choice(labels: np.ndarray, positions: np.ndarray, config: ExperimentConfig) -> np.ndarray:
    """Which of the test examples (`labels`, at `positions` of the whole split) the final grid attack grades.

    The images `--grid_subset` names, else `--grid_examples` of them drawn with the run's seed (`data.at_most`),
    else all; returned as indices into `labels`.
    """
    if not config.grid_subset:
        return np.arange(len(labels))[data.at_most(labels, config.grid_examples, config.seed)]
    wanted = report.image_positions(json.loads(Path(config.grid_subset).read_text()))
    found = np.searchsorted(positions, wanted)
    missing = (found >= len(positions)) | (positions[np.minimum(found, len(positions) - 1)] != wanted)
    if missing.any():
        raise ValueError(
            f"--grid_subset={config.grid_subset} names {int(missing.sum())} test images outside the run's "
            f"--test_examples={config.test_examples} (first: position {int(wanted[missing][0])})"
        )
    return found


def steps_per_epoch(config: ExperimentConfig, splits: Splits) -> int:
    """Batches of `--batch_size` training examples per epoch (the rest is dropped); raises ValueError if none."""
    examples = len(splits.train[0])
    if config.batch_size > examples:
        raise ValueError(f"--batch_size={config.batch_size} is larger than the {examples} training examples")
    return examples // config.batch_size


def fit_inputs(config: ExperimentConfig, splits: Splits, first_epoch: int = 0) -> dict[str, Any]:
    """The data arguments of `keras.Model.fit` for a run: `x`, `steps_per_epoch`, `validation_data` and `shuffle`.

    `x` is `data.train_dataset`'s endless batches from epoch `first_epoch` (0-based) on, so a resumed run sees the
    batches an uninterrupted one would; `validation_data` is the validation split in `evaluation_batch_size`
    batches, or None without `--validation_examples`.
    """
    steps = steps_per_epoch(config, splits)
    validation = (
        data.eval_dataset(*splits.validation, config.evaluation_batch_size) if config.validation_examples else None
    )
    train = data.train_dataset(
        *splits.train, config.batch_size, augment=augmentation(config), seed=config.seed, first_epoch=first_epoch
    )
    return {
        "x": train,
        "steps_per_epoch": steps,
        "validation_data": validation,
        "shuffle": False,
    }
