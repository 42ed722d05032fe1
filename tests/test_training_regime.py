"""benchmarks.training_regime grades a finished run's training images as its trainer would have.

The check: from the committed seed-2 flatten G-row classifier and its run's config.json, the command recomputes the
`train_*` accuracies that `trainers.fit --train_eval_examples=2000` recorded in that run's metrics.json.
"""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import REPO_ROOT

from benchmarks import training_regime
from benchmarks.common.publishing import TRAINING_REGIME_RECORD

RUN = REPO_ROOT / "docs/results/cifar10_confirmation_grn_flatten/grn_seed2"
MODEL = REPO_ROOT / "models/cifar10_confirmation_grn_flatten/grn_seed2.keras"


def test_a_folder_without_a_config_or_model_is_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match=f"--run={tmp_path} is invalid: .*config.json"):
        training_regime.RegimeOptions(run=str(tmp_path)).validate()
    shutil.copyfile(RUN / "config.json", tmp_path / "config.json")
    with pytest.raises(ValueError, match=f"--run={tmp_path} is invalid: has no model.keras: give --model"):
        training_regime.RegimeOptions(run=str(tmp_path)).validate()
    with pytest.raises(ValueError, match="--model=missing.keras is invalid: must be a .keras file"):
        training_regime.RegimeOptions(run=str(tmp_path), model="missing.keras").validate()


@pytest.mark.slow
def test_it_recomputes_what_the_trainer_recorded(tmp_path, cifar10_dir):
    shutil.copyfile(RUN / "config.json", tmp_path / "config.json")
    options = training_regime.RegimeOptions(run=str(tmp_path), model=str(MODEL), data_dir=str(cifar10_dir))
    options.validate()
    training_regime.main(options)
    recomputed = json.loads((tmp_path / TRAINING_REGIME_RECORD).read_text())
    recorded = json.loads((RUN / "metrics.json").read_text())
    for name in ("train_eval_examples", "train_clean_accuracy", "train_worst_of_10_accuracy"):
        assert recomputed[name] == recorded[name], name
