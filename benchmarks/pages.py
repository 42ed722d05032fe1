"""The documentation's measured numbers, rendered from the committed records under docs/results.

Every measured number of the documentation (README.md, models/README.md and the pages under docs/) sits between cog
markers (HTML comments, invisible in the rendered page) whose code calls the functions below; they read the records
(results.json, metrics.json, ablation.json, the benchmarks' CSV and JSON files) and return Markdown. A number no
committed record holds is not stated on any page. One command renders every page:

    python -m benchmarks.pages            # rewrite the generated spans of every page (cog -r)
    python -m benchmarks.pages --check    # exit 1, with a diff, when a page disagrees with its records

`tests/test_pages.py` re-renders every page in memory and fails when one differs from what is committed.
`code_layout_table()` renders the README's code-layout table from the tree instead: each module beside its
docstring's first line. `readme_results_table()` returns the README's headline table (the CPU regime, with links to
its records); to keep it rendered, put in README.md

    <!-- [[[cog
    from benchmarks import pages
    cog.out(pages.readme_results_table())
    ]]] -->
    <!-- [[[end]]] -->

and the page becomes one of `PAGES`: every page with a cog block is one.
"""

from __future__ import annotations

import ast
import csv
import functools
import json
import re
import statistics
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common.protocols import CAPACITY_WIDTH, ROWS, SELECTION_GRID
from benchmarks.common.publishing import TRAINING_REGIME_RECORD
from benchmarks.finetune import BUDGET_MINUTES, TARGET

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
# The pages rendered from records, relative to the repository's root: README.md, models/README.md and every .md under
# docs/ that holds a cog span.
PAGES = tuple(
    page
    for page in sorted(
        {
            "README.md",
            "models/README.md",
            *(str(path.relative_to(ROOT)) for path in (ROOT / "docs").rglob("*.md")),
        }
    )
    if (ROOT / page).exists() and "[[[cog" in (ROOT / page).read_text(encoding="utf-8")
)
WIDTH = 120
REGIME = "cifar10_cpu_regime"
CONFIRMATION_ANCHOR = "confirmatory-replication-pre-registered-2026-12-06-before-its-first-run"
# What each row's "train" accuracy (Keras' acc_adv of its last epoch, training mode) was measured on.
TRAIN_BATCH = {
    "std": "random ±4 px shift",
    "da": "one random t",
    "da_kl": "one random t",
    "at": "worst of 10",
    "at_kl": "worst of 10",
    "at_l2": "worst of 10",
    "grn": "one random t",
}


# --- reading the records ------------------------------------------------------------------------------------------


@functools.cache
def _json(relative: str) -> dict:
    return json.loads((RESULTS / relative).read_text())


@functools.cache
def _csv(relative: str) -> tuple[dict, ...]:
    with (RESULTS / relative).open(newline="") as file:
        return tuple(csv.DictReader(file))


def metrics(folder: str, run: str) -> dict:
    """A run's metrics.json, e.g. `metrics("cifar10_cpu_regime", "at_seed0")`."""
    return _json(f"{folder}/{run}/metrics.json")


def measured(folder: str, run: str) -> dict | None:
    """A run's measured.json (date and machine), or None where the run recorded none."""
    path = RESULTS / folder / run / "measured.json"
    return json.loads(path.read_text()) if path.exists() else None


def value(folder: str, run: str, name: str) -> float:
    """One number of a run's metrics.json (`train_accuracy`: its last epoch's acc_adv)."""
    record = metrics(folder, run)
    if name == "train_accuracy":
        logs = record["final_train_logs"]
        return float(logs.get("acc_adv", logs.get("acc_nat")))
    return float(record[name])


# --- formatting ---------------------------------------------------------------------------------------------------


def pct(fraction: float, digits: int = 1) -> str:
    """A fraction in per cent, without the sign: `0.7882` -> `78.8`."""
    return f"{100 * fraction:.{digits}f}"


def points(fraction: float, digits: int = 1) -> str:
    """A difference of fractions in signed points, with a true minus sign: `-0.017` -> `−1.7`."""
    return f"{100 * fraction:+.{digits}f}".replace("-", "−")


def interval(ci: Sequence[float], signed: bool = True) -> str:
    """`[+2.0, +5.6]` (signed points) or `[48.7, 53.0]` (per cent)."""
    show = points if signed else pct
    return f"[{show(ci[0])}, {show(ci[1])}]"


def p_value(p: float) -> str:
    """McNemar's p as the pages print it: `4e-5` below 0.001, else two significant digits."""
    if p < 0.001:
        mantissa, exponent = f"{p:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{p:.2g}"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def fastest_minutes(record: dict) -> float:
    """A run's fastest epoch x epochs, in minutes (what a quiet machine takes)."""
    return min(record["epoch_seconds"]) * len(record["epoch_seconds"]) / 60


def diff(d: dict) -> str:
    """A paired difference: `+3.8 [+2.0, +5.6]`."""
    return f"{points(d['difference'])} {interval(d['ci'])}"


def diff_full(d: dict) -> str:
    """A paired difference with McNemar's p and the discordant counts: `+3.8 [+2.0, +5.6], p = 4e-5 (205 / 129)`."""
    return f"{diff(d)}, p = {p_value(d['mcnemar_p'])} ({d['b_only']} / {d['a_only']})"


