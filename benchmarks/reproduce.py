"""The paper's table (Yang, Wang, Heinze-Deml, NeurIPS 2019) reproduced at a chosen scale, with its plots.

    python -m benchmarks.reproduce --dataset cifar10 --scale mini --out results/cifar10_mini \
        --data_dir ../shared/data/cifar10 [--seeds 0,1] [--rows std,da,...] [--publish]
    python -m benchmarks.reproduce --dataset cifar10 --scale cpu --out docs/results/cifar10_cpu \
        --data_dir ../shared/data/cifar10 --commit
    python -m benchmarks.reproduce --dataset cifar10 --scale cpu --epochs 24 --rows at,at_kl \
        --out docs/results/cifar10_cpu_24ep --data_dir ../shared/data/cifar10 --commit

Each row trains from the paper's flagfile `configs/<dataset>_<row>.cfg` with the
scale's flags appended, exactly as `trainers.fit --flagfile=<cfg> <overrides>`
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
  landscape), so finished rows are kept whenever the sitting ends.

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
  CPU recipe (`CPU_RECIPE`: ResNet-9 of width 16, one-cycle learning rate, label
  smoothing, bfloat16 where native (`--precision=auto`); chosen with
  `benchmarks.cpu_recipe`), 12 epochs, 128 originals per step for every row
  (the flagfiles' 64 doubled), the flagfiles' flips, independent searches and
  resampling, clean accuracy on the whole test set and the
  grid on 2,000 class-balanced test images; the G-ResNet row a p4 G-ResNet-8 of
  G-widths 3/6/12 in float32 (about the planar network's cost), trained on random
  transformations as its flagfile. Second seed for D.A., D.A.+KL, A.T., A.T.+KL.
- `smoke`, seconds, for tests: rows std and A.T.+KL, 128 training images,
  1 epoch, 20 test images.
- `full`: the flagfiles unchanged, all seven rows (ResNet-32 and G-ResNet44, the
  whole training set, 100 epochs, the whole test set); needs a GPU, never run on CPU.

The subsets are drawn with each run's seed (`experiment.load_splits`): all runs
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

import argparse
import dataclasses
import datetime
import json
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from invariance_tf import data, evaluation, experiment, files, plots, precision
from invariance_tf.callbacks import TrainingDivergedError
from invariance_tf.experiment import ExperimentConfig
from invariance_tf.networks import pretrained
from trainers import flags as experiment_flags

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
PUBLISH_DIR = REPO_ROOT / "docs" / "results"
DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN"}
ROWS = {
    "std": "std",
    "da": "D.A.",
    "da_kl": "D.A.+KL",
    "at": "A.T.",
    "at_kl": "A.T.+KL",
    "at_l2": "A.T.+L2",
    "grn": "G-ResNet",
}
# The paper's standard and grid accuracy (%) at full scale; "–" in the table where it reports none.
PAPER_STD_ACCURACY = {
    "svhn": {"std": 95.48, "da": 93.97, "da_kl": 96.16, "at": 96.03, "at_kl": 96.14, "at_l2": 96.53, "grn": 95.0},
    "cifar10": {"std": 92.11, "da": 89.93, "da_kl": 89.19, "at": 91.78, "at_kl": 89.82, "at_l2": 90.53, "grn": 93.08},
    "cifar100": {"std": 70.23, "da": 66.62, "da_kl": 68.69, "at": 68.79, "at_kl": 69.99, "at_l2": 67.11},
}
PAPER_GRID_ACCURACY = {
    "cifar10": {"std": 9.5, "da": 58.3, "da_kl": 73.3, "at": 71.0, "at_kl": 78.8, "at_l2": 77.1, "grn": 71.6},
}
# Each run's small records, committed by --commit (models, backups and logs stay out of git).
COMMITTED_RUN_FILES = ("metrics.json", "config.json", "epoch_seconds.json", "landscape.json", "measured.json")
NO_DATA = "no data"
PENDING = "pending"
MISSING = "–"


FLAGFILE_RECIPE = (
    "the flagfiles' reference protocol (64 originals per step for every row, step schedule, flips "
    "only, independent searches, the reference's resampling)"
)


@dataclasses.dataclass(frozen=True)
class Scale:
    """A protocol size: flags appended to every row's flagfile, and its default rows and seeds.

    `row_overrides` are appended after `overrides` for the rows they name;
    `batch_multiplier` scales each flagfile's batch size (the same for every row, as in the reference code).
    """

    overrides: tuple[str, ...]
    rows: tuple[str, ...]
    second_seed_rows: tuple[str, ...]
    landscape_examples: int
    note: str = ""
    row_overrides: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    batch_multiplier: int = 1
    recipe: str = FLAGFILE_RECIPE


# The CPU recipe (benchmarks/cpu_recipe.py measures it): a narrow ResNet-9, one-cycle learning rate,
# label smoothing, Nesterov momentum, bfloat16 compute where the hardware computes it natively
# (`--precision=auto`, `invariance_tf.precision`); 128 originals per step (the flagfiles' 64, doubled).
CPU_RECIPE = (
    "--network=resnet9",
    "--width=16",
    "--lr_schedule=onecycle",
    "--lr=0.4",
    "--warmup_fraction=0.2",
    "--weight_decay=5e-4",
    "--nesterov",
    "--label_smoothing=0.2",
    "--precision=auto",
)
CPU_EPOCHS = 12
# The G-ResNet row at about the planar network's training cost (benchmarks.cpu_recipe --throughput measures it).
CPU_GRN = ("--network=g_resnet", "--g_depth=8", "--g_width=3", "--precision=float32")


SCALES = {
    "mini": Scale(
        (
            "--resnet_n=1",
            "--train_examples=10000",
            "--epochs=6",
            "--test_examples=1000",
            "--grid_examples=0",
            "--verbose=2",
        ),
        ("std", "da", "da_kl", "at", "at_kl", "at_l2"),
        ("da", "da_kl", "at", "at_kl"),
        200,
        "G-ResNet44 is not part of the mini scale: on CPU it trains about 25x slower than ResNet-8.",
    ),
    "smoke": Scale(
        (
            "--resnet_n=1",
            "--train_examples=128",
            "--epochs=1",
            "--test_examples=20",
            "--grid_examples=0",
            "--verbose=0",
        ),
        ("std", "at_kl"),
        (),
        20,
    ),
    "cpu": Scale(
        (*CPU_RECIPE, f"--epochs={CPU_EPOCHS}", "--test_examples=0", "--grid_examples=2000", "--verbose=2"),
        tuple(ROWS),
        ("da", "da_kl", "at", "at_kl"),
        200,
        "The G-ResNet row is a p4 G-ResNet-8 (G-widths 3/6/12, float32) with the CPU recipe, trained on "
        "random transformations as its flagfile; its measured training time is in the table.",
        row_overrides={"grn": CPU_GRN},
        batch_multiplier=2,
        recipe="one-cycle learning rate (peak 0.4), label smoothing 0.2, Nesterov momentum, weight decay "
        "5e-4, bfloat16 compute where native (--precision=auto), 128 originals per step for every "
        "row (+ 128 transformed for the regularised rows, and 128 more, an independent worst case "
        "w.r.t. CE, for the CE term of A.T.+KL and A.T.+L2), flips only, the reference's "
        "resampling",
    ),
    "full": Scale((), tuple(ROWS), (), 1000),
}


def config_from_flagfile(path: Path, *overrides: str) -> ExperimentConfig:
    """The config `trainers.fit --flagfile=path overrides...` would run."""
    values = flags.FlagValues()
    experiment_flags.define_experiment_flags(values)
    values(["reproduce", f"--flagfile={path}", *overrides])
    return experiment_flags.config_from_flags(values)


def row_flagfile(dataset: str, row: str) -> Path:
    """The paper row's flagfile, `configs/<dataset>_<row>.cfg`."""
    return CONFIGS / f"{dataset}_{row}.cfg"


