"""Grades a finished run on its own training images, as `--train_eval_examples` would have: which regime it is in.

    python -m benchmarks.training_regime --run docs/results/cifar10_cpu_regime_grn_capacity/grn_seed0 \
        --data_dir ../shared/data/cifar10

For a run that did not record its regime. It loads the run's `model.keras` (its final weights) and `config.json`,
rebuilds its training images (`run_data.load_splits`, as `trainers.fit` drew them with the run's seed) and writes
`training_regime.json` beside `metrics.json`: `final_metrics.training_regime` with `--train_eval_examples`
(default 2,000, the confirmatory replication's), i.e. clean and worst-of-10 accuracy on that many class-balanced
training images, in inference mode, by the test's rule; the run's test accuracies come from its `metrics.json`.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import json
from pathlib import Path

from benchmarks.common import cli
from invariance_tf import files
from invariance_tf.experiment_config import ExperimentConfig
from invariance_tf.options import check, option

RECORD = "training_regime.json"


@dataclasses.dataclass(frozen=True)
class RegimeOptions:
    """The flags of `benchmarks.training_regime`."""

    run: str | None = option(None, "a finished trainers.fit run folder, with model.keras and config.json (required)")
    data_dir: str | None = option(None, "the run's ImageFolder copy; None: the data_dir of its config.json")
    train_eval_examples: int = option(2000, "training images graded, class-balanced, drawn with the run's seed")

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        cli.check_required(self, "run")
        run = Path(self.run)
        check(
            self,
            [
                ("train_eval_examples", self.train_eval_examples >= 1, "must be >= 1"),
                ("run", (run / "model.keras").is_file(), "must be a finished run's folder; it has no model.keras"),
                ("run", (run / "config.json").is_file(), "must be a trainers.fit run's folder; it has no config.json"),
            ],
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
    model = model_files.load_keras(Path(options.run) / "model.keras")
    record = {
        "command": f"python -m benchmarks.training_regime --run {options.run} "
        f"--train_eval_examples {options.train_eval_examples}",
        **final_metrics.training_regime(model, *load_splits(config).train, config),
    }
    files.write_text(Path(options.run) / RECORD, json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    cli.run(RegimeOptions, main)
