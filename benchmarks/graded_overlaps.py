"""How many test (and training) images the committed records share: the record behind RESULTS.md's overlap claims.

    python -m benchmarks.graded_overlaps --data_dir ../shared/data/cifar10 \
        --out docs/results/graded_overlaps.json

The records before 2026-12-06 store no image ids, so each run's graded test images are rebuilt from its
config.json (`confirmation_set.run_graded`: its test subset and grid subset, as `final_metrics.robust_metrics` draws
them); the labels come from the ImageFolder's listing, in loader order, without decoding an image. It also rebuilds
the keras-tuner λ search's 500 validation images (held out of 2,500 training images drawn with seed 0) and counts
how many of them the later 2,000-image runs of that regime train on.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import json
from pathlib import Path

import numpy as np

from benchmarks.common import cli
from benchmarks.confirmation_set import run_graded
from invariance_tf import data, files
from invariance_tf.experiment_config import ExperimentConfig
from invariance_tf.options import option

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
# (a, b): run folders under docs/results whose graded test images are compared.
PAIRS = (
    ("cifar10_cpu_regime/at_seed0", "cifar10_cpu_regime/at_seed1"),
    ("cifar10_ablation_mini/at__base_seed0", "cifar10_cpu_regime/at_seed0"),
    ("cifar10_ablation_mini/at__base_seed1", "cifar10_cpu_regime/at_seed1"),
    ("cifar10_ablation_mini/at__base_seed0", "cifar10_ablation_mini/at__base_seed1"),
    ("cifar10_cpu/at_seed0", "cifar10_cpu_regime/at_seed0"),
    ("cifar10_cpu_24ep/at_seed0", "cifar10_cpu_regime/at_seed0"),
    ("cifar10_finetune/da_kl_e2_seed0", "cifar10_cpu_regime/at_seed0"),
    ("cifar10_cost_regime/at_k10_seed0", "cifar10_ablation_mini/at__base_seed0"),
)
LAMBDA_SEARCH = {"train_examples": 2000, "validation_examples": 500, "seed": 0}
LATER_RUN = "cifar10_cost_regime/at_kl_k10_seed0"


@dataclasses.dataclass(frozen=True)
class OverlapOptions:
    """The flags of `benchmarks.graded_overlaps`."""

    data_dir: str | None = option(None, "local CIFAR-10 ImageFolder copy (required)")
    out: str | None = option(None, "JSON file to write (required)")

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        cli.check_required(self, "data_dir", "out")


def labels_of(data_dir: str, split: str) -> np.ndarray:
    """The split's labels in loader order, from the image names (`test/cat/0042.jpg`), without decoding."""
    names = data.load_names("cifar10", data_dir, split)
    classes = data.dataset_info("cifar10").class_names
    return np.array([classes.index(name.split("/")[1]) for name in names])


def config_of(run: str) -> ExperimentConfig:
    return ExperimentConfig.from_json(json.loads((RESULTS / run / "config.json").read_text()))


def lambda_validation(train_labels: np.ndarray) -> set[int]:
    """Training-split positions of the λ search's validation images (`experiment`'s split of its 2,500)."""
    total = LAMBDA_SEARCH["train_examples"] + LAMBDA_SEARCH["validation_examples"]
    loaded = data.subset_indices(train_labels, total, LAMBDA_SEARCH["seed"])
    held = data.balanced_subset(train_labels[loaded], LAMBDA_SEARCH["validation_examples"], LAMBDA_SEARCH["seed"])
    return {int(i) for i in loaded[held]}


def main(options: OverlapOptions) -> None:
    test_labels = labels_of(options.data_dir, "test")
    graded = {run: run_graded(config_of(run), test_labels) for pair in PAIRS for run in pair}
    later = config_of(LATER_RUN)
    train_labels = labels_of(options.data_dir, "train")
    trained = {int(i) for i in data.subset_indices(train_labels, later.train_examples, later.seed)}
    validation = lambda_validation(train_labels)
    record = {
        "command": "python -m benchmarks.graded_overlaps --data_dir ../shared/data/cifar10 "
        "--out docs/results/graded_overlaps.json",
        "test_images": [
            {
                "a": a,
                "b": b,
                "a_images": len(graded[a]),
                "b_images": len(graded[b]),
                "shared": len(graded[a] & graded[b]),
            }
            for a, b in PAIRS
        ],
        "lambda_search": {
            **LAMBDA_SEARCH,
            "later_run": LATER_RUN,
            "later_run_training_images": len(trained),
            "validation_images_trained_on_by_later_run": len(validation & trained),
        },
    }
    files.write_text(Path(options.out), json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    cli.run(OverlapOptions, main)