def run_config(
    dataset: str,
    row: str,
    overrides: Sequence[str],
    seed: int,
    output_dir: Path,
    data_dir: str | None,
    batch_multiplier: int = 1,
) -> ExperimentConfig:
    """The config of one run: the row's flagfile, then `overrides`, the seed, the data and the output folder.

    The flagfile's batch size is multiplied by `batch_multiplier`.
    """
    config = config_from_flagfile(
        row_flagfile(dataset, row),
        *overrides,
        f"--seed={seed}",
        f"--data_dir={data_dir or ''}",
        f"--output_dir={output_dir}",
    )
    return dataclasses.replace(config, batch_size=config.batch_size * batch_multiplier)


def scale_config(
    dataset: str, row: str, scale: str, seed: int, out: Path, data_dir: str | None, epochs: int | None = None
) -> ExperimentConfig:
    """The config of one run of the protocol `scale`, in `out/<row>_seed<seed>`.

    `epochs`, if given, replaces the scale's number of epochs.
    """
    protocol = SCALES[scale]
    overrides = (*protocol.overrides, *protocol.row_overrides.get(row, ()), *([f"--epochs={epochs}"] if epochs else []))
    return run_config(dataset, row, overrides, seed, out / f"{row}_seed{seed}", data_dir, protocol.batch_multiplier)


