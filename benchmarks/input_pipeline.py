"""The training input pipeline alone (`data.train_dataset`) against the step's consumption, in images per second.

    python -m benchmarks.input_pipeline [--batches 300] [--step_record docs/results/xla_step.json]
        [--out docs/results/input_pipeline.json]

Loads the CIFAR-10 training split as `trainers.fit` does (`data.load`: the JPEG/PNG decode runs once, then the
decoded uint8 arrays are cached on disk and held in memory), then times `--batches` batches of 64 originals of
`data.train_dataset` with the paper's CIFAR augmentation ("crop_flip") and the reference's ("flip"), after a
warm-up. The fastest step of `--step_record` (`benchmarks.xla_step`'s JSON) consumes 64 originals per step; the
goal is a pipeline >= 5x that. SVHN is not on this machine, so only CIFAR is measured (its images have the same
shape and the pipeline the same cost per image).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import json
import time
from pathlib import Path

from benchmarks.common import cli, timing
from invariance_tf import data
from invariance_tf.options import check, option

BATCH_SIZE = 64
GOAL = 5.0


@dataclasses.dataclass(frozen=True)
class InputPipelineOptions:
    """The flags of `benchmarks.input_pipeline`."""

    batches: int = option(300, "timed batches per augmentation")
    step_record: str = option("docs/results/xla_step.json", "benchmarks.xla_step's JSON, for the fastest step")
    out: str = option("", "JSON file to write the measurements to (empty: print only)")
    data_dir: str = option(str(timing.DATA_DIR), "CIFAR-10 ImageFolder root")

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        check(self, [("batches", self.batches >= 1, "must be >= 1")])


def images_per_second(images, labels, augment: str, batches: int, warmup: int = 20) -> float:
    """Originals per second that `data.train_dataset` yields with `augment`, after `warmup` untimed batches."""
    iterator = iter(data.train_dataset(images, labels, BATCH_SIZE, augment, seed=0))
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * BATCH_SIZE / (time.perf_counter() - start)


def fastest_step(step_record: Path) -> dict:
    """The fastest row of `benchmarks.xla_step`'s record and the originals per second it consumes."""
    record = json.loads(step_record.read_text())
    row = min(record["rows"], key=lambda r: r["step_ms"])
    return {**row, "batch_size": record["batch_size"], "images_per_s": record["batch_size"] / (row["step_ms"] / 1e3)}


def main(options: InputPipelineOptions) -> None:
    clock = time.perf_counter()
    images, labels, _ = data.load("cifar10", options.data_dir, "train")
    load_seconds = time.perf_counter() - clock
    step = fastest_step(Path(options.step_record))
    rows = {}
    for augment in ("crop_flip", "flip"):
        rate = images_per_second(images, labels, augment, options.batches)
        rows[augment] = {"images_per_s": round(rate), "over_fastest_step": round(rate / step["images_per_s"], 1)}
        print(f"{augment}: {rate:,.0f} images/s, {rate / step['images_per_s']:.1f}x the fastest step (goal {GOAL}x)")
    record = {
        "command": "python -m benchmarks.input_pipeline "
        f"--batches={options.batches} --step_record={options.step_record} --out={options.out}",
        "dataset": "cifar10 (SVHN is not available on this machine)",
        "train_images": len(images),
        "load_seconds": round(load_seconds, 1),
        "batch_size": BATCH_SIZE,
        "fastest_step": {key: step[key] for key in ("precision", "step", "xla", "step_ms")}
        | {"images_per_s": round(step["images_per_s"], 1)},
        "goal_over_fastest_step": GOAL,
        "pipelines": rows,
        "load_average_at_end": timing.load_average(),
        "note": "machine shared with a training run: the pipeline competed with it for the 2 cores",
    }
    print(json.dumps(record, indent=1))
    if options.out:
        Path(options.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    cli.run(InputPipelineOptions, main)
