r"""Search λ and h with keras-tuner for a trainer config.

    python -m tuning.search --flagfile configs/cifar10_at_kl.cfg --tuner=bayesian --max_trials=20 \
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

from invariance_tf import semimetrics, tuning
from trainers import flags as experiment_flags

DEFAULTS = tuning.SearchOptions()

experiment_flags.define_experiment_flags()
flags.adopt_module_key_flags(experiment_flags)
flags.FLAGS.set_default("validation_examples", tuning.DEFAULT_VALIDATION_EXAMPLES)
flags.DEFINE_string("tuner", DEFAULTS.tuner, f"search algorithm: {' | '.join(tuning.TUNERS)}")
flags.DEFINE_integer("max_trials", DEFAULTS.max_trials, "trials in all; rerun with a larger value to extend a search")
flags.DEFINE_string("search_dir", DEFAULTS.search_dir,
                    "keras-tuner's state and the results (empty = <--output_dir>_search)")
flags.DEFINE_float("lambda_min", DEFAULTS.lambda_min, "smallest λ > 0 of the log-uniform range")
flags.DEFINE_float("lambda_max", DEFAULTS.lambda_max, "largest λ of the log-uniform range")
flags.DEFINE_list("h_choices", list(DEFAULTS.h_choices),
                  f"semimetrics h to try, from {sorted(semimetrics.SEMIMETRICS)}; a semimetric "
                  "--adversary_objective follows h")
flags.DEFINE_bool("include_zero", DEFAULTS.include_zero,
                  "run λ = 0 (the unregularised baseline) as the first trial; λ = 0 is a candidate either way")
flags.DEFINE_string("objective", DEFAULTS.objective,
                    "what to maximise after the last epoch: worst_of_k (validation worst-of-<--eval_k> accuracy) "
                    "| grid (validation grid accuracy on --grid_validation_examples images)")
flags.DEFINE_integer("grid_validation_examples", DEFAULTS.grid_validation_examples,
                     "validation images of the grid objective")


def options_from_flags(values: flags.FlagValues = flags.FLAGS) -> tuning.SearchOptions:
    return tuning.SearchOptions(
        tuner=values.tuner, max_trials=values.max_trials, search_dir=values.search_dir,
        lambda_min=values.lambda_min, lambda_max=values.lambda_max, h_choices=tuple(values.h_choices),
        include_zero=values.include_zero, objective=values.objective,
        grid_validation_examples=values.grid_validation_examples)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        best = tuning.search(experiment_flags.config_from_flags(), options_from_flags(), experiment_flags.command_line)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    if best:
        print(json.dumps(best, indent=2))
    else:
        print(f"{os.environ['KERASTUNER_TUNER_ID']}: no trials left; the chief writes the results")


if __name__ == "__main__":
    app.run(main)
