"""The fine-tuning recipe, chosen on a validation split held out of the training set (issue 37, item 2).

A std pre-training run (the CPU scale's std row, `finetune.std_config`) holds out `--validation_examples` training
images (5,000 by default) and trains on the others; each candidate of `CANDIDATES` fine-tunes it (`--init_model`)
with its row's flagfile at CPU scale for its epochs and one-cycle peak learning rate (`finetune.row_config`), holding
out the same images (`run_data.load_splits` draws them from the whole training split with the seed and the count
only) and grading worst-of-10 accuracy on them after its last epoch (`--eval_every` = epochs, `--eval_k=10`).
After it trains, its model is graded with the grid attack on `VALIDATION_GRID_EXAMPLES` of the held-out images
(`--validation_grid_examples`, 500: a class-balanced draw with the seed, as `tuning`'s grid objective draws them;
recorded in the run's `validation_grid.json`).

The rule, fixed before any run:

1. A candidate is *within budget* if its projected training minutes, the std pre-training's plus its own, each the
   fastest epoch's time x epochs (`finetune.row`'s `fastest_total_minutes`: what a quiet machine takes), are at
   most `BUDGET_MINUTES` (30).
2. Among the candidates within budget whose validation clean accuracy is at least `finetune.TARGET`'s (80 %),
   the one with the highest validation grid accuracy is chosen; ties go to the higher validation clean accuracy,
   then to the fewer minutes, then to the earlier candidate of `CANDIDATES`.
3. If none qualifies, the one within budget with the highest validation clean accuracy is chosen (ties: higher
   validation grid accuracy, fewer minutes, earlier candidate), and the selection says "target not met on
   validation". If no candidate is within budget, none is chosen.

`<out>/selection.json` holds every candidate's validation numbers and minutes, the rule and the choice; the
selection never reads a test number. The chosen recipe's test numbers are then read from its own run's
metrics.json (every run grades the test images at the end, as `finetune`'s runs do: clean accuracy on all 10,000,
grid accuracy on 2,000) into `<out>/chosen_test.json`, reported once: the run as chosen, trained on the training
images left after the hold-out (45,000), not retrained on all of them. A rerun skips finished runs and resumes an
interrupted one.

    python -m benchmarks.finetune_recipe --out docs/results/cifar10_finetune_recipe --data_dir ../shared/data/cifar10
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from benchmarks import finetune
from benchmarks.common import cli, runs
from invariance_tf import callbacks, data, evaluation, files, run_data
from invariance_tf.experiment_config import ExperimentConfig
from invariance_tf.options import check, is_count, option
from invariance_tf.resume import EPOCH_LOGS

# name -> (row, fine-tuning epochs, peak learning rate of its one-cycle): the fixed candidates. The first six were
# sized on docs/results/cifar10_finetune's epoch times (A.T.+L2 fine-tuning: 7.6 min per epoch, a shared machine);
# the lower peak learning rate asks whether keeping more of std's clean accuracy buys the 80 % the target needs
# (fine-tuning at 0.1 lost 4.5 points there). The last two were added on 2026-12-07 once this benchmark's own
# quiet std run (5.5 min) and A.T.+L2's first epoch (3.5 min) showed the budget allows more epochs, before any
# candidate had finished (the one number seen: at_l2_e2's validation clean accuracy after its first epoch, 74.9 %).
CANDIDATES: dict[str, tuple[str, int, float]] = {
    "at_l2_e2": ("at_l2", 2, 0.1),
    "at_l2_e2_lr0.03": ("at_l2", 2, 0.03),
    "at_e3": ("at", 3, 0.1),
    "at_e3_lr0.03": ("at", 3, 0.03),
    "da_kl_e4": ("da_kl", 4, 0.1),
    "da_kl_e4_lr0.03": ("da_kl", 4, 0.03),
    "at_l2_e4": ("at_l2", 4, 0.1),
    "at_l2_e6": ("at_l2", 6, 0.1),
}
BUDGET_MINUTES = finetune.BUDGET_MINUTES
VALIDATION_EXAMPLES = 5000
VALIDATION_GRID_EXAMPLES = 500
VALIDATION_GRID = "validation_grid.json"
EVAL_K = 10
WORST_OF_K = f"val_worst_of_{EVAL_K}_accuracy"
CLEAN = "val_acc_nat"
NOT_MET = "target not met on validation"
# A candidate's projected training minutes, std pre-training included (fastest epoch x epochs).
MINUTES = "fastest_total_minutes"


@dataclasses.dataclass(frozen=True)
class RecipeOptions:
    """The flags of `benchmarks.finetune_recipe`."""

    out: str | None = option(None, "folder of the runs, selection.json and chosen_test.json (required)")
    data_dir: str | None = option(None, "local CIFAR-10 ImageFolder copy; default: TFDS")
    seed: int = option(0, "seed of every run (initialisation, data order and the held-out split)")
    validation_examples: int = option(VALIDATION_EXAMPLES, "training images held out of every run, graded on")
    validation_grid_examples: int = option(
        VALIDATION_GRID_EXAMPLES, "held-out images the grid attack grades each candidate on (a class-balanced draw)"
    )

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        cli.check_required(self, "out")
        check(
            self,
            [
                ("validation_examples", is_count(self.validation_examples), "must be >= 1"),
                (
                    "validation_grid_examples",
                    is_count(self.validation_grid_examples)
                    and self.validation_grid_examples <= self.validation_examples,
                    f"must be in [1, --validation_examples={self.validation_examples}]",
                ),
            ],
        )


def std_config(options: RecipeOptions) -> ExperimentConfig:
    """The pre-training run: the CPU scale's std row, holding out the candidates' validation images."""
    config = finetune.std_config(Path(options.out), options.data_dir, options.seed)
    return dataclasses.replace(config, validation_examples=options.validation_examples)


def candidate_config(name: str, std: ExperimentConfig, options: RecipeOptions) -> ExperimentConfig:
    """`CANDIDATES[name]` fine-tuning `std`'s classifier: its held-out images, graded after the last epoch."""
    row, epochs, lr = CANDIDATES[name]
    out = Path(options.out) / f"{name}_seed{options.seed}"
    config = finetune.row_config(row, epochs, std, out, options.data_dir, options.seed, lr)
    return dataclasses.replace(config, validation_examples=std.validation_examples, eval_every=epochs, eval_k=EVAL_K)


