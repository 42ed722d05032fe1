"""Train a model with invariance-inducing regularisation.

    python -m trainers.fit --flagfile configs/cifar10_at_kl.cfg [--flag=value ...]

Flags given after the flagfile override it; `--help` lists them.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

from invariance_tf import experiment, experiment_config
from invariance_tf import flags as cli_flags
from invariance_tf.callbacks import TrainingDivergedError

cli_flags.define_flags(experiment_config.ExperimentConfig)
flags.adopt_module_key_flags(cli_flags)


def main(argv: list[str]) -> None:
    """The command: trains the run the flags describe; an error exits with one line."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        metrics = experiment.run(cli_flags.from_flags(experiment_config.ExperimentConfig))
    except (ValueError, FileNotFoundError, FileExistsError, TrainingDivergedError) as error:
        sys.exit(f"error: {error}")
    if metrics:
        print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    app.run(main)