def prose(text: str) -> str:
    """Markdown prose wrapped at the pages' width: paragraphs and `- ` / `1. ` list items, blank-line separated."""
    blocks = []
    for block in textwrap.dedent(text).strip().split("\n\n"):
        flat = " ".join(block.split())
        marker = flat.split(" ", 1)[0] + " " if flat[:2] == "- " or flat.split(" ", 1)[0].rstrip(".").isdigit() else ""
        blocks.append(
            textwrap.fill(
                flat,
                WIDTH,
                subsequent_indent=" " * len(marker),
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n\n".join(blocks) + "\n"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> str:
    """A Markdown table, columns from `right_from` on right-aligned."""
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _without_title(markdown: str) -> str:
    """A generated Markdown file without its `# ` title (the page has its own headings)."""
    lines = markdown.splitlines()
    while lines and (lines[0].startswith("# ") or not lines[0].strip()):
        lines.pop(0)
    return "\n".join(lines) + "\n"


# --- paired comparisons -------------------------------------------------------------------------------------------


def recorded_pair(folder: str, b: str, a: str, seed: int) -> dict:
    """The paired difference b − a of a paper table's results.json (`paired`), as the benchmark recorded it."""
    for entry in _json(f"{folder}/results.json")["paired"]:
        if (entry["b"], entry["a"], entry["seed"]) == (b, a, seed):
            return entry
    raise KeyError(f"{folder}/results.json records no pair {b} − {a} on seed {seed}")


@functools.cache
def computed_pair(b: tuple[str, str], a: tuple[str, str]) -> dict:
    """Grid accuracy of run b minus run a, `(folder, run)` each, paired over their graded images (report.py)."""
    from invariance_tf import report  # TensorFlow loads with the package: only where a pair is computed

    records = [metrics(*run) for run in (a, b)]
    report.check_paired(*records, ("/".join(a), "/".join(b)))
    return report.paired_difference(*(report.from_bits(record["grid_correct"]) for record in records))


def ablation_pair(factor: str, seed: int) -> dict:
    """A factor's entry of ablation.json on one seed: at, at_kl, grid_difference, gap_change."""
    return _json("cifar10_ablation_mini/ablation.json")["factors"][factor][str(seed)]


# --- the CPU regime -----------------------------------------------------------------------------------------------


def regime_runs(folder: str = REGIME) -> list[tuple[str, int]]:
    """(row, seed) of every finished run of a paper table, in the paper's row order."""
    seeds = _json(f"{folder}/results.json")["protocol"]["seeds"]
    return [
        (row, seed)
        for row in ROWS
        for seed in seeds.get(row, [])
        if (RESULTS / folder / f"{row}_seed{seed}" / "metrics.json").exists()
    ]


def _machine(folder: str, run: str) -> str:
    record = measured(folder, run)
    if record is None:
        return "not recorded"
    reason = record["machine"].get("precision_auto", "")
    kind = "AMX" if "amx" in reason else "AVX512_BF16" if "avx512_bf16" in reason else "no bf16"
    return f"{record['machine']['cpu']} ({kind}), {record['date'][:10]}"


@functools.cache
def run_cost(folder: str, run: str) -> tuple[int, int]:
    """A run's trainable parameters and MACs per image.

    From its metrics.json, else from its network rebuilt from its config.json (runs recorded before metrics.json
    carried them).
    """
    record = metrics(folder, run)
    if "parameters" in record and record.get("macs_per_image"):
        return record["parameters"], record["macs_per_image"]
    from invariance_tf import builders, data
    from invariance_tf.experiment_config import ExperimentConfig
    from invariance_tf.networks import cost

    config = ExperimentConfig.from_json(_json(f"{folder}/{run}/config.json"))
    network = builders.build_network(config, data.dataset_info(config.dataset))
    return cost.parameter_count(network), cost.macs_per_image(network)


def regime_table(folder: str = REGIME) -> str:
    """Every run of the CPU regime: accuracies, its training accuracy, network cost, training time and machine.

    What is matched across rows stands beside them: parameters and MACs per image of the network, and training
    time (summed, and the fastest epoch times the epochs, the fair figure when the machine was shared).
    """
    rows = []
    for row, seed in regime_runs(folder):
        run = f"{row}_seed{seed}"
        record = metrics(folder, run)
        rows.append(
            [
                ROWS[row],
                seed,
                pct(record["clean_accuracy"]),
                f"{pct(record['grid_accuracy'])} {interval(record['grid_accuracy_ci95'], signed=False)}",
                pct(record["worst_of_10_accuracy"]),
                f"{pct(value(folder, run, 'train_accuracy'))} ({TRAIN_BATCH[row]})",
                f"{run_cost(folder, run)[0]:,} / {run_cost(folder, run)[1] / 1e6:.1f}",
                f"{minutes(record['train_seconds'])} ({fastest_minutes(record):.1f} min)",
                _machine(folder, run),
            ]
        )
    header = [
        "method",
        "seed",
        "clean (%)",
        "grid (%) [95 % CI]",
        "test worst-of-10 (%)",
        "train, own CE batch (%)",
        "parameters / MMACs per image",
        "training: summed (fastest epoch × epochs)",
        "machine, date",
    ]
    return table(header, rows, right_from=1)


def regime_pairs(folder: str = REGIME) -> str:
    """The paired differences a paper table's results.json records, one line per pair and seed."""
    rows = [
        [
            f"{ROWS[entry['b']]} − {ROWS[entry['a']]}",
            entry["seed"],
            f"**{diff(entry)}**" if entry["ci"][0] > 0 or entry["ci"][1] < 0 else diff(entry),
            p_value(entry["mcnemar_p"]),
            f"{entry['b_only']} / {entry['a_only']}",
            entry["examples"],
        ]
        for entry in _json(f"{folder}/results.json")["paired"]
    ]
    header = ["difference (b − a)", "seed", "Δ grid, points [95 % CI]", "McNemar p", "b only / a only", "images"]
    return table(header, rows)


def regime_gap(row: str, seed: int, folder: str = REGIME) -> float:
    """A run's training accuracy on its own CE batch minus its worst-of-10 test accuracy (a fraction)."""
    run = f"{row}_seed{seed}"
    return value(folder, run, "train_accuracy") - value(folder, run, "worst_of_10_accuracy")


def time_ratio(b: tuple[str, str], a: tuple[str, str]) -> str:
    """Training time of run b over run a, `(folder, run)` each, in per cent of a's."""
    return f"{100 * metrics(*b)['train_seconds'] / metrics(*a)['train_seconds']:.0f} %"


# The README's G-ResNet row, decided before its run: the fair G-row of issue #35 (about ResNet-9's parameters) with
# Cohen & Welling's flatten head, seed 0 (it pairs with D.A.'s seed 0); the time-matched p4 G-ResNet-8 until it exists.
README_GRN = ("cifar10_cpu_regime_grn_flatten", "grn_seed0")
README_GRN_NAME = "G-ResNet-9 p4m"
README_GRN_LABEL = f"{README_GRN_NAME} (seed 0)"


def readme_runs(row: str) -> list[tuple[str, str, int]]:
    """(folder, run, seed) of each run the README's table shows for `row`."""
    if row == "grn" and (RESULTS / README_GRN[0] / README_GRN[1] / "metrics.json").is_file():
        return [(*README_GRN, 0)]
    return [(REGIME, f"{row}_seed{seed}", seed) for r, seed in regime_runs() if r == row]


def readme_results_table(prefix: str = "docs/") -> str:
    """The README's headline table: the CPU regime per row and seed, each cell's run linked to its metrics.json.

    `prefix` is the path from the README to docs/ ("docs/" at the repository's root).
    """
    results = _json(f"{REGIME}/results.json")
    paper = {"std": 9.5, "da": 58.3, "da_kl": 73.3, "at": 71.0, "at_kl": 78.8, "at_l2": 77.1, "grn": 71.6}
    rows = []
    for row in ROWS:
        runs = readme_runs(row)
        if not runs:
            continue
        cells = []
        for name in ("clean_accuracy", "grid_accuracy"):
            cells.append(" / ".join(pct(value(folder, run, name)) for folder, run, _ in runs))
        links = ", ".join(f"[seed {seed}]({prefix}results/{folder}/{run}/metrics.json)" for folder, run, seed in runs)
        parameters, macs = run_cost(*runs[0][:2])
        fastest = " / ".join(f"{fastest_minutes(metrics(folder, run)):.1f} min" for folder, run, _ in runs)
        label = README_GRN_LABEL if runs[0][0] == README_GRN[0] else ROWS[row]
        rows.append([label, *cells, f"{paper[row]:.1f}", f"{parameters:,} / {macs / 1e6:.1f} / {fastest}", links])
    pairs = [
        f"{ROWS[e['b']]} − {ROWS[e['a']]} (seed {e['seed']}): {diff(e)}"
        for e in results["paired"]
        if (e["b"], e["a"]) in (("at_kl", "at"), ("da_kl", "da"))
    ]
    if readme_runs("grn")[0][0] == README_GRN[0]:
        grn_da = computed_pair(README_GRN, (REGIME, "da_seed0"))
        pairs.append(f"{README_GRN_NAME} − D.A. (seed 0): {diff(grn_da)}")
        kl_grn = computed_pair((REGIME, "da_kl_seed0"), README_GRN)
        pairs.append(f"D.A.+KL − {README_GRN_NAME} (seed 0): {diff(kl_grn)}")
    header = [
        "method",
        "clean (%), seeds 0 / 1",
        "grid (%), seeds 0 / 1",
        "grid, paper (%)",
        "parameters / MMACs / training (fastest epoch × epochs), seeds 0 / 1",
        "record",
    ]
    return (
        table(header, rows, right_from=1)
        + "\nPaired grid differences on each seed's 2,000 grid images (bootstrap 95 % interval): "
        + "; ".join(pairs)
        + f". All runs: [table.md]({prefix}results/{REGIME}/table.md), "
        + f"[results.json]({prefix}results/{REGIME}/results.json). The regime was chosen on test images "
        + f"([what that means]({prefix}RESULTS.md#choices-made-on-test-images)); the pre-registered "
        + f"[confirmatory replication]({prefix}RESULTS.md#{CONFIRMATION_ANCHOR}) "
        + "tests its headline on images no record had graded.\n"
    )


# --- the ablation, the cost regime, λ, fine-tuning ---------------------------------------------------------------


def ablation_table() -> str:
    """ablation.md (every factor, both seeds) without its title, rendered from ablation.json."""
    from benchmarks import ablation

    return _without_title(ablation.table(_json("cifar10_ablation_mini/ablation.json")))


COST_RUNS = {
    ("A.T.", "1"): "at_k1_seed0",
    ("A.T.", "10"): "at_k10_seed0",
    ("A.T.", "20"): "at_k20_seed0",
    ("A.T.+KL", "1"): "at_kl_k1_seed0",
    ("A.T.+KL", "10"): "at_kl_k10_seed0",
    ("A.T.+KL", "20"): "at_kl_k20_seed0",
    ("S-PGD-5 A.T.", ""): "spgd_at_seed0",
    ("S-PGD-5 A.T.+KL", ""): "spgd_at_kl_seed0",
}


def cost_rows(folder: str) -> dict[str, dict]:
    """cost.csv of a cost figure, by run folder name."""
    by_method = {(row["method"].replace("S-PGD-5, ", "S-PGD-5 "), row["k"]): row for row in _csv(f"{folder}/cost.csv")}
    return {run: by_method[key] for key, run in COST_RUNS.items() if key in by_method}


def cost_table(folder: str) -> str:
    """A cost figure's points: training time (summed, and fastest epoch × epochs where recorded), accuracies."""
    rows = []
    for (method, k), run in COST_RUNS.items():
        row = cost_rows(folder).get(run)
        if row is None:
            continue
        time = minutes(float(row["train_seconds"]))
        if row.get("train_seconds_at_fastest_epoch"):
            time += f" ({minutes(float(row['train_seconds_at_fastest_epoch']))})"
        rows.append(
            [method, k or "–", time, f"{pct(float(row['clean_accuracy']))} %", f"{pct(float(row['grid_accuracy']))} %"]
        )
    return table(["method", "k", "training time", "clean acc.", "grid acc."], rows, right_from=2)


def cost_time(folder: str, run: str) -> float:
    return float(cost_rows(folder)[run]["train_seconds"])


def cost_pair(b: str, a: str, folder: str = "cifar10_cost_regime") -> dict:
    return computed_pair((folder, b), (folder, a))


def lambda_table() -> str:
    """The keras-tuner λ search: each trial's λ and its validation accuracies."""
    trials = sorted(_csv("cifar10_lambda_regime/trials.csv"), key=lambda trial: float(trial["lambda_reg"]))
    best = _json("cifar10_lambda_regime/best.json")["trial_id"]
    lam = ["λ"] + [
        f"**{float(t['lambda_reg']):.3g}**" if t["trial_id"] == best else f"{float(t['lambda_reg']):.3g}"
        for t in trials
    ]
    grid = ["validation grid acc. (500 images)"] + [f"{pct(float(t['objective']))} %" for t in trials]
    clean = ["validation clean acc."] + [f"{pct(float(t['clean_accuracy']))} %" for t in trials]
    training = ["trial time"] + [minutes(float(t["seconds"])) for t in trials]
    return table(lam, [grid, clean, training])


def lambda_search_minutes() -> str:
    return minutes(sum(float(t["seconds"]) for t in _csv("cifar10_lambda_regime/trials.csv")))


LAMBDA_RUN = ("cifar10_lambda_regime", "at_kl_k10_lambda3.3_seed0")


def finetune_table() -> str:
    """finetune.csv: the fine-tuned runs and their comparators, as finetune.md lays them out."""
    return _without_title((RESULTS / "cifar10_finetune" / "finetune.md").read_text())


def finetune_row(run: str) -> dict:
    """One row of finetune.csv by its `run` ("da_kl_e2", "at_l2 (from scratch)", ...)."""
    for row in _csv("cifar10_finetune/finetune.csv"):
        if row["run"] == run:
            return row
    raise KeyError(run)


def finetune_scratch_note() -> str:
    """Where finetune.md's from-scratch rows come from: the CPU regime's seed-0 runs, graded as the fine-tuned ones."""
    config = _json("cifar10_cpu_regime/at_l2_seed0/config.json")
    return prose(
        f"""The *from scratch* rows are the seed-0 runs of the [CPU regime](results/cifar10_cpu_regime/table.md)
        ({config["epochs"]} epochs on {config["train_examples"]:,} training images, on the same kind of machine),
        graded as the fine-tuning runs are: clean accuracy on all 10,000 test images, grid accuracy on the same
        {config["grid_examples"]:,} (drawn with seed {config["seed"]}). The fine-tuning runs of the first five rows
        trained on all 50,000 training images; the recipe's runs on the 45,000 left after its 5,000 validation
        images."""
    )


def finetune_summary() -> str:
    """What finetune.csv shows: the best fine-tuned run against the best from scratch, and the target."""
    rows = _csv("cifar10_finetune/finetune.csv")
    tuned = [row for row in rows if "fine-tuned" in row["method"]]
    scratch = [row for row in rows if "from scratch" in row["run"]]
    best, best_scratch = (max(group, key=lambda row: float(row["grid_accuracy"])) for group in (tuned, scratch))
    fast = min(tuned, key=lambda row: float(row["fastest_total_minutes"]))
    met = [
        row["run"]
        for row in tuned
        if float(row["clean_accuracy"]) >= TARGET["clean_accuracy"]
        and float(row["grid_accuracy"]) >= TARGET["grid_accuracy"]
        and float(row["fastest_total_minutes"]) <= BUDGET_MINUTES
    ]

    def described(row: dict) -> str:
        return (
            f"{pct(float(row['grid_accuracy']))} % grid, {pct(float(row['clean_accuracy']))} % clean, "
            f"{float(row['fastest_total_minutes']):.1f} min"
        )

    return prose(
        f"""Within {BUDGET_MINUTES:g} minutes at the fastest epochs' pace, the target (≥
        {pct(TARGET["clean_accuracy"], 0)} % clean and ≥ {pct(TARGET["grid_accuracy"], 0)} % grid accuracy) is
        {"met by " + ", ".join(met) if met else "**met by no fine-tuned run**"}. The most robust fine-tuned run is
        {best["run"]} ({best["method"]}, {best["epochs"]} epochs: {described(best)}, std pre-training included); the
        most robust from scratch is {best_scratch["run"]} ({described(best_scratch)}). The quickest fine-tuning,
        {fast["run"]}, reaches {described(fast)}."""
    )


RECIPE = "cifar10_finetune_recipe"


def recipe_selection_table() -> str:
    """selection.json of `benchmarks.finetune_recipe`: every candidate's validation numbers and minutes."""
    selection = _json(f"{RECIPE}/selection.json")
    rows = [
        [
            f"`{entry['name']}`" + (" **chosen**" if entry["name"] == selection["chosen"] else ""),
            entry["method"],
            str(entry["epochs"]),
            f"{entry['lr']:g}",
            pct(entry["val_clean_accuracy"]),
            pct(entry["val_worst_of_10_accuracy"]),
            pct(entry["val_grid_accuracy"]),
            f"{entry['fastest_total_minutes']:.1f}",
            f"{entry['total_minutes']:.1f}",
        ]
        for entry in selection["candidates"]
    ]
    header = [
        "candidate",
        "method",
        "epochs",
        "peak lr",
        "val clean (%)",
        "val worst-of-10 (%)",
        "val grid (%)",
        "min, fastest epochs",
        "min, summed",
    ]
    return table(header, rows, right_from=2)


def recipe_result() -> str:
    """The choice, its test numbers read once (chosen_test.json), the target, and the pair with A.T.+L2 from scratch."""
    selection, chosen = _json(f"{RECIPE}/selection.json"), _json(f"{RECIPE}/chosen_test.json")
    run = metrics(RECIPE, f"{chosen['chosen']}_seed0")
    scratch = metrics("cifar10_cpu_regime", "at_l2_seed0")
    pair = computed_pair((RECIPE, f"{chosen['chosen']}_seed0"), ("cifar10_cpu_regime", "at_l2_seed0"))
    checks = {
        f"clean ≥ {pct(TARGET['clean_accuracy'], 0)} %": chosen["clean_accuracy"] >= TARGET["clean_accuracy"],
        f"grid ≥ {pct(TARGET['grid_accuracy'], 0)} %": chosen["grid_accuracy"] >= TARGET["grid_accuracy"],
        f"≤ {BUDGET_MINUTES:g} minutes": chosen["fastest_total_minutes"] <= BUDGET_MINUTES,
    }
    verdict = "**met**" if all(checks.values()) else "**not met**"
    parts = "; ".join(f"{name}: {'yes' if ok else 'no'}" for name, ok in checks.items())
    scratch_minutes = fastest_minutes(scratch)
    return prose(
        f"""The rule chose `{chosen["chosen"]}` ({selection["reason"]}). Its test numbers, read once from its
        run's [metrics.json](results/{RECIPE}/{chosen["chosen"]}_seed0/metrics.json): **{pct(chosen["clean_accuracy"])}
        %** clean accuracy on all {run["test_examples"]:,} test images and **{pct(chosen["grid_accuracy"])} %** grid
        accuracy on {run["grid_examples"]:,} (95 % interval {interval(run["grid_accuracy_ci95"], signed=False)}), in
        {chosen["fastest_total_minutes"]:.1f} minutes of training at the fastest epochs' pace, std pre-training
        included ({chosen["total_minutes"]:.1f} summed). The target (≥ {pct(TARGET["clean_accuracy"], 0)} % clean,
        ≥ {pct(TARGET["grid_accuracy"], 0)} % grid, ≤ {BUDGET_MINUTES:g} minutes) is {verdict} ({parts}).

        Against A.T.+L2 trained from scratch in the CPU regime (seed 0, {pct(scratch["clean_accuracy"])} % clean,
        {pct(scratch["grid_accuracy"])} % grid, {scratch_minutes:.1f} minutes at its fastest epochs' pace), paired
        over the same {pair["examples"]:,} grid images: grid accuracy {points(pair["difference"])} points
        {interval(pair["ci"])} (McNemar p {pair["mcnemar_p"]:.2g}; {pair["b_only"]} images only the recipe gets
        right, {pair["a_only"]} only A.T.+L2 from scratch).

        {recipe_in_quickstart(run)}"""
    )


QUICKSTART_MINUTES = 10


def recipe_in_quickstart(run: dict) -> str:
    """Whether the chosen fine-tuning fits the quickstart's 10 minutes beside its start-up and evaluation."""
    quickstart = _json("quickstart/metrics.json")
    timing = (RESULTS / "quickstart" / "command_seconds.txt").read_text()
    command = float(re.search(r"train\+evaluate (\d+(?:\.\d+)?) s", timing).group(1))
    overhead = (command - quickstart["train_seconds"]) / 60
    tuning = fastest_minutes(run)
    fits = tuning + overhead <= QUICKSTART_MINUTES
    return (
        f"The quickstart ships its std classifier, so only the fine-tuning counts: {tuning:.1f} minutes at the "
        f"fastest epochs' pace, plus {overhead:.1f} minutes of start-up and evaluation (its record), "
        + (
            f"fit in its {QUICKSTART_MINUTES} minutes, so the quickstart uses the recipe."
            if fits
            else f"exceed its {QUICKSTART_MINUTES} minutes, so the quickstart stays as it is."
        )
    )


def quickstart_measured() -> str:
    """The quickstart's measurement (docs/results/quickstart: metrics.json and command_seconds.txt)."""
    record = _json("quickstart/metrics.json")
    epochs = record["epoch_seconds"]
    timing = (RESULTS / "quickstart" / "command_seconds.txt").read_text().strip()
    return prose(
        f"""Measured with the README's command in a fresh clone (2026-12-01, 2 quiet AMD EPYC (Zen 4) cores,
        {record["precision"]}): {pct(record["clean_accuracy"])} % clean accuracy on {record["test_examples"]:,} test
        images, {pct(record["worst_of_10_accuracy"])} % worst-of-10, **{pct(record["grid_accuracy"])} %** grid
        accuracy on {record["grid_examples"]:,} (95 % interval {interval(record["grid_accuracy_ci95"], signed=False)});
        epochs of {min(epochs):.0f}–{max(epochs):.0f} s, {record["train_seconds"]:.0f} s of training; the command's
        wall times: {timing} (`runs/quickstart/metrics.json`, copied to
        [docs/results/quickstart](results/quickstart/metrics.json)). The Intel Xeon and AVX2-only EPYC kinds of
        machine have not run this quickstart yet."""
    )


def shipped_model() -> str:
    """models/README.md's description of the shipped std classifier, from its run's metrics.json."""
    record = metrics("cifar10_finetune", "std_seed0")
    return prose(
        f"""Not robust: {pct(record["clean_accuracy"])} % clean accuracy on all
        {record["test_examples"]:,} test images, {pct(record["grid_accuracy"])} % grid accuracy on
        {record["grid_examples"]:,} of them; {minutes(record["train_seconds"])} of training
        ({run_date("cifar10_finetune", "std_seed0")},
        [metrics.json](../docs/results/cifar10_finetune/std_seed0/metrics.json))."""
    )


def evaluation_table(relative: str) -> str:
    """An evaluation.json's attacks: accuracy, 95 % interval, seconds, model evaluations (refined: on top of grid)."""
    record = _json(relative)
    rows = []
    for attack, result in record.items():
        extra = "+" if attack == "refined" else ""
        evaluations = result.get("evaluations", result["examples"])
        name = {"grid": "grid (early exit)"}.get(attack, attack)
        accuracy = f"{pct(result['accuracy'])} %"
        rows.append(
            [
                name,
                f"**{accuracy}**" if attack == "refined" else accuracy,
                interval(result["ci95"], signed=False),
                f"{extra}{result['seconds']:.1f}",
                f"{extra}{evaluations:,}" + (f" of {775 * result['examples']:,}" if attack == "grid" else ""),
            ]
        )
    return table(["attack", "accuracy", "95 % CI", "seconds", "model evaluations"], rows)


def refined_summary(relative: str) -> str:
    """How much the refined attack took off the grid's accuracy, and for how much more time."""
    refined = _json(relative)["refined"]
    grid = _json(relative)["grid"]
    survivors = round(refined["grid_accuracy"] * refined["examples"])
    return prose(
        f"""Of the {survivors} grid survivors, {refined["broken_beyond_grid"]} break in the continuous box: the grid
        overestimates this model's robustness by {pct(refined["grid_overestimate"])} points, found for
        {100 * refined["seconds"] / grid["seconds"]:.0f} % more time."""
    )


def failure_report(relative: str, class_names: Sequence[str]) -> str:
    """The report attack's fields of an evaluation.json: nested boxes, per class, invariance, KL, worst-of-k's gap."""
    entry = _json(relative)["report"]
    boxes = {(box["shift"], box["angle"]): box["accuracy"] for box in entry["boxes"]}
    angles = sorted({angle for _, angle in boxes})
    box_rows = [
        [f"±{shift:g} px", *(f"{pct(boxes[shift, angle])} %" for angle in angles)]
        for shift in sorted({shift for shift, _ in boxes})
    ]
    class_rows = [
        [class_names[row["label"]], f"{row['examples']}", f"{pct(row['clean'])} %", f"{pct(row['grid'])} %"]
        for row in entry["per_class"]
    ]
    low, median, high = entry["invariance_quartiles"]
    return (
        prose(
            f"""On these {entry["examples"]} test images the prediction survives {pct(entry["mean_invariance"])} %
            of the grid per image on average (quartiles {pct(low)}, {pct(median)}, {pct(high)} %), with a mean
            KL(f(x) || f(T x)) of {entry["mean_kl"]:.3f} nats; grid accuracy is {pct(entry["accuracy"])} %, and
            worst-of-10 ({pct(entry["worst_of_k_accuracy"])} %) overestimates it by
            {points(entry["worst_of_k_overestimate"])} points."""
        )
        + "\n\nGrid accuracy within the nested boxes (|dx|, |dy| ≤ rows; |angle| ≤ columns):\n\n"
        + table(["box", *(f"±{angle:g}°" for angle in angles)], box_rows)
        + "\n\nPer class:\n\n"
        + table(["class", "images", "clean", "grid"], class_rows)
    )


def recipe_table() -> str:
    """The CPU recipe search (recipes.csv): each candidate's accuracies and training time."""
    rows = [
        [
            f"`{row['candidate']}`",
            f"`{row['flags']}`",
            f"{pct(float(row['clean_accuracy']))} %",
            f"{pct(float(row['grid_accuracy']))} %",
            minutes(float(row["train_seconds"])),
            f"{float(row['epoch_seconds_min']):.0f} s",
        ]
        for row in _csv("cifar10_cpu_recipe/recipes.csv")
    ]
    header = ["candidate", "flags", "clean acc. (10,000)", "grid acc. (1,000)", "training", "fastest epoch"]
    return table(header, rows, right_from=2)


def recipe(candidate: str, name: str) -> float:
    for row in _csv("cifar10_cpu_recipe/recipes.csv"):
        if row["candidate"] == candidate:
            return float(row[name])
    raise KeyError(candidate)


# --- older protocols ----------------------------------------------------------------------------------------------


def paper_table(relative: str) -> str:
    """A paper table's table.md as `benchmarks.reproduce` renders it from its results.json, without the title."""
    from benchmarks.common import tables

    results = _json(relative)
    text = _without_title(tables.paper_table(results, list(results["rows"])))
    # Records from before precision was recorded; a seed the protocol listed but nobody ran was stopped, not pending.
    return text.replace(" Precision: nothing yet.", "").replace(" pending)", " not run)")


def mini_cost_table() -> str:
    """The mini scale's cost figure (cifar10_mini_cost.csv)."""
    rows = [
        [
            row["method"],
            row["k"] or "–",
            f"{float(row['train_seconds']):.0f} s",
            f"{pct(float(row['clean_accuracy']))} %",
            f"{pct(float(row['grid_accuracy']))} %",
        ]
        for row in _csv("cifar10_mini_cost.csv")
    ]
    return table(["method", "k", "training time", "clean acc.", "grid acc."], rows, right_from=2)


# --- dates, identities, the confirmatory replication ---------------------------------------------------------------


def run_date(folder: str, run: str) -> str:
    """The day a run finished training (its measured.json), or "not recorded"."""
    record = measured(folder, run)
    return "not recorded" if record is None else record["date"][:10]


def differing_bits(a: tuple[str, str], b: tuple[str, str]) -> tuple[int, int]:
    """How many graded images two runs' `grid_correct` disagree on, and of how many."""
    bits = [metrics(*run)["grid_correct"] for run in (a, b)]
    return sum(x != y for x, y in zip(*bits)), len(bits[0])


def shared(a: str, b: str) -> str:
    """How many of run a's graded test images run b graded too (graded_overlaps.json): `1,000 of 1,000`."""
    for entry in _json("graded_overlaps.json")["test_images"]:
        if (entry["a"], entry["b"]) == (a, b):
            return f"{entry['shared']:,} of {entry['a_images']:,}"
    raise KeyError(f"graded_overlaps.json compares no {a} with {b}")


def lambda_validation_overlap() -> str:
    """How many of the λ search's validation images the later runs of its regime train on: `403 of 500`."""
    record = _json("graded_overlaps.json")["lambda_search"]
    return f"{record['validation_images_trained_on_by_later_run']:,} of {record['validation_examples']:,}"


CONFIRMATION = "cifar10_confirmation"
GRADED_REGIME = ("train_worst_of_10_accuracy", "worst_of_10_accuracy", "train_clean_accuracy", "clean_accuracy")
GRADED_REGIME_HEADER = ["worst-of-10, train (%)", "worst-of-10, test (%)", "clean, train (%)", "clean, test (%)"]


def confirmation_results() -> str:
    """The confirmatory replication's table and paired analysis once its runs' records land, else a line saying so."""
    finished = regime_runs(CONFIRMATION) if (RESULTS / CONFIRMATION / "results.json").exists() else []
    if not finished:
        return prose(
            "*Results: none yet.* No run of the confirmatory replication has committed its record; its table and "
            "paired analysis will be generated here from `docs/results/cifar10_confirmation/results.json` and the "
            "runs' metrics.json when they land."
        )
    parts = ["Runs committed so far (generated from their records):\n", regime_table(CONFIRMATION)]
    graded = [
        [ROWS[row], seed, *(pct(value(CONFIRMATION, f"{row}_seed{seed}", name)) for name in GRADED_REGIME)]
        for row, seed in finished
        if all(name in metrics(CONFIRMATION, f"{row}_seed{seed}") for name in GRADED_REGIME)
    ]
    if graded:
        header = ["method", "seed", *GRADED_REGIME_HEADER]
        parts += [
            "\nRegime, graded alike (inference mode, final weights, the test's all-10 rule, on 2,000 of each run's own "
            "training images):\n",
            table(header, graded),
        ]
    if _json(f"{CONFIRMATION}/results.json").get("paired"):
        parts += ["\nPaired differences on the confirmation set:\n", regime_pairs(CONFIRMATION)]
    verdict = confirmation_verdict()
    if verdict:
        parts += ["", verdict]
    return "\n".join(parts)


def confirmation_verdict() -> str:
    """The pre-registered criterion applied to A.T.+KL - A.T. on the confirmation set, once both records land."""
    pairs = _json(f"{CONFIRMATION}/results.json").get("paired", [])
    found = [pair for pair in pairs if (pair["b"], pair["a"]) == ("at_kl", "at")]
    if not found:
        return ""
    low, high = found[0]["ci"]
    outcome = "**confirmed**: its interval lies above 0" if low > 0 else "**not confirmed**: its interval reaches 0"
    return prose(
        f'The claim under test, "A.T.+KL beats A.T. at CPU scale", is {outcome} '
        f"({points(found[0]['difference'])} [{points(low)}, {points(high)}] grid points on the confirmation set, "
        "the pre-registered criterion)."
    )


# --- performance: XLA and the input pipeline, G-conv throughput -------------------------------------------------


def xla_table() -> str:
    """xla_step.json: each precision and step with XLA off and on, their ratio and each over its limit."""
    rows = _json("xla_step.json")["rows"]
    out = []
    for off in (row for row in rows if not row["xla"]):
        on = next(r for r in rows if r["xla"] and (r["precision"], r["step"]) == (off["precision"], off["step"]))
        precision = off["precision"] + (" (`auto` here)" if off["precision"] == "mixed_bfloat16" else "")
        step = off["step"] + (" (independent searches)" if off["step"] == "A.T.+KL" else "")
        out.append(
            [
                precision,
                step,
                f"{off['step_ms']:.0f} ms",
                f"{on['step_ms']:.0f} ms",
                f"{on['xla_over_no_xla']:.2f}",
                f"{off['step_over_limit']:.2f}",
                f"{on['step_over_limit']:.2f}",
            ]
        )
    header = ["precision", "step", "no XLA", "XLA", "XLA / no XLA", "no XLA / limit", "XLA / limit"]
    return table(header, out, right_from=2)


def xla_summary() -> str:
    """The XLA slow-down's range and bfloat16's step time over float32's without XLA."""
    rows = _json("xla_step.json")["rows"]
    ratios = [row["xla_over_no_xla"] for row in rows if row["xla"]]
    off = {(row["precision"], row["step"]): row["step_ms"] for row in rows if not row["xla"]}
    bf16 = [off[("mixed_bfloat16", step)] / off[("float32", step)] for step in ("A.T.", "A.T.+KL")]
    return prose(
        f"""XLA was slower in every pairing, by {min(ratios):.1f}x to {max(ratios):.1f}x (most likely because TF's
        uncompiled CPU kernels are oneDNN's, with native bfloat16 on AVX512_BF16, and XLA's CPU code does not use
        them; not profiled). So the default of `trainers.fit` is `--jit_compile=false`, and the library's
        `jit_compile="auto"` is off on CPUs as well. The precision that `--precision=auto` picks here
        ({_json("xla_step.json")["auto_precision"]["policy"]}) was the faster of the two without XLA
        ({bf16[0]:.2f}x and {bf16[1]:.2f}x float32's step times)."""
    )


def pipeline_table() -> str:
    """input_pipeline.json: images per second of each augmentation and its multiple of the fastest step's need."""
    record = _json("input_pipeline.json")
    need = record["fastest_step"]["images_per_s"]
    names = {"crop_flip": "crop_flip (the paper's CIFAR setting)", "flip": "flip (the reference's)"}
    rows = [
        [names.get(name, name), f"{p['images_per_s']:,}", f"{p['over_fastest_step']:.0f}x"]
        for name, p in record["pipelines"].items()
    ]
    return table(["augmentation", "images/s", f"/ the fastest step's consumption ({need:.0f} originals/s)"], rows)


def pipeline_margin() -> str:
    """How many times past the goal (goal_over_fastest_step) the slowest and fastest pipelines are."""
    record = _json("input_pipeline.json")
    goal = record["goal_over_fastest_step"]
    over = sorted(p["over_fastest_step"] / goal for p in record["pipelines"].values())
    return prose(
        f"""The goal was {goal:g}x the fastest step measured here; the pipeline as it stands is {over[0]:.0f} to
        {over[-1]:.0f} times past it, so no tf.data setting was changed."""
    )


def gconv_table() -> str:
    """gconv_throughput.json: planar seconds / G-conv seconds (median over adjacent pairs) per layer, policy, pass."""
    record = _json("gconv_throughput/gconv_throughput.json")
    columns = [(policy, kind) for policy in ("float32", "mixed_bfloat16") for kind in ("forward", "forward+backward")]
    layers = dict.fromkeys((r["group"], r["g_channels"], r["planes"], r["side"]) for r in record["records"])
    rows = []
    for group, channels, planes, side in layers:
        ratio = {
            (r["policy"], r["pass"]): r["ratio"]
            for r in record["records"]
            if (r["group"], r["g_channels"], r["planes"], r["side"]) == (group, channels, planes, side)
        }
        cells = [f"{ratio[c]:.2f}" if c in ratio else "–" for c in columns]
        rows.append([f"{group} C={channels} ({planes} planes), {side}×{side}", *cells])
    header = ["layer", "float32 forward", "float32 fwd+bwd", "bfloat16 forward", "bfloat16 fwd+bwd"]
    return table(header, rows)


def gconv_summary() -> str:
    record = _json("gconv_throughput/gconv_throughput.json")
    shares = sorted(r["expansion_share"] for r in record["records"])
    spread = max(abs(r["ratio"] - r["ratio_of_medians"]) for r in record["records"])
    return prose(
        f"""All ratios are at least {record["min_ratio"]:.2f}; the median is {record["median_ratio"]:.2f}
        (goal: {record["goal"]}). The record is
        [gconv_throughput.json](results/gconv_throughput/gconv_throughput.json), measured at a load average of
        {record["load_average"]["start"].split(" on")[0]}–{record["load_average"]["end"]}. The filter expansion is
        at most {pct(record["max_expansion_share"])} % of a G-conv pass (`max_expansion_share`; median
        {pct(shares[len(shares) // 2])} %). A G-conv does the planar conv's work plus the expansion, so ratios
        above 1 are not gains but the noise of a loaded machine: per layer, the paired ratio and the ratio of the
        two medians differ by up to {spread:.2f}."""
    )


def g_network_rate() -> str:
    """gresnet.md §3: the G-networks' training MAC rates against D.A.'s (seed 0, fastest epochs, same images/step)."""
    done = finished_g_rows()
    if ("flatten", 0) not in done:
        return "The fair G-row has not finished a seed-0 run yet.\n"
    da = planar_runs(0)[0]

    def compared(run: tuple[str, str]) -> str:
        macs = run_cost(*run)[1] / run_cost(*da)[1]
        seconds = min(metrics(*run)["epoch_seconds"]) / min(metrics(*da)["epoch_seconds"])
        return (
            f"{macs:.1f}× D.A.'s MACs per image in {seconds:.1f}× its fastest epoch: **{macs / seconds:.2f}× "
            f"D.A.'s MAC rate** (trained on {_machine(*run)})"
        )

    return prose(
        f"""In training, where each step also transforms its images (the same number for every row), the fair
        row (flatten head, seed 0) does {compared(done[("flatten", 0)])}; D.A. ran on {_machine(*da)}. The p4
        G-ResNet-8 of the CPU regime before #35 (float32) did {compared((REGIME, "grn_seed0"))}, on another
        machine kind than D.A., which that ratio mixes in."""
    )


# --- parameter counts and MACs of the networks (computed by building them) ---------------------------------------


@functools.cache
def network_cost(key: str) -> tuple[int, int]:
    """Trainable parameters and MACs per 32×32 image of a named network, built with Keras (no training)."""
    from invariance_tf import networks
    from invariance_tf.networks import cost
    from invariance_tf.networks.g_resnet import g_resnet, planar_counterpart
    from invariance_tf.networks.g_resnet9 import g_resnet9

    builders = {
        "p4m_resnet44_flatten": lambda: g_resnet(44, "p4m", head="flatten"),
        "p4m_resnet44_invariant": lambda: g_resnet(44, "p4m", head="invariant"),
        "p4_resnet44_invariant": lambda: g_resnet(44, "p4", head="invariant"),
        "planar_resnet44": lambda: planar_counterpart(44),
        "paper_resnet44": lambda: networks.build("resnet", n=7),
        "paper_resnet32": lambda: networks.build("resnet", n=5),
        "resnet9_w16": lambda: networks.build("resnet9", width=16),
        "p4_resnet8_3_6_12": lambda: g_resnet(8, "p4", widths=(3, 6, 12), head="invariant"),
        **{
            f"g_resnet9_{group}_{head}": functools.partial(g_resnet9, 16, group, head)
            for group in ("p4", "p4m")
            for head in ("invariant", "flatten")
        },
    }
    model = builders[key]()
    return cost.parameter_count(model), cost.macs_per_image(model)


def g_resnet44_table() -> str:
    """gresnet.md §1: the full-scale G-ResNet44s and the planar ResNet44 (trainable parameters, MMACs per image)."""
    rows = [
        ("p4m G-ResNet44, `--g_head=flatten` (Cohen's, the flagfiles)", "p4m_resnet44_flatten", True),
        ("p4m G-ResNet44, `--g_head=invariant` (max over the group, then pooling)", "p4m_resnet44_invariant", False),
        ("p4 G-ResNet44 16/32/64, invariant head (the flagfiles before #35)", "p4_resnet44_invariant", False),
        ("planar ResNet44 32/64/128 (Cohen's Z2 baseline)", "planar_resnet44", False),
    ]
    out = []
    for label, key, bold in rows:
        parameters, macs = network_cost(key)
        out.append([label, f"**{parameters:,}**" if bold else f"{parameters:,}", f"{macs / 1e6:,.0f}"])
    return table(["network", "trainable parameters", "MMACs / 32×32 image"], out)


@functools.cache
def p4m_resnet44_batch_norm() -> tuple[int, int]:
    """Cohen's p4m G-ResNet44 (flatten head): its trainable BN γ/β scalars and its BN moving statistics."""
    import math

    from invariance_tf.networks.g_resnet import g_resnet

    model = g_resnet(44, "p4m", head="flatten")

    def normalisations(layer):
        for child in getattr(layer, "layers", None) or []:
            if "Normalization" in type(child).__name__:
                yield child
            else:
                yield from normalisations(child)

    trainable = sum(math.prod(w.shape) for bn in normalisations(model) for w in bn.trainable_weights)
    state = model.count_params() - sum(math.prod(w.shape) for w in model.trainable_weights)
    return trainable, state


def p4m_count_note() -> str:
    """gresnet.md §1's "how they are counted", its counts computed by building the networks."""
    flatten, invariant = network_cost("p4m_resnet44_flatten")[0], network_cost("p4m_resnet44_invariant")[0]
    gamma_beta, moving = p4m_resnet44_batch_norm()
    return prose(
        f"""**How they are counted.** Parameters are counted the way Cohen & Welling's Chainer code holds them
        (`Link.params()`): conv kernels and biases, BN γ and β, and the linear layer. BN moving statistics are
        state, not parameters. In Keras this is `model.trainable_weights`; `count_params()` would also add the
        {moving:,} moving means and variances. Their README gives 2.62M, and recounting `P4MResNet.py` gives
        exactly 2,622,878, which our network matches ({flatten:,}). The issue quoted 2,619,728, which is the same
        network with the invariant head ({invariant:,}): 45 × 8 × 10 + 10 − (45 × 10 + 10) = 3,150 fewer. The two
        differ by {100 * (flatten - invariant) / flatten:.2f} %. Without BN γ/β the count would be
        {flatten - gamma_beta:,}, which also rounds to {(flatten - gamma_beta) / 1e6:.2f}M. The README's rounding
        therefore cannot say whether they counted BN; their code's `params()` does. `tests/test_g_networks.py`
        checks the count for all three flagfiles (CIFAR-100: 45 × 8 × 90 = {45 * 8 * 90:,} more weights and 90 more
        biases in the head)."""
    )


def g_resnet9_table() -> str:
    """gresnet.md §2: G-ResNet-9 at width 16 beside ResNet-9 (parameters, their difference, MMACs per image)."""
    base = network_cost("resnet9_w16")[0]
    rows = [
        ("ResNet-9", "16/32/64/128", "–", "resnet9_w16"),
        ("G-ResNet-9 p4m (the fair row)", "6/11/23/45", "invariant", "g_resnet9_p4m_invariant"),
        ("G-ResNet-9 p4m (the fair row)", "6/11/23/45", "flatten", "g_resnet9_p4m_flatten"),
        ("G-ResNet-9 p4", "8/16/32/64", "invariant", "g_resnet9_p4_invariant"),
        ("G-ResNet-9 p4", "8/16/32/64", "flatten", "g_resnet9_p4_flatten"),
        ("the CPU regime's GRN before #35 (p4 G-ResNet-8, 3/6/12)", "", "invariant", "p4_resnet8_3_6_12"),
    ]
    out = []
    for label, widths, head, key in rows:
        parameters, macs = network_cost(key)
        change = "–" if key == "resnet9_w16" else f"{100 * (parameters / base - 1):+.1f} %".replace("-", "−")
        if abs(parameters / base - 1) > 0.5:
            change = f"{100 * (parameters / base - 1):+.0f} %".replace("-", "−")
        out.append([label, widths, head, f"{parameters:,}", change, f"{macs / 1e6:.1f}"])
    header = [
        "network (`--width=16`)",
        "G-widths",
        "head",
        "parameters",
        f"vs ResNet-9 w16 ({base:,})",
        "MMACs / image",
    ]
    return table(header, out, right_from=3)


def g_resnet9_mac_ratio() -> str:
    """The fair p4m row's MACs over ResNet-9's: `7.9×`."""
    return f"{network_cost('g_resnet9_p4m_invariant')[1] / network_cost('resnet9_w16')[1]:.1f}×"


GRN_SELECTION = "cifar10_grn_selection"
# (variant, seed) -> the folder of that G-row run; seed 0 pairs with the CPU regime, seed 2 with the confirmation.
# Variants: the fair row's two heads, and the third row at the paper's capacity ratio (seed 0 only).
G_ROWS = {
    **{
        (head, seed): f"cifar10_{'cpu_regime' if seed == 0 else 'confirmation'}_grn_{head}"
        for head in ("flatten", "invariant")
        for seed in (0, 2)
    },
    ("capacity", 0): "cifar10_cpu_regime_grn_capacity",
}
G_LABELS = {
    "flatten": "G-ResNet-9 p4m, flatten head",
    "invariant": "G-ResNet-9 p4m, invariant head",
    "capacity": f"G-ResNet-9 p4m width {CAPACITY_WIDTH} (the paper's capacity ratio), flatten head",
}


def g_selection_table() -> str:
    """The fair G-row's (lr, weight decay) candidates graded on held-out training images, as far as they have run."""
    rows = []
    for path in sorted((RESULTS / GRN_SELECTION).glob("*_seed*/metrics.json")):
        run = path.parent.name
        config, logs, record = (
            _json(f"{GRN_SELECTION}/{run}/{name}") for name in ("config.json", "epoch_logs.json", "metrics.json")
        )
        rows.append(
            [
                config["g_head"],
                f"{config['lr']:g}",
                f"{config['weight_decay']:g}",
                pct(logs["val_worst_of_10_accuracy"]),
                pct(logs["val_acc_nat"]),
                pct(logs["acc_adv"]),
                f"{fastest_minutes(record):.1f}",
                f"{sum(record['epoch_seconds']) / 60:.1f}",
            ]
        )
    header = [
        "head",
        "lr",
        "weight decay",
        "val worst-of-10 (%)",
        "val clean (%)",
        "train acc. (%)",
        "min, fastest epochs",
        "min, summed",
    ]
    selection = RESULTS / GRN_SELECTION / "selection.json"
    candidates = len(SELECTION_GRID["lr"]) * len(SELECTION_GRID["weight_decay"])
    if selection.is_file():
        heads = _json(f"{GRN_SELECTION}/selection.json")["heads"]
        ending = "Chosen by the rule: " + "; ".join(
            f"{head} head: lr {entry['chosen']['lr']:g}, weight decay {entry['chosen']['weight_decay']:g}"
            for head, entry in heads.items()
        )
        ending += "."
    else:
        ending = f"{len(rows)} of {candidates} candidates have finished: no choice yet."
    return table(header, rows, right_from=1) + "\n" + ending + "\n"


def _cost_row(label: str, seed: int, run: tuple[str, str]) -> list[str]:
    record = metrics(*run)
    parameters, macs = run_cost(*run)
    return [
        label,
        str(seed),
        pct(record["clean_accuracy"]),
        pct(record["grid_accuracy"]),
        pct(value(*run, "train_accuracy")),
        f"{parameters:,}",
        f"{macs / 1e6:.1f}",
        f"{fastest_minutes(record):.1f}",
    ]


def finished_g_rows() -> dict[tuple[str, int], tuple[str, str]]:
    """(variant, seed) -> (folder, run) of each G-row run that has finished (`G_ROWS`)."""
    return {
        key: (folder, f"grn_seed{key[1]}")
        for key, folder in G_ROWS.items()
        if (RESULTS / folder / f"grn_seed{key[1]}" / "metrics.json").is_file()
    }


def planar_runs(seed: int) -> tuple[tuple[str, str], tuple[str, str]]:
    """(folder, run) of D.A. and D.A.+KL on `seed`: the CPU regime's seed 0, the confirmation's seed 2."""
    base = REGIME if seed == 0 else CONFIRMATION
    return (base, f"da_seed{seed}"), (base, f"da_kl_seed{seed}")


def side(d: dict) -> str:
    """Where b stands against a by the paired interval of b − a: above, below, or not separated."""
    if d["ci"][0] > 0:
        return "above"
    if d["ci"][1] < 0:
        return "below"
    return "not separated from"


def g_row_finding() -> str:
    """RESULTS.md's finding on the fair G-row (flatten head): against D.A. and D.A.+KL per seed, as far as run."""
    done = finished_g_rows()
    seeds = sorted(seed for head, seed in done if head == "flatten")
    if not seeds:
        return "The fair G-row (issue #35) has not finished a run yet."
    parts = []
    for seed in seeds:
        grn = done[("flatten", seed)]
        da, da_kl = planar_runs(seed)
        above_da, below_kl = computed_pair(grn, da), computed_pair(da_kl, grn)
        parts.append(
            f"seed {seed}: GRN − D.A. = {diff(above_da)} (GRN {side(above_da)} D.A.), D.A.+KL − GRN = "
            f"{diff(below_kl)} (D.A.+KL {side(below_kl)} GRN)"
        )
    return (
        "At ResNet-9's parameters, a p4m G-ResNet-9 with Cohen & Welling's flatten head, trained like D.A. with its "
        "own learning rate and weight decay (chosen on held-out training images), gives "
        + "; ".join(parts)
        + ". The paper's ordering is D.A. < G-ResNet < D.A.+KL."
        + head_finding(done)
        + capacity_finding(done)
    )


def head_finding(done: dict[tuple[str, int], tuple[str, str]]) -> str:
    """The finding's sentence on the invariant head against the flatten head, per seed where both have run."""
    seeds = sorted(seed for head, seed in done if head == "invariant" and ("flatten", seed) in done)
    if not seeds:
        return ""
    parts = []
    for seed in seeds:
        grn = done[("invariant", seed)]
        da, _ = planar_runs(seed)
        head, above_da = computed_pair(done[("flatten", seed)], grn), computed_pair(grn, da)
        parts.append(
            f"seed {seed}: flatten − invariant = {diff(head)} (flatten {side(head)} invariant), "
            f"GRN (invariant) − D.A. = {diff(above_da)}"
        )
    return " The invariant head (the max over the group before the linear layer) against the flatten head, " + (
        "; ".join(parts) + "."
    )


def capacity_finding(done: dict[tuple[str, int], tuple[str, str]]) -> str:
    """The finding's sentence on the third G-row (the paper's capacity ratio), once it has run."""
    if ("capacity", 0) not in done:
        return ""
    grn = done[("capacity", 0)]
    da, da_kl = planar_runs(0)
    above_da, below_kl = computed_pair(grn, da), computed_pair(da_kl, grn)
    (parameters, macs), (da_parameters, da_macs) = run_cost(*grn), run_cost(*da)
    (paper_parameters, paper_macs), (baseline_parameters, baseline_macs) = (
        network_cost("p4m_resnet44_flatten"),
        network_cost("paper_resnet32"),
    )
    return (
        f" At the paper's capacity ratio (width {CAPACITY_WIDTH}: {parameters / da_parameters:.1f}× D.A.'s "
        f"parameters and {macs / da_macs:.0f}× its MACs; the paper's G-ResNet44 has "
        f"{paper_parameters / baseline_parameters:.1f}× and {paper_macs / baseline_macs:.0f}× its ResNet-32's), "
        f"seed 0: GRN − D.A. = {diff(above_da)} (GRN {side(above_da)} D.A.), "
        f"D.A.+KL − GRN = {diff(below_kl)} (D.A.+KL {side(below_kl)} GRN)."
    )


def g_rows_table() -> str:
    """The fair G-row's runs beside D.A. and D.A.+KL of the same seed, and their paired grid differences."""
    done = finished_g_rows()
    if not done:
        return "None of the G-row runs has been made yet.\n"
    rows, pairs = [], []
    for seed in sorted({seed for _, seed in done}):
        da, da_kl = planar_runs(seed)
        rows += [_cost_row("D.A.", seed, da), _cost_row("D.A.+KL", seed, da_kl)]
        variants = [variant for variant in G_LABELS if (variant, seed) in done]
        for variant in variants:
            grn = done[(variant, seed)]
            rows.append(_cost_row(G_LABELS[variant], seed, grn))
            pairs.append(f"GRN ({variant}) − D.A., seed {seed}: {diff_full(computed_pair(grn, da))}")
            pairs.append(f"D.A.+KL − GRN ({variant}), seed {seed}: {diff_full(computed_pair(da_kl, grn))}")
        for b, a in (("flatten", "invariant"), ("capacity", "flatten")):
            if {b, a} <= set(variants):
                pairs.append(f"{b} − {a}, seed {seed}: {diff_full(computed_pair(done[(b, seed)], done[(a, seed)]))}")
    header = ["run", "seed", "clean (%)", "grid (%)", "train acc. (%)", "parameters", "MMACs", "min, fastest epochs"]
    listed = "\n".join(f"- {pair}" for pair in pairs)
    return (
        table(header, rows, right_from=1)
        + "\nPaired grid differences (points, 95 % bootstrap interval, McNemar p, b only / a only):\n\n"
        + listed
        + "\n\n"
        + g_orderings(done)
    )


PAPER_G_ORDER = "D.A. < GRN < D.A.+KL"


def grid_ordering(runs: dict[str, tuple[str, str]]) -> str:
    """The runs from lowest to highest grid accuracy, `<` between neighbours a paired interval separates, else `≈`."""
    ranked = sorted(runs, key=lambda label: value(*runs[label], "grid_accuracy"))
    order = ranked[0]
    for low, high in zip(ranked, ranked[1:]):
        order += f" {'<' if side(computed_pair(runs[high], runs[low])) == 'above' else '≈'} {high}"
    return order


def regime_gaps(train: dict, test: dict) -> dict[str, float]:
    """Train − test accuracy (fractions), clean and worst-of-10, from `train_`-prefixed and test records."""
    return {name: train[f"train_{name}"] - test[name] for name in ("clean_accuracy", "worst_of_10_accuracy")}


def g_regime_table() -> str:
    """gresnet.md: train against test accuracy, graded alike, of the seed-2 G-rows beside D.A. and D.A.+KL."""
    done = finished_g_rows()
    runs = [("D.A.", planar_runs(2)[0]), ("D.A.+KL", planar_runs(2)[1])]
    runs += [(G_LABELS[variant], done[(variant, 2)]) for variant in G_LABELS if (variant, 2) in done]
    rows = [
        [
            label,
            *(pct(value(*run, name)) for name in GRADED_REGIME),
            points(regime_gaps(metrics(*run), metrics(*run))["clean_accuracy"]),
        ]
        for label, run in runs
        if all(name in metrics(*run) for name in GRADED_REGIME)
    ]
    header = ["run (seed 2)", *GRADED_REGIME_HEADER, "clean, train − test (points)"]
    return table(header, rows, right_from=1)


def g_orderings(done: dict[tuple[str, int], tuple[str, str]]) -> str:
    """Per G-row run, the grid ordering of D.A., GRN and D.A.+KL that its two paired intervals give."""
    lines = []
    for (variant, seed), grn in sorted(done.items(), key=lambda item: (item[0][1], list(G_LABELS).index(item[0][0]))):
        da, da_kl = planar_runs(seed)
        order = grid_ordering({"D.A.": da, "GRN": grn, "D.A.+KL": da_kl})
        paper = " (the paper's)" if order == PAPER_G_ORDER else ""
        lines.append(f"- {variant}, seed {seed}: {order}{paper}")
    lead = prose(
        f"""The grid orderings these intervals give, from lowest to highest grid accuracy (`<`: the neighbours'
        paired interval lies above 0, `≈`: it covers 0; the paper's is {PAPER_G_ORDER}):"""
    )
    return lead + "\n" + "\n".join(lines) + "\n"


def g_capacity_summary() -> str:
    """gresnet.md: whether a G-row at the paper's capacity ratio fits the budget (benchmarks.g_capacity's record)."""
    path = RESULTS / "g_capacity" / "g_capacity.json"
    if not path.is_file():
        return "Not measured yet (`python -m benchmarks.g_capacity`).\n"
    record = _json("g_capacity/g_capacity.json")
    width = str(record["capacity_width"])
    wide, fair = record["widths"][width], record["widths"]["16"]
    verdict = "fits" if record["fits"] else "does not fit"
    return prose(
        f"""The paper's ratio is {record["paper_ratio"]:.2f}× the baseline's parameters. G-ResNet-9 p4m at width
        {width} has {wide["parameters"]:,} parameters and {wide["macs_per_image"] / 1e6:,.0f} MMACs per image
        (width 16: {fair["parameters"]:,} and {fair["macs_per_image"] / 1e6:,.0f}). Measured in one run
        ({record["policy"]}, batch {record["batch_size"]}, load {record["load_average"]}), its training step takes
        {record["step_time_ratio"]:.2f}× the fair row's. At the fastest epoch of the fair row's selection runs (the
        same network and protocol, {record["fair_fastest_epoch_seconds"]:.0f} s), {record["epochs"]} epochs project to
        **{record["projected_hours"]:.1f} h**: it {verdict} the {record["budget_hours"]:g} h budget. Record:
        [g_capacity.json](results/g_capacity/g_capacity.json).{g_capacity_recheck(record)}"""
    )


def g_capacity_recheck(first: dict) -> str:
    """g_capacity re-run where the capacity row's first epochs trained: its ratio, and its speed against `first`'s."""
    path = RESULTS / "g_capacity" / "g_capacity_recheck.json"
    if not path.is_file():
        return ""
    again = _json("g_capacity/g_capacity_recheck.json")
    slower = {
        width: statistics.median(again["round_seconds"][width]) / statistics.median(first["round_seconds"][width])
        for width in first["round_seconds"]
    }
    return (
        f" Re-run on the machine that trained the capacity row's first epochs (load {again['load_average']}): "
        f"step-time ratio {again['step_time_ratio']:.2f}×, projecting {again['projected_hours']:.1f} h from the same "
        f"fastest epoch; its rounds took {min(slower.values()):.1f}–{max(slower.values()):.1f}× as long as the first "
        "record's at both widths, a slower machine of the same kind rather than another ratio "
        "([g_capacity_recheck.json](results/g_capacity/g_capacity_recheck.json))."
    )


def capacity_time_note() -> str:
    """gresnet.md: the capacity row's minutes against the fair row's, read through g_capacity's same-run step ratio."""
    first = _json("g_capacity/g_capacity.json")
    widths = first["widths"]
    ratio = widths[str(first["capacity_width"])]["parameters"] / widths["16"]["parameters"]
    done = finished_g_rows()
    if ("capacity", 0) not in done:
        return prose(
            f"""Its row and pairs join the table above (`capacity`) when the run finishes, with capacity − flatten:
            what {ratio:.1f}× the parameters buy."""
        )
    fastest = min(metrics(*done[("capacity", 0)])["epoch_seconds"])
    fair = min(metrics(*done[("flatten", 0)])["epoch_seconds"])
    again = _json("g_capacity/g_capacity_recheck.json")
    return prose(
        f"""Its row and pairs are in the table above (`capacity`); capacity − flatten is what
        {ratio:.1f}× the fair row's parameters buy. Its minutes are not comparable with the other rows'. Its
        fastest epoch took {fastest:.0f} s, {fastest / fair:.1f}× the seed-0 flatten row's ({fair:.0f} s),
        where the step ratio measured in one run is {first["step_time_ratio"]:.2f}× ({again["step_time_ratio"]:.2f}×
        on the slower machine): it trained on slower machines of the same kind (above). At the step ratio, its
        {first["epochs"]} epochs would take about {first["projected_hours"]:.1f} h on the machine that trained the
        other rows."""
    )


def capacity_regime() -> str:
    """gresnet.md: the capacity row's train against test accuracy, graded alike after its run, beside the fair row's."""
    done = finished_g_rows()
    if ("capacity", 0) not in done:
        return ""
    folder, run = done[("capacity", 0)]
    if not (RESULTS / folder / run / TRAINING_REGIME_RECORD).is_file():
        return "Its training images are not graded yet (`python -m benchmarks.training_regime`).\n"
    regime, test = _json(f"{folder}/{run}/{TRAINING_REGIME_RECORD}"), metrics(folder, run)
    gaps = regime_gaps(regime, test)
    fair = done.get(("flatten", 2))
    beside = ""
    if fair:
        fair_gaps = regime_gaps(metrics(*fair), metrics(*fair))
        beside = f"""The fair flatten row's gaps, graded alike by its own run, are {points(fair_gaps["clean_accuracy"])}
            and {points(fair_gaps["worst_of_10_accuracy"])} points, on seed 2 (other training and test images,
            so the two rows' gaps are not paired)."""
    return (
        prose(
            f"""Which regime it is in: the seed-0 runs did not grade their training images, so this row was graded
        after its run, alike on {regime["train_eval_examples"]:,} of its training images and on the test images
        (inference mode, final weights; the table's train accuracy is on randomly transformed batches during the
        last epoch): clean {pct(regime["train_clean_accuracy"])} % against {pct(test["clean_accuracy"])} %
        ({points(gaps["clean_accuracy"])} points), worst-of-10 {pct(regime["train_worst_of_10_accuracy"])} %
        against {pct(test["worst_of_10_accuracy"])} % ({points(gaps["worst_of_10_accuracy"])} points). {beside}
        Record: [{TRAINING_REGIME_RECORD}](results/{folder}/{run}/{TRAINING_REGIME_RECORD}), made by"""
        )
        + f"\n```\n{regime['command']}\n```\n"
    )


GRN_SYMMETRY = "cifar10_grn_symmetry"


def g_symmetry_table() -> str:
    """Each G-row run's logit movement under exact p4m symmetries, before and after training (evaluation.json)."""
    rows = []
    names = ()
    for path in sorted((RESULTS / GRN_SYMMETRY).glob("*/evaluation.json")):
        report = _json(f"{GRN_SYMMETRY}/{path.parent.name}/evaluation.json")["symmetry"]
        head, seed = path.parent.name.rsplit("_seed", 1)
        names = tuple(report["transforms"])
        for when, drift in (("before", report["initial"]), ("after", report)):
            agreements = [pct(drift["transforms"][name]["prediction_agreement"]) for name in names]
            rows.append([head, seed, when, f"{drift['max_relative_change']:.1e}", *agreements])
    if not rows:
        return "No G-row run has been diagnosed yet.\n"
    header = ["head", "seed", "training", "max relative logit change", *(f"{name} agreement (%)" for name in names)]
    return table(header, rows, right_from=3)


def parameter_match_table() -> str:
    """gresnet.md: the networks whose parameter counts the G-ResNet44 widths match."""
    rows = [
        ("planar ResNet44 (reference G-CNN study)", "32/64/128", "planar_resnet44"),
        ("G-ResNet44 p4", "16/32/64 G-channels", "p4_resnet44_invariant"),
        ("G-ResNet44 p4m", "11/23/45 G-channels", "p4m_resnet44_invariant"),
        ("the paper's ResNet family at depth 44 (`--network=resnet --resnet_n=7`)", "16-16-32-64", "paper_resnet44"),
        ("the paper's ResNet-32, its other rows' network (`--resnet_n=5`)", "16-16-32-64", "paper_resnet32"),
    ]
    out = [[label, widths, f"{network_cost(key)[0]:,}"] for label, widths, key in rows]
    return table(["network", "widths", "trainable parameters"], out, right_from=2)


# --- the code layout ----------------------------------------------------------------------------------------------

LISTED_MODULES = ("invariance_tf", "trainers")
"""Packages whose modules each get a row of the code-layout table; a subpackage, and every other package, one row."""
SUMMARISED_PACKAGES = ("benchmarks",)


def docstring_summary(path: Path) -> str:
    """The first line of the module docstring of the Python file `path`."""
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    if not docstring:
        raise ValueError(f"{path.relative_to(ROOT)} has no module docstring, whose first line the code layout shows")
    return docstring.splitlines()[0]


def _package_row(folder: Path) -> tuple[str, str]:
    """A package as one row: its docstring's first line and the names of its modules."""
    modules = ", ".join(f"`{path.stem}`" for path in sorted(folder.glob("*.py")) if path.name != "__init__.py")
    name = ".".join(folder.relative_to(ROOT).parts)
    return f"`{name}`", f"{docstring_summary(folder / '__init__.py')} Modules: {modules}."


def code_layout_rows() -> list[tuple[str, str]]:
    """(module, purpose) rows: each module of `LISTED_MODULES` and each subpackage or `SUMMARISED_PACKAGES` package."""
    rows = []
    for package in LISTED_MODULES:
        for path in sorted((ROOT / package).iterdir()):
            if path.suffix == ".py" and path.name != "__init__.py":
                rows.append((f"`{package}.{path.stem}`", docstring_summary(path)))
            elif (path / "__init__.py").is_file():
                rows.append(_package_row(path))
    for package in SUMMARISED_PACKAGES:
        folder = ROOT / package
        rows.append(_package_row(folder))
        rows += [_package_row(path.parent) for path in sorted(folder.glob("*/__init__.py"))]
    return rows


def code_layout_table() -> str:
    """README.md's code-layout table: every module (or package) beside the first line of its docstring."""
    return table(["module", "what it is"], code_layout_rows(), right_from=2)


# --- rendering ----------------------------------------------------------------------------------------------------


def cog_arguments(*extra: str) -> list[str]:
    return ["cog", *extra, *(str(ROOT / page) for page in PAGES)]


def render(check: bool = False) -> int:
    """Rewrites the generated spans of every page, or (check) reports with a diff the pages that would change."""
    from cogapp import Cog

    sys.path.insert(0, str(ROOT))
    extra = ("--check", "--diff", "--check-fail-msg=run `python -m benchmarks.pages`") if check else ("-r",)
    return Cog().main(cog_arguments(*extra))


if __name__ == "__main__":
    sys.exit(render(check="--check" in sys.argv[1:]))
