"""The paper's table (Yang, Wang, Heinze-Deml, NeurIPS 2019) reproduced at a chosen scale, with its plots.

    python -m benchmarks.reproduce --dataset cifar10 --scale mini --out results/cifar10_mini \
        --data_dir ../shared/data/cifar10 [--seeds 0,1] [--rows std,da,...] [--publish]
    python -m benchmarks.reproduce --dataset cifar10 --scale cpu --out docs/results/cifar10_cpu \
        --data_dir ../shared/data/cifar10 --commit
    python -m benchmarks.reproduce --dataset cifar10 --scale cpu --epochs 24 --rows at,at_kl \
        --out docs/results/cifar10_cpu_24ep --data_dir ../shared/data/cifar10 --commit

Each row trains from the paper's flagfile `configs/<dataset>_<row>.cfg` with the
scale's flags (`benchmarks.common.protocols`) appended, exactly as `trainers.fit --flagfile=<cfg> <overrides>`
would, through `experiment.run`, into `<out>/<row>_seed<k>/`, seed by seed (every
row once before any second seed). A rerun skips runs whose metrics.json exists and
resumes interrupted ones from their last finished epoch. After every run it writes:

- `<out>/results.json`: per row the mean over its seeds of the clean, worst-of-10
  and grid accuracy (fractions) and of the training seconds, the values of each
  seed under "seeds", and the protocol;
- `<out>/table.md`: our numbers beside the paper's full-scale ones;
- `<out>/per_angle.png`: per row (its first seed's model), the accuracy at each of
  the 31 grid angles averaged over the 25 translations, from a brute-force grid on
  `landscape_examples` evenly spaced test images of the run (every class) (kept in
  `<run>/landscape.json`; the run also gets `robustness_landscape.png`);
- with `--publish`, copies of results.json, table.md and per_angle.png in
  `docs/results/<dataset>_<scale>{.json,_table.md,_per_angle.png}`;
- with `--commit` (`--out` inside the checkout), a git commit of the table, the
  plot and each finished run's small records (metrics, config, epoch times,
  landscape), so finished rows are kept whenever the sitting ends; for the
  `confirm` scale also each run's classifier, as models/<out's name>/<run>.keras.

Scales:

- `mini`, for 2 CPU cores: ResNet-8 (`--resnet_n=1`), a class-balanced subset of
  10,000 training images, 6 epochs (learning rate / 10 after 3 and 4.5 epochs),
  the flagfiles' reference protocol otherwise (64 originals per step for every
  row, flips only, independent searches, the reference's resampling), 1,000 test
  images with the grid attack on all of them, landscapes on 200 evenly spaced
  ones. Rows std, D.A., D.A.+KL, A.T., A.T.+KL, A.T.+L2 with seed 0, and D.A.,
  D.A.+KL, A.T., A.T.+KL again with seed 1. G-ResNet44 is left out because it
  trains about 25x slower than ResNet-8 on CPU (`--rows` can still ask for it).
- `cpu`, hours on 2 CPU cores: every row on the whole training split with the
  CPU recipe (`protocols.CPU_RECIPE`: ResNet-9 of width 16, one-cycle learning rate, label
  smoothing, bfloat16 where native (`--precision=auto`); chosen with
  `benchmarks.cpu_recipe`), 12 epochs, 128 originals per step for every row
  (the flagfiles' 64 doubled), the flagfiles' flips, independent searches and
  resampling, clean accuracy on the whole test set and the
  grid on 2,000 class-balanced test images; the G-ResNet row a p4 G-ResNet-8 of
  G-widths 3/6/12 in float32 (about the planar network's cost), trained on random
  transformations as its flagfile. Second seed for D.A., D.A.+KL, A.T., A.T.+KL, A.T.+L2.
- `smoke`, seconds, for tests: rows std and A.T.+KL, 128 training images,
  1 epoch, 20 test images.
- `confirm`: the pre-registered confirmatory replication (docs/RESULTS.md): the
  CPU regime's flags (`cpu` with `protocols.CPU_REGIME`, 25,000 training images,
  24 epochs) with seed 2, rows std to A.T.+L2, clean accuracy on all test images,
  the grid on the confirmation set (`benchmarks.confirmation_set`), each run's
  regime graded on 2,000 of its training images, and the pre-registered pairs
  (`protocols.CONFIRMATION_PAIRS`).
- `cpu_regime_grn_invariant`, `cpu_regime_grn_flatten` (seed 0) and `confirm_grn_invariant`,
  `confirm_grn_flatten` (seed 2, the confirmatory replication's flags): the fair G-row of issue #35 alone,
  G-ResNet-9 on p4m matched in parameters to ResNet-9 width 16, trained exactly like D.A. in the CPU regime
  (docs/gresnet.md).
- `full`: the flagfiles unchanged, all seven rows (ResNet-32 and G-ResNet44, the
  whole training set, 100 epochs, the whole test set); needs a GPU, never run on CPU.

The subsets are drawn with each run's seed (`run_data.load_splits`): all runs
of one seed train and test on the same images, and a second seed changes the
subsets as well as the initialisation and the data order.

A dataset without data (no `--data_dir` and no prepared TFDS copy, as for cifar100
and svhn on the project's machines) is not an error: rows that would have to train are marked "no data"
in table.md and results.json, nothing is estimated, and the command says so and
exits 0. A `--data_dir` that is not a valid copy is an error. With data, rows (or seeds) not
finished yet are marked "pending".
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import cli, landscapes, protocols, publishing, runs, tables
from benchmarks.common.protocols import DATASETS, ROWS, SCALES
from invariance_tf import files, plots
from invariance_tf.callbacks import TrainingDivergedError
from invariance_tf.experiment_config import ExperimentConfig
from invariance_tf.options import check, option


@dataclasses.dataclass(frozen=True)
class ReproduceOptions:
    """The flags of `benchmarks.reproduce`."""

    dataset: str | None = option(None, "whose paper flagfiles to run (required)", choices=DATASETS)
    scale: str = option("mini", "protocol size (see above)", choices=SCALES)
    out: str | None = option(None, "folder of the runs and results (required)")
    data_dir: str | None = option(None, "local ImageFolder copy <dir>/{train,test}/<class>/<image>; default: TFDS")
    seeds: tuple[int, ...] | None = option(
        None,
        "seeds of --rows to train, e.g. 1 (default: the scale's seeds); the table shows them beside the scale's seeds",
    )
    epochs: int | None = option(None, "epochs of every run instead of the scale's (use another --out)")
    train_examples: int | None = option(
        None, "training images of every run instead of the scale's, a fixed subset (use another --out)"
    )
    rows: tuple[str, ...] | None = option(
        None,
        f"comma-separated rows to train now, among {list(ROWS)} (default: the scale's rows); "
        "the outputs still show every row of the scale",
    )
    publish: bool = option(
        False,
        "copy results.json, table.md and per_angle.png to docs/results/<dataset>_<scale>* after "
        "every finished run (not for smoke)",
    )
    commit: bool = option(
        False,
        "git-commit results.json, table.md, per_angle.png and each run's small records "
        "(metrics, config, epoch times, landscape) after every finished run; --out must be "
        "inside the checkout, e.g. docs/results/cifar10_cpu",
    )

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        cli.check_required(self, "dataset", "out")
        check(
            self,
            [
                cli.seeds_rule(self.seeds or ()),
                ("epochs", self.epochs is None or self.epochs >= 1, "must be >= 1"),
                ("train_examples", self.train_examples is None or self.train_examples >= 1, "must be >= 1"),
                cli.names_rule("rows", self.rows or (), list(ROWS)),
                ("publish", not (self.publish and self.scale == "smoke"), "smoke results are never published"),
                ("commit", not (self.commit and self.scale == "smoke"), "smoke results are never committed"),
                publishing.commit_rule(self.commit, self.out),
            ],
        )


def reproduce(
    dataset: str,
    scale: str,
    out: Path,
    data_dir: str | None = None,
    rows: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    publish: bool = False,
    commit: bool = False,
    epochs: int | None = None,
    train_examples: int | None = None,
) -> dict:
    """Trains (or reuses) every run; after each one rewrites results.json, table.md and per_angle.png in `out`.

    Runs go seed by seed (every row's first seed before any second seed), so a
    partial table covers every row early. `rows` and `seeds` choose what to train
    (e.g. one row first); the outputs still cover the scale's rows, with their
    finished runs read from `out`. With `publish`, each update is copied to
    docs/results; with `commit`, the results and each finished run's small
    records in `out` are committed. `epochs` and `train_examples` replace the
    scale's numbers of epochs and training images (e.g. another budget or
    regime, into another `out`, whose table then shows the trained rows and those finished there).
    Returns results.json's content.
    """
    train_rows = list(rows or SCALES[scale].rows)
    overridden = epochs is not None or train_examples is not None
    seeds_by_row = protocols.table_seeds(scale, train_rows, seeds, only_trained_rows=overridden)
    if overridden:
        seeds_by_row = with_finished_rows(dataset, scale, out, data_dir, epochs, train_examples, seeds_by_row)
    configs = {
        row: [
            protocols.scale_config(dataset, row, scale, seed, out, data_dir, epochs, train_examples)
            for seed in row_seeds
        ]
        for row, row_seeds in seeds_by_row.items()
    }
    runs.check_finished_runs_match([config for row_runs in configs.values() for config in row_runs])
    no_data = runs.missing_data(configs[train_rows[0]][0])
    order = sorted(
        (config for row in train_rows for config in configs[row] if not seeds or config.seed in seeds),
        key=lambda config: config.seed,
    )
    row_of = {config.output_dir: row for row, row_runs in configs.items() for config in row_runs}
    finished = {
        row: {config.seed: runs.finished_metrics(config) for config in row_runs if runs.is_finished(config)}
        for row, row_runs in configs.items()
    }
    results = {}
    for config in order:
        if no_data and not runs.is_finished(config):
            continue
        was_finished = runs.is_finished(config)
        finished[row_of[config.output_dir]][config.seed] = runs.train_or_load(config)
        results = write_outputs(dataset, scale, out, configs, finished, seeds_by_row, no_data)
        if not was_finished and publish:
            publishing.publish_results(out, dataset, scale)
        if not was_finished and commit:
            run_dir = Path(config.output_dir)
            models = [publishing.keep_model(run_dir, out)] if SCALES[scale].commit_models else []
            publishing.commit_results(out, f"{dataset} {scale}, {run_dir.name}", extra=models)
    if not results:
        results = write_outputs(dataset, scale, out, configs, finished, seeds_by_row, no_data)
    if publish:
        publishing.publish_results(out, dataset, scale)
    return results


def with_finished_rows(
    dataset: str,
    scale: str,
    out: Path,
    data_dir: str | None,
    epochs: int | None,
    train_examples: int | None,
    seeds_by_row: dict[str, list[int]],
) -> dict[str, list[int]]:
    """`seeds_by_row` and the scale's other rows, with their seeds finished in `out` under this budget."""
    shown = dict(seeds_by_row)
    for row in SCALES[scale].rows:
        if row not in shown:
            done = [
                seed
                for seed in protocols.default_seeds(scale, row)
                if runs.is_finished(
                    protocols.scale_config(dataset, row, scale, seed, out, data_dir, epochs, train_examples)
                )
            ]
            if done:
                shown[row] = done
    return {row: shown[row] for row in protocols.ROWS if row in shown}


