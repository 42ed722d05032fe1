"""The 21 paper-row flagfiles follow the reference code's protocol (docs/FIDELITY.md), flag by flag.

The table below is the spec: what each `configs/<dataset>_<row>.cfg` must parse to. Every deliberate
difference from the reference code (SVHN without flips, A.T.'s CE on every adversarial image, D.A.+KL's
2-fold batch, the GRN row's network) is explained in docs/FIDELITY.md. No dataset is read.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from absl import flags
from helpers import REPO_ROOT

from invariance_tf import experiment_config
from invariance_tf import flags as experiment_flags

CONFIGS = REPO_ROOT / "configs"
FIDELITY_DOC = REPO_ROOT / "docs" / "FIDELITY.md"

# The reference's max_num_training_steps (every configs/*.json of the reference code).
REFERENCE_STEPS = 80_000
STEPS_TOLERANCE = 0.01
# Training-split sizes (TFDS train splits); the flagfiles train on all of it.
TRAIN_SIZES = {"cifar10": 50_000, "cifar100": 50_000, "svhn_cropped": 73_257}

# Flagfile prefix -> the `--dataset` it trains.
DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "svhn": "svhn_cropped"}
ROWS = ("std", "da", "da_kl", "at", "at_kl", "at_l2", "grn")
# Row -> the paper's name for it.
PAPER_ROWS = {
    "std": "std",
    "da": "D.A.",
    "da_kl": "D.A.+KL",
    "at": "A.T.",
    "at_kl": "A.T.+KL",
    "at_l2": "A.T.+L2",
    "grn": "GRN",
}
NO_REFERENCE = "no reference config"
# Row -> the reference code's config it follows, as the flagfile's leading comment must name it.
REFERENCE_CONFIGS = {
    "std": "std.json",
    "da": "std_star.json",
    "da_kl": NO_REFERENCE,
    "at": "at_rob_wo_10.json",
    "at_kl": "kl_mix_wo_10.json",
    "at_l2": "l2_mix_wo_10.json",
    "grn": NO_REFERENCE,
}

EVALUATION_LIMITS = (3.0, 3.0, 30.0)

# Every row: 64 originals per step, the reference's optimiser, decay, CE, precision, limits and resampling.
COMMON: dict[str, Any] = {
    "batch_size": 64,
    "lr": 0.1,
    "lr_schedule": "step",
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 2e-4,
    "label_smoothing": 0.0,
    "precision": "float32",
    "limits": EVALUATION_LIMITS,
    "resampling": "reference",
    "shared_candidates": False,
    "reference_half_batch_ce": False,
}

# Flagfile prefix -> dataset, epochs (about 80k steps of 64) and augmentation.
PER_DATASET: dict[str, dict[str, Any]] = {
    "cifar10": {"dataset": "cifar10", "epochs": 102, "augment": "flip"},
    "cifar100": {"dataset": "cifar100", "epochs": 102, "augment": "flip"},
    # The reference flips SVHN too (svhn_input.AugmentedSVHNData); mirrored digits are other digits: no flips.
    "svhn": {"dataset": "svhn_cropped", "epochs": 70, "augment": "off"},
}

REFERENCE_RESNET: dict[str, Any] = {"network": "resnet", "resnet_n": 5, "reference_resnet": True}
# The reference code has no G-ResNet: the paper's GRN row cites Cohen & Welling 2016, whose ResNet44 is p4m
# (tscohen/gconv_experiments, P4MResNet.py) with a head that sees channels x group elements.
G_RESNET: dict[str, Any] = {"network": "g_resnet", "g_depth": 44, "group": "p4m", "g_head": "flatten"}

# Row -> its method flags (they override COMMON where both name a flag).
PER_ROW: dict[str, dict[str, Any]] = {
    # std.json: one random continuous +-4 px translation per original (random_tries 1, spatial_limits [4,4,0]).
    "std": {"adversary": "random", "adversary_limits": (4.0, 4.0, 0.0), "ce_on": "rob", "lambda_reg": 0.0},
    # std_star.json: std.json with spatial_limits [3,3,30]; empty adversary_limits = --limits.
    "da": {"adversary": "random", "adversary_limits": (), "ce_on": "rob", "lambda_reg": 0.0},
    # No reference config; 2-fold batch, one random x~ for both terms.
    "da_kl": {"adversary": "random", "ce_on": "mix", "h": "kl", "lambda_reg": 8.0},
    # at_rob_wo_10.json, but the CE on all 64 worst-of-10 images (not the reference's second 32).
    "at": {
        "adversary": "worst_of_k",
        "k": 10,
        "adversary_objective": "ce",
        "ce_on": "rob",
        "lambda_reg": 0.0,
        "reference_half_batch_ce": False,
    },
    # kl_mix_wo_10.json: two independent worst-of-10 searches (KL for the penalty, CE for the CE term).
    "at_kl": {
        "adversary": "worst_of_k",
        "k": 10,
        "adversary_objective": "kl",
        "ce_on": "mix",
        "ce_adversary_objective": "ce",
        "h": "kl",
        "lambda_reg": 8.0,
        "shared_candidates": False,
    },
    # l2_mix_wo_10.json: lambda_ 1 on ||.||^2 / 4 = 0.25 on the plain squared distance.
    "at_l2": {
        "adversary": "worst_of_k",
        "k": 10,
        "adversary_objective": "l2",
        "ce_on": "mix",
        "ce_adversary_objective": "ce",
        "h": "l2",
        "lambda_reg": 0.25,
        "shared_candidates": False,
    },
    "grn": {"adversary": "random", "ce_on": "rob", "lambda_reg": 0.0},
}

# Row -> limits of the training adversary's draws (adversary_limits, or limits when it is empty).
TRAINING_ADVERSARY_LIMITS = {row: EVALUATION_LIMITS for row in ROWS} | {"std": (4.0, 4.0, 0.0)}

MISSING = "<no such config field>"
FLAGFILES = [f"{prefix}_{row}" for prefix in DATASETS for row in ROWS]


def expected_flags(stem: str) -> dict[str, Any]:
    """The table's flags for flagfile `configs/<stem>.cfg`: common, then dataset, network and row entries."""
    prefix, row = stem.split("_", 1)
    return {**COMMON, **PER_DATASET[prefix], **(G_RESNET if row == "grn" else REFERENCE_RESNET), **PER_ROW[row]}


