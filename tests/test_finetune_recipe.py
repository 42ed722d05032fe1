"""The fine-tuning recipe's selection (`benchmarks.finetune_recipe`), without training.

Its configs differ from `benchmarks.finetune`'s only where intended, every candidate holds out the std pre-training's
validation images (checked through `run_data.load_splits` on index-coded images) and starts from that run; the rule
is applied to hand-made candidate scores.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from benchmarks import finetune, finetune_recipe
from benchmarks.finetune_recipe import CANDIDATES, RecipeOptions, choose
from invariance_tf import data, run_data

OPTIONS = RecipeOptions(out="/tmp/recipe_out", data_dir="/tmp/no_data")
# Fields a candidate sets on purpose beside `finetune`'s flags: the held-out images and their grading.
INTENDED = {"validation_examples", "eval_every", "eval_k", "output_dir"}


@pytest.fixture(scope="module")
def std():
    return finetune_recipe.std_config(OPTIONS)


def differing(a, b) -> set[str]:
    return {field.name for field in dataclasses.fields(a) if getattr(a, field.name) != getattr(b, field.name)}


def test_std_run_is_finetunes_std_row_holding_out_the_validation_images(std):
    plain = finetune.std_config(Path(OPTIONS.out), OPTIONS.data_dir, OPTIONS.seed)
    assert differing(std, plain) == {"validation_examples"}
    assert std.validation_examples == finetune_recipe.VALIDATION_EXAMPLES == 5000
    assert std.train_examples == 0, "held out of the whole training split, as the candidates"


@pytest.mark.parametrize("name", list(CANDIDATES))
def test_candidate_differs_from_finetunes_config_only_where_intended(std, name):
    row, epochs, lr = CANDIDATES[name]
    config = finetune_recipe.candidate_config(name, std, OPTIONS)
    plain_std = dataclasses.replace(std, validation_examples=0)
    plain = finetune.row_config(row, epochs, plain_std, Path("/elsewhere"), OPTIONS.data_dir, 0, lr)
    assert differing(config, plain) <= INTENDED
    assert config.init_model == std.output_dir == plain.init_model
    assert (config.epochs, config.eval_every, config.eval_k) == (epochs, epochs, 10)
    assert config.validation_examples == std.validation_examples
    assert config.output_dir == f"{OPTIONS.out}/{name}_seed0"


def test_finetune_config_is_row_config_of_its_row(std, tmp_path):
    row, epochs = finetune.FINETUNES["at_l2_e2"]
    assert finetune.finetune_config("at_l2_e2", std, tmp_path, None, 0, 0.1) == finetune.row_config(
        row, epochs, std, tmp_path / "at_l2_e2_seed0", None, 0, 0.1
    )


@pytest.fixture
def index_coded_cifar10(monkeypatch):
    """`data.load` returning 50,000 training images that each hold their position, and 100 test images."""

    def load(dataset, data_dir=None, split="train", examples=None, seed=0):
        n = 50_000 if split == "train" else 100
        images, labels = np.arange(n).reshape(n, 1, 1, 1), np.arange(n) % 10
        keep = data.subset_indices(labels, examples, seed)
        return images[keep], labels[keep], data.dataset_info(dataset)

    monkeypatch.setattr(data, "load", load)


def held_out(config) -> np.ndarray:
    return run_data.load_splits(config).validation[0].ravel()


def test_every_candidate_holds_out_the_std_runs_images(std, index_coded_cifar10):
    expected = held_out(std)
    assert len(expected) == 5000 and len(np.unique(expected)) == 5000
    assert len(np.unique(np.arange(50_000)[expected] % 10)) == 10, "class-balanced"
    for name in CANDIDATES:
        np.testing.assert_array_equal(held_out(finetune_recipe.candidate_config(name, std, OPTIONS)), expected)
    other_seed = finetune_recipe.std_config(dataclasses.replace(OPTIONS, seed=1))
    assert not np.array_equal(held_out(other_seed), expected), "the split depends on the seed"


def scores(name: str, clean: float, grid: float, minutes: float) -> dict:
    return {
        "name": name,
        "val_clean_accuracy": clean,
        "val_grid_accuracy": grid,
        "val_worst_of_10_accuracy": grid + 0.05,
        "fastest_total_minutes": minutes,
    }


def test_rule_chooses_the_highest_grid_among_qualifying_candidates():
    candidates = [
        scores("a", 0.82, 0.50, 28),
        scores("b", 0.81, 0.56, 29),
        scores("c", 0.79, 0.70, 25),  # below 80 % clean
        scores("d", 0.85, 0.75, 31),  # over budget
    ]
    assert choose(candidates) == {"chosen": "b", "target_met": True, "reason": "highest validation grid accuracy"}


def test_rule_without_a_qualifying_candidate_takes_the_most_accurate_within_budget():
    candidates = [scores("a", 0.78, 0.60, 28), scores("b", 0.79, 0.50, 30), scores("c", 0.90, 0.70, 30.5)]
    choice = choose(candidates)
    assert (choice["chosen"], choice["target_met"]) == ("b", False)
    assert choice["reason"].startswith(finetune_recipe.NOT_MET)


def test_rule_without_a_candidate_within_budget_chooses_none():
    assert choose([scores("a", 0.9, 0.7, 31)])["chosen"] is None


def test_rule_breaks_ties_by_clean_then_minutes_then_list_order():
    assert choose([scores("a", 0.81, 0.6, 20), scores("b", 0.82, 0.6, 29)])["chosen"] == "b"
    assert choose([scores("a", 0.81, 0.6, 29), scores("b", 0.81, 0.6, 20)])["chosen"] == "b"
    assert choose([scores("a", 0.81, 0.6, 20), scores("b", 0.81, 0.6, 20)])["chosen"] == "a"
    assert choose([scores("a", 0.7, 0.4, 20), scores("b", 0.7, 0.5, 25)])["chosen"] == "b"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"out": None}, "--out"),
        ({"validation_examples": 0}, "--validation_examples"),
        ({"validation_grid_examples": 5001}, "--validation_grid_examples"),
    ],
)
def test_options_name_the_bad_flag(flags, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(OPTIONS, **flags).validate()


def test_candidate_scores_count_pre_training_as_finetune_does_and_read_no_test_number(std, tmp_path):
    config = dataclasses.replace(finetune_recipe.candidate_config("at_l2_e2", std, OPTIONS), output_dir=str(tmp_path))
    (tmp_path / finetune_recipe.EPOCH_LOGS).write_text('{"val_acc_nat": 0.81, "val_worst_of_10_accuracy": 0.6}')
    tuned = {"epoch_seconds": [300.0, 600.0]}  # no clean_accuracy or grid_accuracy: the scores must not need them
    std_minutes = finetune.minutes({"epoch_seconds": [60.0, 120.0]})
    entry = finetune_recipe.candidate_scores("at_l2_e2", config, tuned, std_minutes, grid=0.55)
    expected = finetune.row("at_l2_e2", "", 2, {**tuned, "clean_accuracy": 0, "grid_accuracy": 0}, std_minutes)
    assert entry["fastest_total_minutes"] == expected["fastest_total_minutes"] == 12.0
    assert entry["total_minutes"] == expected["total_minutes"] == 18.0
    assert (entry["val_clean_accuracy"], entry["val_worst_of_10_accuracy"], entry["val_grid_accuracy"]) == (
        0.81,
        0.6,
        0.55,
    )