def write_outputs(
    dataset: str,
    scale: str,
    out: Path,
    configs: dict[str, list[ExperimentConfig]],
    finished: dict[str, dict[int, dict]],
    seeds_by_row: dict[str, list[int]],
    no_data: str | None,
) -> dict:
    """results.json, table.md and per_angle.png of the runs finished so far; returns results.json's content."""
    rows = list(configs)
    summaries = {row: tables.row_summary(metrics) for row, metrics in finished.items() if metrics}
    done = [config for row_runs in configs.values() for config in row_runs if runs.is_finished(config)]
    protocol = protocols.describe(
        dataset, scale, {row: row_runs[0] for row, row_runs in configs.items()}, seeds_by_row, no_data
    )
    protocol["measured"] = {Path(config.output_dir).name: runs.measured(config) for config in done}
    protocol["precision"] = {Path(config.output_dir).name: runs.run_precision(config) for config in done}
    pairs = SCALES[scale].pairs or tables.PAIRS
    results = {"rows": summaries, "paired": tables.paired_differences(finished, pairs), "protocol": protocol}
    out.mkdir(parents=True, exist_ok=True)
    files.write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    files.write_text(out / "table.md", tables.paper_table(results, rows))
    examples = SCALES[scale].landscape_examples
    curves = {
        ROWS[row]: landscapes.landscape(configs[row][0], examples)
        for row in summaries
        if runs.is_finished(configs[row][0])
        and (not no_data or (Path(configs[row][0].output_dir) / "landscape.json").is_file())
    }
    if curves:
        plots.per_angle_curves(
            curves,
            out / "per_angle.png",
            limits=configs[rows[0]][0].limits,
            title=f"{DATASETS[dataset]}, {scale} scale: accuracy per angle "
            f"(mean over translations, {examples} test images)",
        )
    return results


def main(options: ReproduceOptions) -> None:
    """The command: trains the runs the flags ask for and prints the table; an error exits with one line."""
    out = Path(options.out)
    data_dir = str(Path(options.data_dir).resolve()) if options.data_dir else None
    try:
        results = reproduce(
            options.dataset,
            options.scale,
            out,
            data_dir,
            options.rows,
            options.seeds,
            options.publish,
            options.commit,
            options.epochs,
            options.train_examples,
        )
    except (ValueError, FileNotFoundError, TrainingDivergedError) as error:
        sys.exit(f"error: {error}")
    print((out / "table.md").read_text())
    if results["protocol"]["data"].startswith(runs.NO_DATA):
        print(f"{results['protocol']['data']}; table.md reports the rows left to train as '{runs.NO_DATA}'")


if __name__ == "__main__":
    cli.run(ReproduceOptions, main)
