"""The benchmarks' tables: the paper's table (results.json's rows and table.md) and CSV files.

results.json's "rows" hold per paper row the mean over its finished seeds and each seed's values
(`row_summary`); `paper_table` sets them beside the paper's full-scale numbers.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import protocols, runs
from invariance_tf import files, report

PENDING = "pending"
MISSING = "–"
# The paper's standard and grid accuracy (%) at full scale; "–" in the table where it reports none.
PAPER_STD_ACCURACY = {
    "svhn": {"std": 95.48, "da": 93.97, "da_kl": 96.16, "at": 96.03, "at_kl": 96.14, "at_l2": 96.53, "grn": 95.0},
    "cifar10": {"std": 92.11, "da": 89.93, "da_kl": 89.19, "at": 91.78, "at_kl": 89.82, "at_l2": 90.53, "grn": 93.08},
    "cifar100": {"std": 70.23, "da": 66.62, "da_kl": 68.69, "at": 68.79, "at_kl": 69.99, "at_l2": 67.11},
}
PAPER_GRID_ACCURACY = {
    "cifar10": {"std": 9.5, "da": 58.3, "da_kl": 73.3, "at": 71.0, "at_kl": 78.8, "at_l2": 77.1, "grn": 71.6},
}


# (b, a): each row's grid accuracy against the row it adds to (the G-ResNet's: the planar network trained as it is),
# and the paper's two penalties against each other, paired over the same test images.
PAIRS = (("da_kl", "da"), ("at_kl", "at"), ("at_l2", "at"), ("at_l2", "at_kl"), ("grn", "da"))
REGIME_ACCURACIES = ("train_accuracy", "worst_of_10_accuracy", "clean_accuracy")


def train_accuracy(metrics: dict) -> float | None:
    """The run's accuracy on its own CE batch in its last epoch (`acc_adv`, or `acc_nat` without one).

    It is the epoch's running mean in training mode; set beside the test accuracies it shows the regime: a run whose
    training accuracy is not clearly above its worst-of-10 test accuracy underfits.
    """
    logs = metrics.get("final_train_logs") or {}
    value = logs.get("acc_adv", logs.get("acc_nat"))
    return None if value is None else float(value)


def seed_summary(metrics: dict) -> dict:
    """The accuracies (fractions, `train_accuracy` among them when logged) and training seconds of a metrics.json."""
    summary = {
        name: float(value) for name, value in metrics.items() if name.endswith("_accuracy") or name == "train_seconds"
    }
    train = train_accuracy(metrics)
    return summary if train is None else {**summary, "train_accuracy": train}


def row_summary(metrics_by_seed: dict[int, dict]) -> dict:
    """Mean over seeds of each value every seed has, the seeds averaged, and each seed's values."""
    per_seed = {seed: seed_summary(metrics) for seed, metrics in sorted(metrics_by_seed.items())}
    names = [name for name in next(iter(per_seed.values())) if all(name in values for values in per_seed.values())]
    means = {name: float(np.mean([values[name] for values in per_seed.values()])) for name in names}
    return {**means, "seed": list(per_seed), "seeds": {str(seed): values for seed, values in per_seed.items()}}


def paired_differences(
    finished: Mapping[str, Mapping[int, dict]], pairs: Sequence[tuple[str, str]] = PAIRS
) -> list[dict]:
    """Grid accuracy of b minus a, for each `(b, a)` of `pairs`, per seed both rows finished.

    Each entry is `report.paired_difference` (paired bootstrap interval, McNemar's p) with the rows and the seed;
    a pair graded on different test images is refused (`report.check_paired`).
    """
    result = []
    for b, a in pairs:
        for seed in sorted(set(finished.get(a, {})) & set(finished.get(b, {}))):
            records = [finished[row][seed] for row in (a, b)]
            if any("grid_correct" not in record for record in records):
                continue
            report.check_paired(*records, (f"{a} seed {seed}", f"{b} seed {seed}"))
            bits = [report.from_bits(record["grid_correct"]) for record in records]
            difference = report.paired_difference(*bits)
            result.append({"b": b, "a": a, "seed": seed, **difference})
    return result


def _paired_lines(paired: Sequence[dict]) -> list[str]:
    """The table of paired differences, or nothing before a pair has finished."""
    if not paired:
        return []
    lines = [
        "",
        "Paired differences of grid accuracy (same seed, same test images; paired bootstrap 95 % interval, "
        "McNemar's exact p):",
        "",
        "| difference | seed | Δ grid (points) [95 % CI] | McNemar p | b right, a wrong / a right, b wrong |",
        "|---|---:|---:|---:|---:|",
    ]
    for pair in paired:
        low, high = pair["ci"]
        lines.append(
            f"| {protocols.ROWS[pair['b']]} − {protocols.ROWS[pair['a']]} | {pair['seed']} | "
            f"{100 * pair['difference']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] | {pair['mcnemar_p']:.3g} | "
            f"{pair['b_only']} / {pair['a_only']} |"
        )
    return lines