def validation_grid_accuracy(config: ExperimentConfig, examples: int) -> float:
    """The finished run's grid accuracy on `examples` of its held-out images, read back from validation_grid.json.

    Graded once (as `callbacks.GridValidation` grades: the run's limits and evaluation resampling) and recorded;
    a record of another number of images is graded anew.
    """
    path = Path(config.output_dir) / VALIDATION_GRID
    if path.is_file() and (record := json.loads(path.read_text()))["examples"] == examples:
        return record["accuracy"]
    images, labels = run_data.load_splits(config).validation
    chosen = data.at_most(labels, examples, config.seed)
    accuracy = callbacks.grid_accuracy(
        evaluation.load_classifier(config.output_dir),
        images[chosen],
        labels[chosen],
        config.limits,
        config.evaluation_batch_size,
        config.eval_resampling,
    )
    files.write_text(path, json.dumps({"examples": examples, "accuracy": accuracy}, indent=2) + "\n")
    return accuracy


def candidate_scores(
    name: str, config: ExperimentConfig, metrics: dict, std_minutes: tuple[float, float], grid: float
) -> dict:
    """A candidate's validation accuracies (fractions) and training minutes, std pre-training included.

    Of `metrics` (its metrics.json) only the epoch times are read, never a test number.
    """
    row, epochs, _ = CANDIDATES[name]
    logs = callbacks.EpochLogs(Path(config.output_dir) / EPOCH_LOGS).last()
    summed, fastest = finetune.minutes(metrics)
    return {
        "name": name,
        "method": finetune.ROW_NAMES[row],
        "epochs": epochs,
        "lr": config.lr,
        "val_clean_accuracy": logs[CLEAN],
        "val_worst_of_10_accuracy": logs[WORST_OF_K],
        "val_grid_accuracy": grid,
        "total_minutes": summed + std_minutes[0],
        "fastest_total_minutes": fastest + std_minutes[1],
    }


