"""Grades a finished run on its own training images, as `--train_eval_examples` would have: which regime it is in.

    python -m benchmarks.training_regime --run docs/results/cifar10_cpu_regime_grn_capacity/grn_seed0 \
        --model models/cifar10_cpu_regime_grn_capacity/grn_seed0.keras --data_dir ../shared/data/cifar10

For a run that did not record its regime. It loads the run's final classifier (`--model`, default the run's own
`model.keras`, which stays out of git; models/ holds the shipped ones) and the run's `config.json`, rebuilds its
training images (`run_data.load_splits`, as `trainers.fit` drew them with the run's seed) and writes
`training_regime.json` beside `metrics.json`: `final_metrics.training_regime` with `--train_eval_examples`
(default 2,000, the confirmatory replication's), i.e. clean and worst-of-10 accuracy (fractions) on that many
class-balanced training images, in inference mode, by the test's rule. The run's test accuracies are in its
`metrics.json`.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import json
from pathlib import Path

from benchmarks.common import cli
from benchmarks.common.publishing import TRAINING_REGIME_RECORD
from invariance_tf import data, files
from invariance_tf.experiment_config import ExperimentConfig
from invariance_tf.options import check, option


@dataclasses.dataclass(frozen=True)
class RegimeOptions:
    """The flags of `benchmarks.training_regime`."""

    run: str | None = option(None, "a finished trainers.fit run folder, with its config.json (required)")
    model: str | None = option(None, "the run's final classifier (.keras); None: <run>/model.keras")
    data_dir: str | None = option(None, "the run's ImageFolder copy; None: the data_dir of its config.json")
    train_eval_examples: int = option(2000, "training images graded, class-balanced, drawn with the run's seed")

    @property
    def model_file(self) -> Path:
        return Path(self.model) if self.model is not None else Path(self.run) / "model.keras"

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag, then checks the run's data can be loaded."""
        cli.check_required(self, "run")
        check(
            self,
            [
                ("run", (Path(self.run) / "config.json").is_file(), "must be a trainers.fit run folder (config.json)"),
                ("model", self.model is None or self.model_file.is_file(), "must be a .keras file"),
                ("run", self.model is not None or self.model_file.is_file(), "has no model.keras: give --model"),
                ("train_eval_examples", self.train_eval_examples >= 1, "must be >= 1"),
            ],
        )
        config = run_config(self)
        data.validate_source(config.dataset, config.data_root)

    def command(self) -> str:
        """The command line that writes this record."""
        flags = {name: getattr(self, name) for name in ("run", "model", "data_dir", "train_eval_examples")}
        return "python -m benchmarks.training_regime " + " ".join(
            f"--{name}={value}" for name, value in flags.items() if value is not None
        )


def run_config(options: RegimeOptions) -> ExperimentConfig:
    """The run's config with the flags' data_dir and train_eval_examples."""
    config = ExperimentConfig.from_json(json.loads((Path(options.run) / "config.json").read_text()))
    changes = {"train_eval_examples": options.train_eval_examples}
    if options.data_dir is not None:
        changes["data_dir"] = options.data_dir
    return dataclasses.replace(config, **changes)


def main(options: RegimeOptions) -> None:
    from invariance_tf import model_files
    from invariance_tf.evaluation import final_metrics
    from invariance_tf.run_data import load_splits

    config = run_config(options)
    model = model_files.load_keras(options.model_file)
    record = {
        "command": options.command(),
        **final_metrics.training_regime(model, *load_splits(config).train, config),
    }
    files.write_text(Path(options.run) / TRAINING_REGIME_RECORD, json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    cli.run(RegimeOptions, main)
