"""The confirmation set: test images that no committed record has graded, for a pre-registered replication.

    python -m benchmarks.confirmation_set --data_dir ../shared/data/cifar10 \
        --out docs/results/cifar10_confirmation/confirmation_set.json

The rule (docs/RESULTS.md, "Confirmatory replication"), fixed before any run that grades the set:

1. The graded images `graded_by_records` finds: for every run folder under docs/results with a config.json
   (`run_data.load_splits` and `run_data.grid_choice` rebuild its test subset and its grid images from its
   flags, or its metrics.json names them), its grid images and, when it graded a subset, that subset; every
   image an `examples.csv` of `trainers.evaluate` names (`report_graded`); the test images of the mini scale
   (its `test_examples`) for each seed of docs/results/cifar10_mini.json; and, for safety, the test and grid
   subsets that every CIFAR-10 flagfile in configs/ asks for, at seeds 0, 1 and 2. Clean and worst-of-10
   accuracy on the whole test set (10,000 images) graded every image once, so they do not count: no record
   graded these images under the grid.
2. The candidates: every other test image, in loader order.
3. The confirmation set: `data.balanced_subset` of the candidates' labels, `--count` images (300 per class for
   3,000), drawn with `--seed` (2).

The file records the set as `report.image_set` (positions in the whole test split in loader order, their
sha256) with the images' ImageFolder names, the rule and the excluded count, for `--grid_subset`.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

from benchmarks.common import cli, protocols
from invariance_tf import data, files, report, run_data
from invariance_tf.experiment_config import ExperimentConfig
from invariance_tf.options import check, option

RESULTS = protocols.REPO_ROOT / "docs" / "results"
FLAGFILE_SEEDS = (0, 1, 2)
RULE = (
    "class-balanced (data.balanced_subset, seed {seed}) {count} of the CIFAR-10 test images that no committed "
    "record graded under the grid or as part of a test subset (benchmarks/confirmation_set.py)"
)


@dataclasses.dataclass(frozen=True)
class ConfirmationOptions:
    """The flags of `benchmarks.confirmation_set`."""

    data_dir: str | None = option(None, "local CIFAR-10 ImageFolder copy <dir>/test/<class>/<image> (required)")
    out: str | None = option(None, "the JSON file to write (required)")
    count: int = option(3000, "images in the set, as evenly spread over the classes as possible")
    seed: int = option(2, "seed of the draw among the candidates")

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        cli.check_required(self, "data_dir", "out")
        check(self, [("count", self.count >= 1, "must be >= 1"), ("seed", self.seed >= 0, "must be >= 0")])


def run_graded(config: ExperimentConfig, labels: np.ndarray, metrics: dict | None = None) -> set[int]:
    """Positions of the test images a run graded on a subset or under the grid, from its record or its flags."""
    if metrics and "grid_images" in metrics:
        graded = {int(i) for i in report.image_positions(metrics["grid_images"])}
        tested = metrics["test_images"]
        return graded | (set() if tested["indices"] == "all" else {int(i) for i in report.image_positions(tested)})
    positions = data.subset_indices(labels, config.test_subset_size, config.seed)
    if config.grid_subset:
        config = dataclasses.replace(config, grid_subset=str(protocols.REPO_ROOT / config.grid_subset))
    grid = positions[run_data.grid_choice(labels[positions], positions, config)]
    return {int(i) for i in grid} | (set() if config.test_examples == 0 else {int(i) for i in positions})


def report_graded(path: Path, labels: np.ndarray, position_of: dict[str, int]) -> set[int]:
    """Positions of the test images a `trainers.evaluate` report (examples.csv) graded.

    Its `image` column names them; a report from before that column graded `trainers.evaluate`'s subset of as
    many images with its default seed 0, which its labels must match.
    """
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    if rows and "image" in rows[0]:
        return {position_of[row["image"]] for row in rows}
    positions = data.subset_indices(labels, len(rows), 0)
    if [int(row["label"]) for row in rows] != labels[positions].tolist():
        raise ValueError(f"{path}: its labels are not those of the {len(rows)}-image subset of seed 0")
    return {int(i) for i in positions}


def graded_by_records(labels: np.ndarray, names: list[str], root: Path = RESULTS) -> dict[str, set[int]]:
    """Every source of graded test images under `root` (and configs/), each with the positions it graded."""
    sources = {}
    for path in sorted(root.rglob("config.json")):
        config = ExperimentConfig.from_json(json.loads(path.read_text()))
        if config.dataset == "cifar10":
            metrics_path = path.parent / "metrics.json"
            metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
            sources[str(path.parent.relative_to(protocols.REPO_ROOT))] = run_graded(config, labels, metrics)
    position_of = {name: i for i, name in enumerate(names)}
    for path in sorted(root.rglob("examples.csv")):
        sources[str(path.relative_to(protocols.REPO_ROOT))] = report_graded(path, labels, position_of)
    mini = root / "cifar10_mini.json"
    if mini.is_file():
        protocol = json.loads(mini.read_text())["protocol"]
        for seed in sorted({seed for seeds in protocol["seeds"].values() for seed in seeds}):
            subset = data.subset_indices(labels, protocol["test_examples"], seed)
            sources[f"{mini.relative_to(protocols.REPO_ROOT)} seed {seed}"] = {int(i) for i in subset}
    for flagfile in sorted(protocols.CONFIGS.glob("cifar10_*.cfg")) + [protocols.CONFIGS / "quickstart.cfg"]:
        for seed in FLAGFILE_SEEDS:
            config = protocols.config_from_flagfile(flagfile, f"--seed={seed}")
            if config.test_examples or config.grid_examples:
                sources[f"{flagfile.relative_to(protocols.REPO_ROOT)} seed {seed}"] = run_graded(config, labels)
    return sources


def confirmation_set(labels: np.ndarray, excluded: set[int], count: int, seed: int) -> np.ndarray:
    """Sorted positions of `count` class-balanced test images outside `excluded`, drawn with `seed`."""
    candidates = np.setdiff1d(np.arange(len(labels)), np.fromiter(excluded, np.int64, len(excluded)))
    return candidates[data.balanced_subset(labels[candidates], count, seed)]


def main(options: ConfirmationOptions) -> None:
    """The command: writes the confirmation set's JSON file and prints its size and the sources it avoids."""
    _, labels, names, info = data.load_with_names("cifar10", options.data_dir, "test")
    sources = graded_by_records(labels, names)
    excluded = set().union(*sources.values())
    chosen = confirmation_set(labels, excluded, options.count, options.seed)
    record = {
        **report.image_set(chosen, len(labels)),
        "rule": RULE.format(seed=options.seed, count=options.count),
        "excluded": len(excluded),
        "candidates": len(labels) - len(excluded),
        "per_class": {name: int((labels[chosen] == i).sum()) for i, name in enumerate(info.class_names)},
        "sources": {source: len(positions) for source, positions in sources.items()},
        "names": [names[i] for i in chosen],
    }
    files.write_text(Path(options.out), json.dumps(record, indent=1) + "\n")
    print(
        f"{len(chosen)} images ({record['per_class']}) drawn from {record['candidates']} never graded; "
        f"{len(excluded)} excluded from {len(sources)} sources; written to {options.out}"
    )


if __name__ == "__main__":
    cli.run(ConfirmationOptions, main)