def choose(candidates: Sequence[dict], budget_minutes: float = BUDGET_MINUTES) -> dict:
    """The rule of the module docstring applied to `candidate_scores` entries: `{"chosen", "target_met", "reason"}`.

    `chosen` is a candidate's name, or None when none is within `budget_minutes`.
    """
    within = [entry for entry in candidates if entry[MINUTES] <= budget_minutes]
    qualifying = [entry for entry in within if entry["val_clean_accuracy"] >= finetune.TARGET["clean_accuracy"]]
    if qualifying:
        best = max(qualifying, key=lambda e: (e["val_grid_accuracy"], e["val_clean_accuracy"], -e[MINUTES]))
        return {"chosen": best["name"], "target_met": True, "reason": "highest validation grid accuracy"}
    if within:
        best = max(within, key=lambda e: (e["val_clean_accuracy"], e["val_grid_accuracy"], -e[MINUTES]))
        return {"chosen": best["name"], "target_met": False, "reason": f"{NOT_MET}: highest validation clean accuracy"}
    return {"chosen": None, "target_met": False, "reason": f"no candidate within {budget_minutes:g} minutes"}


def rule_text(options: RecipeOptions) -> str:
    """The rule as selection.json records it."""
    return (
        f"within {BUDGET_MINUTES:g} projected training minutes (std pre-training included, fastest epoch x epochs) "
        f"and >= {100 * finetune.TARGET['clean_accuracy']:g} % validation clean accuracy: the highest validation grid "
        f"accuracy on {options.validation_grid_examples} of the {options.validation_examples} held-out training "
        f"images (ties: clean, fewer minutes, list order); if none: the highest validation clean accuracy within "
        f"budget, '{NOT_MET}'"
    )


def chosen_test_record(name: str, metrics: dict, scores: dict) -> dict:
    """The chosen recipe's test numbers, from its run's metrics.json, with its projected minutes."""
    return {
        "chosen": name,
        "clean_accuracy": metrics["clean_accuracy"],
        "grid_accuracy": metrics["grid_accuracy"],
        "fastest_total_minutes": scores["fastest_total_minutes"],
        "total_minutes": scores["total_minutes"],
    }


def main(options: RecipeOptions) -> None:
    """The command: trains (or reads back) std and every candidate, chooses, then reads the choice's test numbers."""
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    std = std_config(options)
    configs = {name: candidate_config(name, std, options) for name in CANDIDATES}
    runs.check_finished_runs_match([std, *configs.values()])
    std_minutes = finetune.minutes(runs.train_or_load(std))
    candidates, metrics = [], {}
    for name, config in configs.items():
        metrics[name] = runs.train_or_load(config)
        grid = validation_grid_accuracy(config, options.validation_grid_examples)
        candidates.append(candidate_scores(name, config, metrics[name], std_minutes, grid))
    choice = choose(candidates)
    selection = {"rule": rule_text(options), "candidates": candidates, **choice}
    files.write_text(out / "selection.json", json.dumps(selection, indent=2) + "\n")
    print(f"chosen: {choice['chosen']} ({choice['reason']})", flush=True)
    if choice["chosen"] is not None:
        scores = next(entry for entry in candidates if entry["name"] == choice["chosen"])
        record = chosen_test_record(choice["chosen"], metrics[choice["chosen"]], scores)
        files.write_text(out / "chosen_test.json", json.dumps(record, indent=2) + "\n")
        print(json.dumps(record, indent=2), flush=True)


if __name__ == "__main__":
    cli.run(RecipeOptions, main)