def _regime_lines(rows: Mapping[str, dict]) -> list[str]:
    """Each run's training accuracy beside its test accuracies, or nothing when no run logged one."""
    trained = [
        (label, seed, values)
        for row, label in protocols.ROWS.items()
        for seed, values in rows.get(row, {}).get("seeds", {}).items()
        if all(name in values for name in REGIME_ACCURACIES)
    ]
    if not trained:
        return []
    lines = [
        "",
        "Regime: each run's accuracy on its own CE batch in its last epoch (training mode) beside its test "
        "accuracies. The A.T. rows' CE batch is a worst of 10, so their training accuracy roughly compares with "
        "worst-of-10; the other rows' is one random transformation (std's a random ±4 px shift), which compares "
        "with neither column:",
        "",
        "| run | train, own CE batch (%) | test, worst-of-10 (%) | test, clean (%) |",
        "|---|---:|---:|---:|",
    ]
    for label, seed, values in trained:
        train, worst, clean = (100 * values[name] for name in REGIME_ACCURACIES)
        lines.append(f"| {label}, seed {seed} | {train:.1f} | {worst:.1f} | {clean:.1f} |")
    return lines


GRADED_REGIME = ("train_worst_of_10_accuracy", "worst_of_10_accuracy", "train_clean_accuracy", "clean_accuracy")


def _graded_regime_lines(rows: Mapping[str, dict]) -> list[str]:
    """Each run's accuracies on its own training images beside its test accuracies, graded alike, or nothing."""
    graded = [
        (label, seed, values)
        for row, label in protocols.ROWS.items()
        for seed, values in rows.get(row, {}).get("seeds", {}).items()
        if all(name in values for name in GRADED_REGIME)
    ]
    if not graded:
        return []
    lines = [
        "",
        "Regime, graded alike: worst-of-10 and clean accuracy on a class-balanced subset of each run's own "
        "training images (`--train_eval_examples`, inference mode, final weights, the test's rule) beside the "
        "test's; a run far more accurate on its training images overfits:",
        "",
        "| run | worst-of-10, train (%) | worst-of-10, test (%) | clean, train (%) | clean, test (%) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, seed, values in graded:
        cells = " | ".join(f"{100 * values[name]:.1f}" for name in GRADED_REGIME)
        lines.append(f"| {label}, seed {seed} | {cells} |")
    return lines


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


def paper_table(results: dict, requested: Sequence[str]) -> str:
    """table.md: one line per paper row, the paper's full-scale numbers beside ours."""
    info, rows = results["protocol"], results["rows"]
    dataset = info["dataset"]
    paper = PAPER_GRID_ACCURACY.get(dataset, {})
    paper_std = PAPER_STD_ACCURACY.get(dataset, {})
    lines = [f"# {protocols.DATASETS[dataset]}: the paper's table at {info['scale']} scale", ""]
    if info["data"].startswith(runs.NO_DATA):
        lines += [f"**{info['data']}**", ""]
    lines += [
        "| method | std acc, paper (%) | std acc, ours (%) | grid acc, paper (%) | grid acc, ours (%) "
        "| train time, ours |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row, label in protocols.ROWS.items():
        paper_grid = f"{paper[row]:.1f}" if row in paper else MISSING
        paper_clean = f"{paper_std[row]:.2f}" if row in paper_std else MISSING
        if row in rows:
            ours = [_percent(rows[row], "clean_accuracy"), _percent(rows[row], "grid_accuracy"), _train_time(rows[row])]
            left = [seed for seed in info.get("seeds", {}).get(row, []) if str(seed) not in rows[row]["seeds"]]
            if left:
                ours[0] += f" (seed {', '.join(map(str, left))} pending)"
        elif row in requested:
            ours = [runs.NO_DATA if info["data"].startswith(runs.NO_DATA) else PENDING] * 3
        else:
            ours = ["not run"] * 3
        lines.append(f"| {label} | {paper_clean} | {ours[0]} | {paper_grid} | {ours[1]} | {ours[2]} |")
    lines += _paired_lines(results.get("paired", []))
    lines += _regime_lines(rows)
    lines += _graded_regime_lines(rows)
    several_seeds = any(len(row["seeds"]) > 1 for row in rows.values())
    lines += [
        "",
        f"Ours: {info['network']}, {info['subset']}, {_count(info['epochs'], 'epoch')}, "
        f"{info.get('recipe', protocols.FLAGFILE_RECIPE)}; standard accuracy on {info['test_examples']} test images, "
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
    return "; ".join(f"{where}: {', '.join(names)}" for where, names in by_machine.items()) or "nothing yet"


def _precisions(by_run: dict[str, str]) -> str:
    """Each dtype policy the finished runs trained in, with their names."""
    runs_of: dict[str, list[str]] = {}
    for run, policy in by_run.items():
        runs_of.setdefault(policy, []).append(run)
    return "; ".join(f"{policy}: {', '.join(names)}" for policy, names in runs_of.items()) or "nothing yet"


def write_csv(path: Path, fields: Sequence[str], rows: Sequence[Mapping]) -> None:
    """Writes `rows` as a CSV file of the columns `fields` (other keys left out), atomically."""
    with files.atomic_path(path) as partial, partial.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