def parse_flagfile(path: Path) -> experiment_config.ExperimentConfig:
    """The config `trainers.fit --flagfile=path` would run (as tests/test_trainers.py parses it)."""
    values = flags.FlagValues()
    experiment_flags.define_experiment_flags(values)
    values(["fit", f"--flagfile={path}"])
    return experiment_flags.config_from_flags(values)


def as_limits(value: Any) -> tuple[float, ...] | Any:
    """A limits value (tuple, list or "dx,dy,angle" string; empty = ()) as a tuple of floats."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        try:
            return tuple(float(v) for v in value)
        except (TypeError, ValueError):
            return value
    return value


def matches(expected: Any, got: Any) -> bool:
    """Whether a parsed config value equals the table's: bools strictly, floats to 1e-9, limits as floats."""
    if isinstance(expected, bool):
        return isinstance(got, bool) and got is expected
    if isinstance(expected, tuple):
        return as_limits(got) == expected
    if isinstance(expected, float):
        return (
            isinstance(got, (int, float))
            and not isinstance(got, bool)
            and math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12)
        )
    return type(got) is type(expected) and got == expected


def leading_comment(path: Path) -> str:
    """The flagfile's first comment lines (before its first flag)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def test_the_table_covers_every_row_of_every_dataset() -> None:
    """21 flagfiles exist, one per dataset and paper row, and the table has every row."""
    assert set(PER_ROW) == set(ROWS) == set(REFERENCE_CONFIGS) == set(PAPER_ROWS)
    missing = [stem for stem in FLAGFILES if not (CONFIGS / f"{stem}.cfg").is_file()]
    assert not missing, f"flagfiles missing: {missing}"


@pytest.mark.parametrize("stem", FLAGFILES)
def test_flagfile_matches_the_fidelity_table(stem: str) -> None:
    """Every flag the table lists for this flagfile has the table's value in the parsed config."""
    path = CONFIGS / f"{stem}.cfg"
    config = parse_flagfile(path)
    wrong = [
        f"{path.relative_to(REPO_ROOT)}: --{name} expected {expected!r}, got {getattr(config, name, MISSING)!r}"
        for name, expected in expected_flags(stem).items()
        if not matches(expected, getattr(config, name, MISSING))
    ]
    if wrong:
        pytest.fail("\n".join(wrong), pytrace=False)