def missing_data(config: ExperimentConfig) -> str | None:
    """Why `config`'s dataset cannot be read (no `--data_dir` and no TFDS copy), or None if it can.

    A bad `--data_dir` is not "missing": `experiment.run` reports it as an error.
    """
    if config.data_dir:
        return None
    try:
        data.validate_source(config.dataset)
    except FileNotFoundError as error:
        return str(error)
    return None


def is_finished(config: ExperimentConfig) -> bool:
    """Whether the run wrote its metrics.json."""
    return (Path(config.output_dir) / "metrics.json").is_file()


# Flags that change neither a finished run's weights nor what its metrics.json measured.
EVALUATION_INDEPENDENT = experiment.RESUME_INDEPENDENT - {"test_examples", "grid_examples"}


def check_finished_runs_match(configs: Sequence[ExperimentConfig]) -> None:
    """Refuses finished runs in `out` trained or graded with other flags than the scale's current ones.

    After a change to a flagfile, say, their numbers would enter the table under the wrong method or test set.
    """
    for config in configs:
        if not is_finished(config):
            continue
        changed = experiment.recorded_changes(config, Path(config.output_dir), EVALUATION_INDEPENDENT)
        if changed:
            raise ValueError(
                f"{config.output_dir} is a finished run made with {experiment.flag_list(changed)}, "
                "which this protocol no longer uses: move it out of --out to train the row anew"
            )


def finished_metrics(config: ExperimentConfig) -> dict:
    """The finished run's metrics.json."""
    return json.loads((Path(config.output_dir) / "metrics.json").read_text())


def train_or_load(config: ExperimentConfig) -> dict:
    """The run's metrics.json: read when the run is finished, else trained (resuming an interrupted run)."""
    out = Path(config.output_dir)
    if is_finished(config):
        print(f"skipping {out}: finished (metrics.json exists)", flush=True)
        return finished_metrics(config)
    print(f"training {out}", flush=True)
    keras.backend.clear_session()
    metrics = experiment.run(config)
    files.write_text(out / "measured.json", json.dumps({"date": _now(), "machine": machine()}, indent=2) + "\n")
    return metrics


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def measured(config: ExperimentConfig) -> dict | None:
    """When and where a finished run's training ended (its measured.json), or None if not recorded."""
    path = Path(config.output_dir) / "measured.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run_precision(config: ExperimentConfig) -> str:
    """The dtype policy a finished run trained in.

    That is its metrics.json's record (`--precision=auto` resolved), or the policy its config names (runs from
    before `auto`).
    """
    return finished_metrics(config).get("precision", config.precision)


def seed_summary(metrics: dict) -> dict:
    """The accuracies (fractions) and training seconds of one run's metrics.json."""
    return {
        name: float(value) for name, value in metrics.items() if name.endswith("_accuracy") or name == "train_seconds"
    }


def row_summary(metrics_by_seed: dict[int, dict]) -> dict:
    """Mean over seeds of each value, the seeds averaged, and each seed's values."""
    per_seed = {seed: seed_summary(metrics) for seed, metrics in sorted(metrics_by_seed.items())}
    names = next(iter(per_seed.values()))
    means = {name: float(np.mean([values[name] for values in per_seed.values()])) for name in names}
    return {**means, "seed": list(per_seed), "seeds": {str(seed): values for seed, values in per_seed.items()}}


