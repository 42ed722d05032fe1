r"""Search λ and h with keras-tuner for a trainer config.

    python -m trainers.search --flagfile configs/cifar10_at_kl.cfg --tuner=bayesian --max_trials=20 \
        --search_dir=runs/search [--flag=value ...]

Every `trainers.fit` flag applies (flags after the flagfile override it);
`--validation_examples` defaults to 500 here. Rerunning the same command
resumes the search. Writes keras-tuner's state, best.json, trials.csv and
lambda_vs_robustness.png into `--search_dir`. With `KERASTUNER_TUNER_ID`,
`KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT` set, runs as the chief
(tuner id containing "chief") or a worker of a distributed search.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from invariance_tf import flags as cli_flags
from invariance_tf import tuning
from invariance_tf.experiment_config import ExperimentConfig

cli_flags.define_flags(ExperimentConfig)
cli_flags.define_flags(tuning.SearchOptions)
flags.adopt_module_key_flags(cli_flags)
flags.FLAGS.set_default("validation_examples", tuning.DEFAULT_VALIDATION_EXAMPLES)


def main(argv: list[str]) -> None:
    """The command: runs the search the flags describe; an error exits with one line."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        best = tuning.search(
            cli_flags.from_flags(ExperimentConfig), cli_flags.from_flags(tuning.SearchOptions), cli_flags.command_line
        )
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    if best:
        print(json.dumps(best, indent=2))
    else:
        print(f"{os.environ['KERASTUNER_TUNER_ID']}: no trials left; the chief writes the results")


if __name__ == "__main__":
    app.run(main)
