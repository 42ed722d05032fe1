"""The fair G-row's learning rate and weight decay, chosen on a validation split held out of the training set.

For each head asked for (default: Cohen & Welling's flatten head only, whose choice the invariant head takes too:
each candidate costs about 8x a D.A. run's MACs, `docs/gresnet.md`) and each (lr, weight decay) of
`protocols.SELECTION_GRID`, one run of the fair G-row's protocol (`protocols.SCALES["cpu_regime_grn_<head>"]`:
G-ResNet-9 on p4m trained exactly like D.A. in the CPU regime) with `--validation_examples` images
(`protocols.SELECTION_VALIDATION_EXAMPLES`) held out of the training split, 25,000 others to train on, and
worst-of-10 accuracy on the held-out images after the last epoch (`--eval_every`). The choice per head is the
candidate with the highest validation worst-of-10 accuracy (ties: clean validation accuracy). Test images are never
used for it: each run still grades `--test_examples` of them at the end, as every run does, and the selection never
reads that. A rerun skips finished runs and resumes an interrupted one. `<out>/selection.json` holds every
candidate's validation accuracies and the choice.

    python -m benchmarks.g_row_selection --out docs/results/cifar10_grn_selection --data_dir ../shared/data/cifar10
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

from benchmarks.common import cli, protocols, runs
from invariance_tf import callbacks, files
from invariance_tf.experiment_config import ExperimentConfig
from invariance_tf.options import check, option
from invariance_tf.resume import EPOCH_LOGS

ROBUST = "val_worst_of_10_accuracy"
CLEAN = "val_acc_nat"
# The runs' own test grading, which the selection ignores, kept small.
SELECTION_TEST_EXAMPLES = 100


@dataclasses.dataclass(frozen=True)
class SelectionOptions:
    """The flags of `benchmarks.g_row_selection`."""

    out: str | None = option(None, "folder of the runs and selection.json (required)")
    data_dir: str | None = option(None, "local ImageFolder copy of CIFAR-10; default: TFDS")
    heads: tuple[str, ...] = option(
        (protocols.SELECTION_HEAD,), "G-network heads to choose for (the others take the first one's choice)"
    )
    seed: int = option(0, "seed of every selection run (initialisation, data order and the held-out split)")

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        check(
            self,
            [
                ("out", bool(self.out), "is required"),
                ("heads", set(self.heads) <= set(protocols.G_HEAD_FLAGS), f"valid: {list(protocols.G_HEAD_FLAGS)}"),
            ],
        )


def candidate_config(head: str, lr: float, weight_decay: float, options: SelectionOptions) -> ExperimentConfig:
    """The fair G-row's config with `lr` and `weight_decay`, a held-out validation split and a final validation."""
    scale = f"cpu_regime_grn_{head}"
    out = Path(options.out)
    config = protocols.scale_config("cifar10", "grn", scale, options.seed, out, options.data_dir)
    return dataclasses.replace(
        config,
        lr=lr,
        weight_decay=weight_decay,
        validation_examples=protocols.SELECTION_VALIDATION_EXAMPLES,
        eval_every=config.epochs,
        eval_k=10,
        test_examples=SELECTION_TEST_EXAMPLES,
        grid_examples=0,
        output_dir=str(out / f"{head}_lr{lr:g}_wd{weight_decay:g}_seed{options.seed}"),
    )


def validation_scores(config: ExperimentConfig) -> dict:
    """The finished run's validation accuracies after its last epoch, read from its epoch logs."""
    logs = callbacks.EpochLogs(Path(config.output_dir) / EPOCH_LOGS).last()
    return {"lr": config.lr, "weight_decay": config.weight_decay, "robust": logs[ROBUST], "clean": logs[CLEAN]}


def main(options: SelectionOptions) -> None:
    selection = {
        "rule": f"highest validation worst-of-10 accuracy ({ROBUST}), ties by clean ({CLEAN}), on "
        f"{protocols.SELECTION_VALIDATION_EXAMPLES} images held out of the training split",
        "grid": protocols.SELECTION_GRID,
        "heads": {},
    }
    for head in options.heads:
        candidates = []
        for lr, weight_decay in itertools.product(*protocols.SELECTION_GRID.values()):
            config = candidate_config(head, lr, weight_decay, options)
            runs.train_or_load(config)
            candidates.append(validation_scores(config))
        best = max(candidates, key=lambda scores: (scores["robust"], scores["clean"]))
        selection["heads"][head] = {"candidates": candidates, "chosen": {k: best[k] for k in ("lr", "weight_decay")}}
        files.write_text(Path(options.out) / "selection.json", json.dumps(selection, indent=2) + "\n")
        print(f"{head}: lr {best['lr']:g}, weight decay {best['weight_decay']:g}", flush=True)


if __name__ == "__main__":
    cli.run(SelectionOptions, main)