def landscape(config: ExperimentConfig, examples: int) -> np.ndarray:
    """Accuracy per grid transformation of the run's model on `examples` evenly spaced test images.

    The test subset is ordered by class, so evenly spaced images cover every
    class. Computed once with the brute-force grid, kept in
    `<run>/landscape.json`, and drawn into `<run>/robustness_landscape.png`.
    """
    out = Path(config.output_dir)
    cache = out / "landscape.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached["examples"] == examples and cached.get("selection") == "evenly_spaced":
            return np.asarray(cached["per_transform_accuracy"])
    print(f"landscape of {out}: brute-force grid on {examples} test images", flush=True)
    images, labels = experiment.load_splits(config).test
    chosen = np.linspace(0, len(images) - 1, min(examples, len(images))).round().astype(int)
    model = pretrained.load_keras(out / "model.keras")
    accuracy = evaluation.grid_accuracy(
        model,
        images[chosen],
        labels[chosen],
        method="brute",
        limits=config.limits,
        resampling=config.resampling,
        batch_size=config.eval_batch_size or None,
    ).per_transform_accuracy
    files.write_text(
        cache,
        json.dumps({"examples": examples, "selection": "evenly_spaced", "per_transform_accuracy": accuracy.tolist()}),
    )
    plots.robustness_landscape(
        accuracy,
        out / "robustness_landscape.png",
        limits=config.limits,
        title=f"{out.name}: grid accuracy on {min(examples, len(images))} test images",
    )
    return accuracy


def network_name(config: ExperimentConfig) -> str:
    """The network a config trains, e.g. "ResNet-8 (--resnet_n=1)"."""
    if config.network == "resnet":
        return f"ResNet-{6 * config.resnet_n + 2} (--resnet_n={config.resnet_n})"
    if config.network == "resnet9":
        return f"ResNet-9 (--width={config.width})"
    if config.network == "g_resnet":
        widths = f", G-widths {config.g_width}/{2 * config.g_width}/{4 * config.g_width}" if config.g_width else ""
        return f"G-ResNet{config.g_depth} {config.group}{widths}"
    return config.network


def machine() -> dict:
    """Where the numbers were measured, and the precision `--precision=auto` picks there."""
    return {
        "platform": platform.platform(),
        "cpu": precision.cpu_model(),
        "cpu_cores": len(os.sched_getaffinity(0)),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "precision_auto": precision.resolve(precision.AUTO).reason,
    }


def protocol(
    dataset: str, scale: str, configs: dict[str, ExperimentConfig], seeds: dict[str, list[int]], no_data: str | None
) -> dict:
    """What was run: scale, subset, epochs, networks, test and grid examples, seeds, date and machine."""
    first = next(iter(configs.values()))
    test = first.test_examples or "all"
    return {
        "dataset": dataset,
        "scale": scale,
        "network": "; ".join(dict.fromkeys(network_name(config) for config in configs.values())),
        "train_examples": first.train_examples or "all",
        "subset": (
            f"{first.train_examples} class-balanced training images drawn with each run's seed"
            if first.train_examples
            else "the whole training split"
        ),
        "epochs": first.epochs,
        "test_examples": test,
        "grid_examples": first.grid_examples or test,
        "landscape_examples": SCALES[scale].landscape_examples,
        "seeds": seeds,
        "flagfiles": {row: str(row_flagfile(dataset, row).relative_to(REPO_ROOT)) for row in configs},
        "overrides": list(SCALES[scale].overrides),
        "row_overrides": {row: list(flags) for row, flags in SCALES[scale].row_overrides.items()},
        "batch_multiplier": SCALES[scale].batch_multiplier,
        "recipe": SCALES[scale].recipe,
        "note": SCALES[scale].note,
        "data": f"{NO_DATA}: {no_data}" if no_data else first.data_dir or "TFDS",
        "date": _now(),
    }


def _percent(row: dict, name: str) -> str:
    mean = f"{100 * row[name]:.1f}"
    if len(row["seeds"]) < 2:
        return mean
    return f"{mean} ({' / '.join(f'{100 * values[name]:.1f}' for values in row['seeds'].values())})"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _train_time(row: dict) -> str:
    mean = _duration(row["train_seconds"])
    if len(row["seeds"]) < 2:
        return mean
    return f"{mean} ({' / '.join(_duration(values['train_seconds']) for values in row['seeds'].values())})"