@pytest.mark.parametrize("stem", FLAGFILES)
def test_training_adversary_draws_from_the_reference_limits(stem: str) -> None:
    """The training adversary's limits (`--adversary_limits`, empty = `--limits`): +-4 px for std, else 3,3,30."""
    path = CONFIGS / f"{stem}.cfg"
    config = parse_flagfile(path)
    raw = as_limits(getattr(config, "adversary_limits", MISSING))
    effective = raw if raw != () else as_limits(config.limits)
    expected = TRAINING_ADVERSARY_LIMITS[stem.split("_", 1)[1]]
    assert effective == expected, (
        f"{path.relative_to(REPO_ROOT)}: training adversary limits expected {expected!r}, "
        f"got {effective!r} (--adversary_limits={raw!r}, --limits={config.limits!r})"
    )


@pytest.mark.parametrize("stem", FLAGFILES)
def test_steps_are_the_reference_80k_within_one_percent(stem: str) -> None:
    """len(train split) // batch_size x epochs is within 1 % of the reference's 80,000 steps."""
    path = CONFIGS / f"{stem}.cfg"
    config = parse_flagfile(path)
    assert config.train_examples == 0 and config.validation_examples == 0, (
        f"{path.relative_to(REPO_ROOT)}: the step count assumes the whole training split, got "
        f"--train_examples={config.train_examples} --validation_examples={config.validation_examples}"
    )
    steps = TRAIN_SIZES[config.dataset] // config.batch_size * config.epochs
    assert abs(steps - REFERENCE_STEPS) <= STEPS_TOLERANCE * REFERENCE_STEPS, (
        f"{path.relative_to(REPO_ROOT)}: {TRAIN_SIZES[config.dataset]:,} // {config.batch_size} x {config.epochs} "
        f"epochs = {steps:,} steps, not within 1 % of {REFERENCE_STEPS:,}"
    )


@pytest.mark.parametrize("dataset", sorted(set(TRAIN_SIZES)))
def test_the_tables_epochs_give_80k_steps(dataset: str) -> None:
    """The table itself: 64 originals per step for its epochs is within 1 % of 80,000 steps."""
    epochs = next(values["epochs"] for values in PER_DATASET.values() if values["dataset"] == dataset)
    steps = TRAIN_SIZES[dataset] // COMMON["batch_size"] * epochs
    assert abs(steps - REFERENCE_STEPS) <= STEPS_TOLERANCE * REFERENCE_STEPS, f"{dataset}: {steps:,} steps"


@pytest.mark.parametrize("stem", FLAGFILES)
def test_flagfile_names_the_reference_config_it_follows(stem: str) -> None:
    """The flagfile's leading comment names its reference config (or says there is none)."""
    path = CONFIGS / f"{stem}.cfg"
    expected = REFERENCE_CONFIGS[stem.split("_", 1)[1]]
    comment = leading_comment(path)
    assert expected in comment, (
        f"{path.relative_to(REPO_ROOT)}: leading comment should name {expected!r}, got {comment!r}"
    )


@pytest.mark.parametrize("row", ROWS)
def test_every_row_is_documented(row: str) -> None:
    """docs/FIDELITY.md names the row (flagfile name and paper name), its reference config and its flags."""
    text = FIDELITY_DOC.read_text()
    names = [f"_{row}.cfg", PAPER_ROWS[row], REFERENCE_CONFIGS[row]]
    flag_names = [f"--{name}" for name in {**COMMON, **PER_ROW[row]}]
    flag_names += [f"--{name}" for name in (G_RESNET if row == "grn" else REFERENCE_RESNET)]
    missing = [name for name in names + flag_names if name not in text]
    assert not missing, f"{FIDELITY_DOC.relative_to(REPO_ROOT)} does not mention {missing} (row {row})"


def test_per_dataset_settings_are_documented() -> None:
    """docs/FIDELITY.md gives each dataset's epochs and augmentation, and says why SVHN differs."""
    text = FIDELITY_DOC.read_text()
    needed = ["--epochs=102", "--epochs=70", "--augment=flip", "--augment=off", "AugmentedSVHNData", "svhn_input.py"]
    missing = [name for name in needed if name not in text]
    assert not missing, f"{FIDELITY_DOC.relative_to(REPO_ROOT)} does not mention {missing}"
