"""The committed classifiers are the ones their records graded: each re-graded by brute force on its first images.

For a model under models/ and the run whose metrics.json graded it, the first images of the record's grid set
(`grid_images`) are classified under all 775 transformations of the paper's grid, one `model.predict` per
transformation (tests/test_failure_report.py's brute force), and the outcome must be the record's `grid_correct`
wherever no margin is within bfloat16's rounding of a flip.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from helpers import REPO_ROOT
from test_failure_report import BFLOAT16_TIE, brute_force, robust

from invariance_tf import data, report

# model file -> the run that graded it
COMMITTED = {
    "models/cifar10_finetune_recipe/at_l2_e6_seed0.keras": "docs/results/cifar10_finetune_recipe/at_l2_e6_seed0",
    "models/cifar10_confirmation/at_kl_seed2.keras": "docs/results/cifar10_confirmation/at_kl_seed2",
    **{
        f"models/{folder}/grn_seed2.keras": f"docs/results/{folder}/grn_seed2"
        for folder in ("cifar10_confirmation_grn_flatten", "cifar10_confirmation_grn_invariant")
    },
    "models/cifar10_cpu_regime_grn_capacity/grn_seed0.keras": "docs/results/cifar10_cpu_regime_grn_capacity/grn_seed0",
}
FIRST = 20


@pytest.fixture(scope="module")
def cifar10_test(cifar10_dir):
    images, labels, _ = data.load("cifar10", str(cifar10_dir), "test")
    return images, labels


@pytest.mark.slow
@pytest.mark.parametrize("model_file", list(COMMITTED))
def test_a_committed_model_grades_as_its_record_says(model_file, cifar10_test):
    record = json.loads((REPO_ROOT / COMMITTED[model_file] / "metrics.json").read_text())
    positions = report.image_positions(record["grid_images"])[:FIRST]
    images, labels = cifar10_test
    model = keras.saving.load_model(REPO_ROOT / model_file)
    brute = brute_force(model, images[positions].astype(np.float32), labels[positions])
    grid, decided = robust(brute["margins"], BFLOAT16_TIE)
    recorded = report.from_bits(record["grid_correct"])[:FIRST]
    assert decided.sum() >= FIRST // 2, "too few images far from a flip to compare"
    np.testing.assert_array_equal(recorded[decided], grid[decided])