def table(results: dict, requested: Sequence[str]) -> str:
    """table.md: one line per paper row, the paper's full-scale numbers beside ours."""
    info, rows = results["protocol"], results["rows"]
    dataset = info["dataset"]
    paper = PAPER_GRID_ACCURACY.get(dataset, {})
    paper_std = PAPER_STD_ACCURACY.get(dataset, {})
    lines = [f"# {DATASETS[dataset]}: the paper's table at {info['scale']} scale", ""]
    if info["data"].startswith(NO_DATA):
        lines += [f"**{info['data']}**", ""]
    lines += [
        "| method | std acc, paper (%) | std acc, ours (%) | grid acc, paper (%) | grid acc, ours (%) "
        "| train time, ours |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row, label in ROWS.items():
        paper_grid = f"{paper[row]:.1f}" if row in paper else MISSING
        paper_clean = f"{paper_std[row]:.2f}" if row in paper_std else MISSING
        if row in rows:
            ours = [_percent(rows[row], "clean_accuracy"), _percent(rows[row], "grid_accuracy"), _train_time(rows[row])]
            left = [seed for seed in info.get("seeds", {}).get(row, []) if str(seed) not in rows[row]["seeds"]]
            if left:
                ours[0] += f" (seed {', '.join(map(str, left))} pending)"
        elif row in requested:
            ours = [NO_DATA if info["data"].startswith(NO_DATA) else PENDING] * 3
        else:
            ours = ["not run"] * 3
        lines.append(f"| {label} | {paper_clean} | {ours[0]} | {paper_grid} | {ours[1]} | {ours[2]} |")
    several_seeds = any(len(row["seeds"]) > 1 for row in rows.values())
    lines += [
        "",
        f"Ours: {info['network']}, {info['subset']}, {_count(info['epochs'], 'epoch')}, "
        f"{info.get('recipe', FLAGFILE_RECIPE)}; standard accuracy on {info['test_examples']} test images, "
        f"grid accuracy (correct under all 775 = 5 dx x 5 dy x 31 angle transformations) "
        f"on {info['grid_examples']} of them. "
        f"{'With several seeds: mean (each seed, in order). ' if several_seeds else ''}"
        f"Train time: the wall time of the training epochs (summed over resumed sittings; evaluation "
        f"excluded). Trained on {_where_measured(info.get('measured', {}))}. "
        f"Precision: {_precisions(info.get('precision', {}))}.",
        "",
        "Paper: ResNet-32 (G-ResNet44 for its row), the whole training set, 100 epochs, the whole test set; "
        f"{MISSING} = not recorded here.",
    ]
    if info["note"]:
        lines += ["", info["note"]]
    return "\n".join(lines) + "\n"


def _where_measured(records: dict[str, dict | None]) -> str:
    """Each machine the finished runs trained on, with their names and dates."""
    by_machine: dict[str, list[str]] = {}
    for run, record in records.items():
        if record is None:
            by_machine.setdefault("a machine not recorded", []).append(run)
        else:
            where = record["machine"]
            by_machine.setdefault(
                f"{where['cpu_cores']} CPU cores ({where['cpu']}), {where['gpus']} GPU(s)", []
            ).append(f"{run} {record['date'][:10]}")
    return "; ".join(f"{where}: {', '.join(runs)}" for where, runs in by_machine.items()) or "nothing yet"


def _precisions(by_run: dict[str, str]) -> str:
    """Each dtype policy the finished runs trained in, with their names."""
    runs_of: dict[str, list[str]] = {}
    for run, policy in by_run.items():
        runs_of.setdefault(policy, []).append(run)
    return "; ".join(f"{policy}: {', '.join(runs)}" for policy, runs in runs_of.items()) or "nothing yet"


def default_seeds(scale: str, row: str) -> tuple[int, ...]:
    """Seed 0, and seed 1 too for the scale's `second_seed_rows`."""
    return (0, 1) if row in SCALES[scale].second_seed_rows else (0,)


def table_seeds(
    scale: str, train_rows: Sequence[str], seeds: Sequence[int] | None, only_trained_rows: bool = False
) -> dict[str, list[int]]:
    """The table's rows and each one's seeds.

    The rows are the scale's and any other row being trained (with `only_trained_rows` the latter only); the seeds
    are the scale's default seeds, and `seeds` too for the rows being trained (so training one seed keeps the
    others shown).
    """
    table_rows = [row for row in ROWS if row in train_rows or (row in SCALES[scale].rows and not only_trained_rows)]
    return {
        row: sorted({*default_seeds(scale, row), *(seeds if seeds and row in train_rows else ())}) for row in table_rows
    }


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
) -> dict:
    """Trains (or reuses) every run; after each one rewrites results.json, table.md and per_angle.png in `out`.

    Runs go seed by seed (every row's first seed before any second seed), so a
    partial table covers every row early. `rows` and `seeds` choose what to train
    (e.g. one row first); the outputs still cover the scale's rows, with their
    finished runs read from `out`. With `publish`, each update is copied to
    docs/results; with `commit`, the results and each finished run's small
    records in `out` are committed. `epochs` replaces the scale's number of
    epochs (e.g. a longer budget, into another `out`, whose table then shows
    the trained rows only). Returns results.json's content.
    """
    train_rows = list(rows or SCALES[scale].rows)
    seeds_by_row = table_seeds(scale, train_rows, seeds, only_trained_rows=epochs is not None)
    configs = {
        row: [scale_config(dataset, row, scale, seed, out, data_dir, epochs) for seed in row_seeds]
        for row, row_seeds in seeds_by_row.items()
    }
    check_finished_runs_match([config for runs in configs.values() for config in runs])
    no_data = missing_data(configs[train_rows[0]][0])
    order = sorted(
        (config for row in train_rows for config in configs[row] if not seeds or config.seed in seeds),
        key=lambda config: config.seed,
    )
    row_of = {config.output_dir: row for row, runs in configs.items() for config in runs}
    finished = {
        row: {config.seed: finished_metrics(config) for config in runs if is_finished(config)}
        for row, runs in configs.items()
    }
    results = {}
    for config in order:
        if no_data and not is_finished(config):
            continue
        was_finished = is_finished(config)
        finished[row_of[config.output_dir]][config.seed] = train_or_load(config)
        results = write_outputs(dataset, scale, out, configs, finished, seeds_by_row, no_data)
        if not was_finished and publish:
            publish_results(out, dataset, scale)
        if not was_finished and commit:
            commit_results(out, f"{dataset} {scale}, {Path(config.output_dir).name}")
    if not results:
        results = write_outputs(dataset, scale, out, configs, finished, seeds_by_row, no_data)
    if publish:
        publish_results(out, dataset, scale)
    return results


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
    summaries = {row: row_summary(metrics) for row, metrics in finished.items() if metrics}
    results = {
        "rows": summaries,
        "protocol": protocol(dataset, scale, {row: runs[0] for row, runs in configs.items()}, seeds_by_row, no_data),
    }
    results["protocol"]["measured"] = {
        Path(config.output_dir).name: measured(config)
        for runs in configs.values()
        for config in runs
        if is_finished(config)
    }
    results["protocol"]["precision"] = {
        Path(config.output_dir).name: run_precision(config)
        for runs in configs.values()
        for config in runs
        if is_finished(config)
    }
    out.mkdir(parents=True, exist_ok=True)
    files.write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    files.write_text(out / "table.md", table(results, rows))
    examples = SCALES[scale].landscape_examples
    curves = {
        ROWS[row]: landscape(configs[row][0], examples)
        for row in summaries
        if is_finished(configs[row][0])
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


def publish_results(out: Path, dataset: str, scale: str) -> None:
    """Copies results.json, table.md and per_angle.png to docs/results/<dataset>_<scale>*."""
    PUBLISH_DIR.mkdir(parents=True, exist_ok=True)
    for name, suffix in (("results.json", ".json"), ("table.md", "_table.md"), ("per_angle.png", "_per_angle.png")):
        if (out / name).is_file():
            shutil.copyfile(out / name, PUBLISH_DIR / f"{dataset}_{scale}{suffix}")


def commit_results(
    out: Path, message: str, tables: Sequence[str] = ("results.json", "table.md", "per_angle.png")
) -> None:
    """Commits `out`'s `tables` and each run's small records (metrics, config, epoch times, landscape).

    It also commits the removal of tracked files gone from `out` (a backup committed to carry an unfinished run
    between sittings, removed when the run finished); nothing else of the checkout. A failed commit is reported,
    not raised, so the protocol goes on (the next commit includes what this one missed).
    """
    names = [*tables, *(f"*_seed*/{name}" for name in COMMITTED_RUN_FILES)]
    paths = sorted(str(path) for name in names for path in out.glob(name))
    git = ["git", "-C", str(REPO_ROOT)]
    tracked = subprocess.run(
        [*git, "ls-files", "--full-name", "--", str(out.resolve())], capture_output=True, text=True
    ).stdout.split()
    paths += [str(REPO_ROOT / path) for path in tracked if not (REPO_ROOT / path).exists()]
    error = ""
    for attempt in range(5):
        added = subprocess.run([*git, "add", "--", *paths], capture_output=True, text=True)
        if added.returncode == 0:
            if subprocess.run([*git, "diff", "--cached", "--quiet", "--", *paths]).returncode == 0:
                return
            done = subprocess.run(
                [*git, "commit", "--quiet", "-m", f"Results: {message}", "--", *paths], capture_output=True, text=True
            )
            if done.returncode == 0:
                return
            error = done.stderr
        else:
            error = added.stderr
        time.sleep(2 + 3 * attempt)
    print(f"warning: could not commit the results of {message}: {error.strip()}", flush=True)


def parse_seeds(text: str) -> list[int]:
    """`--seeds`: comma-separated distinct integers >= 0."""
    try:
        values = [int(value) for value in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if any(value < 0 for value in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: seeds must be distinct integers >= 0")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 1")
    return value


def _row_list(text: str) -> list[str]:
    rows = text.split(",")
    unknown = [row for row in rows if row not in ROWS]
    if unknown or len(set(rows)) != len(rows):
        raise argparse.ArgumentTypeError(f"{text!r}: unknown or repeated rows {unknown}; valid rows are {list(ROWS)}")
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=list(DATASETS), help="whose paper flagfiles to run")
    parser.add_argument("--scale", default="mini", choices=list(SCALES), help="protocol size (see above)")
    parser.add_argument("--out", required=True, type=Path, help="folder of the runs and results")
    parser.add_argument(
        "--data_dir", default=None, help="local ImageFolder copy <dir>/{train,test}/<class>/<image>; default: TFDS"
    )
    parser.add_argument(
        "--seeds",
        type=parse_seeds,
        default=None,
        help="seeds of --rows to train, e.g. 1 (default: the scale's seeds); the table shows them "
        "beside the scale's seeds",
    )
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="epochs of every run instead of the scale's (use another --out)",
    )
    parser.add_argument(
        "--rows",
        type=_row_list,
        default=None,
        help=f"comma-separated rows to train now, among {list(ROWS)} (default: the scale's rows); "
        "the outputs still show every row of the scale",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="copy results.json, table.md and per_angle.png to docs/results/<dataset>_<scale>* after "
        "every finished run (not for smoke)",
    )
    parser.add_argument(
        "--commit",
        action="store_true",
        help="git-commit results.json, table.md, per_angle.png and each run's small records "
        "(metrics, config, epoch times, landscape) after every finished run; --out must be "
        "inside the checkout, e.g. docs/results/cifar10_cpu",
    )
    args = parser.parse_args(argv)
    if (args.publish or args.commit) and args.scale == "smoke":
        parser.error("--publish and --commit are for mini, cpu and full runs; smoke results are never published")
    if args.commit and not args.out.resolve().is_relative_to(REPO_ROOT):
        parser.error(f"--commit needs --out inside the checkout {REPO_ROOT}; got --out={args.out}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    try:
        results = reproduce(
            args.dataset, args.scale, args.out, data_dir, args.rows, args.seeds, args.publish, args.commit, args.epochs
        )
    except (ValueError, FileNotFoundError, TrainingDivergedError) as error:
        sys.exit(f"error: {error}")
    print((args.out / "table.md").read_text())
    if results["protocol"]["data"].startswith(NO_DATA):
        print(f"{results['protocol']['data']}; table.md reports the rows left to train as '{NO_DATA}'")


if __name__ == "__main__":
    main()
