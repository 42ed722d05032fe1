"""Robustness of the tool itself: resume after SIGKILL, overwrite refusal, determinism, NaN, multi-worker, memory."""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import REPO_ROOT, kill_after_first_backup, run

from invariance_tf import callbacks, experiment, experiment_config, options, resume
from invariance_tf.callbacks import TrainingDivergedError

SMALL_RUN = REPO_ROOT / "configs" / "cifar10_small.cfg"
TINY = ["--train_examples=256", "--test_examples=20", "--grid_examples=10", "--verbose=2"]


def fit_command(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trainers.fit",
        f"--flagfile={SMALL_RUN}",
        f"--data_dir={data_dir}",
        f"--output_dir={out}",
        *TINY,
        *extra,
    ]


# Runs a tiny experiment in which the process SIGKILLs itself while Keras' BackupAndRestore writes the
# backup of epoch 2, in the window named by argv[2].
KILL_DURING_BACKUP = """
import os, signal, sys
from pathlib import Path
import keras
from benchmarks.common import protocols
from invariance_tf import experiment

window, flagfile, flags = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
config = protocols.config_from_flagfile(flagfile, *flags)

def die():
    os.kill(os.getpid(), signal.SIGKILL)

save_weights, replace, backups = keras.Model.save_weights, os.replace, []

def hooked_save_weights(self, filepath, *args, **kwargs):
    backups.append(filepath)
    save_weights(self, filepath, *args, **kwargs)
    if len(backups) == 2 and window == "during_weights":
        with open(filepath, "r+b") as f:
            f.truncate(os.path.getsize(filepath) // 2)
        die()
    if len(backups) == 2 and window == "before_metadata":
        die()

def hooked_replace(source, target):
    if len(backups) == 2 and window == "before_rename" and Path(source).is_dir():
        die()
    replace(source, target)
    if len(backups) == 2 and window == "after_rename" and Path(target).is_dir():
        die()

keras.Model.save_weights, os.replace = hooked_save_weights, hooked_replace
experiment.run(config)
"""


@pytest.mark.parametrize(
    "window",
    [
        "during_weights",
        pytest.param("before_metadata", marks=pytest.mark.slow),
        pytest.param("before_rename", marks=pytest.mark.slow),
        pytest.param("after_rename", marks=pytest.mark.slow),
    ],
)
def test_kill_while_backing_up_resumes_from_the_last_complete_epoch(cifar10_dir, tmp_path, window):
    out = tmp_path / "run"
    flags = [
        "--network=small_cnn",
        "--adversary=random",
        "--ce_on=mix",
        "--lambda_reg=1",
        "--epochs=4",
        "--batch_size=32",
        "--train_examples=128",
        "--test_examples=10",
        "--grid_examples=10",
    ]
    command = fit_command(cifar10_dir, out, *flags)
    killed = run([sys.executable, "-c", KILL_DURING_BACKUP, window, str(SMALL_RUN), *command[4:]])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    finished = 2 if window == "after_rename" else 1
    assert callbacks.finished_epochs(out / "backup") == finished
    recorded = json.loads((out / "epoch_seconds.json").read_text())
    assert keras.models.load_model(out / "checkpoints" / "last.keras") is not None
    resumed = run(command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    epochs_run = [line for line in (resumed.stdout + resumed.stderr).splitlines() if line.startswith("Epoch ")]
    assert epochs_run == [f"Epoch {epoch}/4" for epoch in range(finished + 1, 5)]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_this_process"] == 4 - finished and len(metrics["epoch_seconds"]) == 4
    assert metrics["epoch_seconds"][:finished] == recorded[:finished] and min(metrics["epoch_seconds"]) > 0
    assert not (out / "backup").exists()


def test_latest_backup_reads_only_complete_backup_folders(tmp_path):
    for name in ("epoch-3", "epoch-12", "epoch-13.partial", "epoch-14.partial-123", "epoch-foo", "epoch-20.old"):
        (tmp_path / name).mkdir()
    (tmp_path / "epoch-30").write_text("a file, not a backup")
    assert callbacks.latest_backup(tmp_path) == tmp_path / "epoch-12"
    assert callbacks.latest_backup(tmp_path / "missing") is None


# Trains a tiny run and SIGKILLs the process once the first chunk of its final grid evaluation is saved.
KILL_DURING_EVALUATION = """
import os, signal, sys
from absl import app
from invariance_tf.evaluation import chunks
from trainers import fit

write_chunk = chunks._write_chunk

def write_then_die(path, result):
    write_chunk(path, result)
    os.kill(os.getpid(), signal.SIGKILL)

chunks._write_chunk = write_then_die
sys.argv = ["fit", *sys.argv[1:]]
app.run(fit.main)
"""


def test_fit_killed_during_its_final_evaluation_resumes_the_saved_chunks(cifar10_dir, tmp_path):
    flags = [
        "--network=small_cnn",
        "--epochs=1",
        "--test_examples=40",
        "--grid_examples=40",
        "--eval_chunk_size=20",
        "--deterministic",
        "--seed=3",
    ]
    killed_run, reference_run = tmp_path / "killed", tmp_path / "reference"
    killed = run([sys.executable, "-c", KILL_DURING_EVALUATION, *fit_command(cifar10_dir, killed_run, *flags)[3:]])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (killed_run / "metrics.json").exists()
    assert len(list((killed_run / "evaluation_state").glob("grid-*/chunk_*.npz"))) == 1
    resumed = run(fit_command(cifar10_dir, killed_run, *flags))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "grid: resumed 20 of 40 examples" in resumed.stdout + resumed.stderr
    assert run(fit_command(cifar10_dir, reference_run, *flags)).returncode == 0
    metrics = [json.loads((path / "metrics.json").read_text()) for path in (killed_run, reference_run)]
    for key in ("grid_accuracy", "grid_accuracy_ci95", "clean_accuracy", "worst_of_10_accuracy", "final_train_logs"):
        assert metrics[0][key] == metrics[1][key], key
    assert set(metrics[0]["final_train_logs"]) >= {"loss", "acc_nat"}, "the resumed run trained no epoch"
    assert not (killed_run / "evaluation_state").exists()


def test_a_field_an_older_run_did_not_record_counts_as_its_default_and_a_removed_one_is_ignored():
    current = json.loads(json.dumps(experiment_config.ExperimentConfig(lambda_reg=8.0).to_json()))
    older = {k: v for k, v in current.items() if k != "ce_adversary_objective"}
    assert resume.changed_flags(older, current) == {}
    assert resume.changed_flags(older, {**current, "ce_adversary_objective": "ce"}) == {
        "ce_adversary_objective": "same"
    }
    assert resume.changed_flags({**older, "k": 3}, current) == {"k": 3}
    assert resume.changed_flags({**older, "k": 3}, current, frozenset({"k"})) == {}
    assert resume.changed_flags({**older, "a_removed_flag": 1}, current) == {}


def test_a_recorded_run_is_compared_and_its_values_are_written_as_flags(tmp_path):
    config = experiment_config.ExperimentConfig(lambda_reg=8.0)
    assert resume.recorded_changes(config, tmp_path) == {}
    (tmp_path / "config.json").write_text(
        json.dumps(experiment_config.ExperimentConfig(lambda_reg=2.0, limits=(2, 2, 20), jit_compile=True).to_json())
    )
    changed = resume.recorded_changes(config, tmp_path, frozenset({"jit_compile"}))
    assert changed == {"lambda_reg": 2.0, "limits": [2, 2, 20]}
    assert resume.flag_list(changed) == "--lambda_reg=2.0, --limits=2,2,20"
    assert options.flag_value(True) == "true" and options.flag_value((3.0, -0.5)) == "3,-0.5"


def test_the_flag_sets_a_recorded_run_may_differ_in_are_frozensets_of_config_fields():
    fields = {field.name for field in dataclasses.fields(experiment_config.ExperimentConfig)}
    independent = [resume.RESUME_INDEPENDENT, resume.EVALUATION_INDEPENDENT, resume.SEARCH_INDEPENDENT]
    assert all(isinstance(names, frozenset) and names <= fields for names in independent)
    assert resume.EVALUATION_INDEPENDENT < resume.RESUME_INDEPENDENT


def test_sigkilled_run_resumes_from_its_last_backup_and_matches_an_uninterrupted_run(cifar10_dir, tmp_path):
    out = tmp_path / "run"
    command = fit_command(cifar10_dir, out, "--epochs=6", "--train_examples=640", "--deterministic")
    done = kill_after_first_backup(command, out)
    assert 1 <= done < 6, "the run must be killed between its first backup and its end"
    changed = run([*command, "--lambda_reg=2", "--verbose=0"])
    assert changed.returncode != 0
    assert changed.stderr.strip().splitlines()[-1] == (
        f"error: --output_dir={out} holds an unfinished run started with --lambda_reg=8.0: pass the same flags "
        "to resume it, or --overwrite to start afresh"
    )
    assert "--lambda_reg=8.0" in (out / "flags.cfg").read_text().splitlines()
    result = run(command)
    assert result.returncode == 0, result.stderr[-3000:]
    epochs_run = [line for line in result.stdout.splitlines() + result.stderr.splitlines() if line.startswith("Epoch ")]
    assert epochs_run[0] == f"Epoch {done + 1}/6" and epochs_run[-1] == "Epoch 6/6"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 6 and metrics["epochs_this_process"] == 6 - done
    assert {"clean_accuracy", "worst_of_10_accuracy", "grid_accuracy"} <= set(metrics)
    assert not (out / "backup").exists()
    reference = tmp_path / "uninterrupted"
    assert (
        run(fit_command(cifar10_dir, reference, "--epochs=6", "--train_examples=640", "--deterministic")).returncode
        == 0
    )
    weights = [keras.models.load_model(path / "model.keras").get_weights() for path in (out, reference)]
    for resumed_weight, reference_weight in zip(*weights):
        np.testing.assert_array_equal(resumed_weight, reference_weight)


@pytest.mark.slow
def test_finished_run_is_not_overwritten_without_flag(cifar10_dir, tmp_path):
    out = tmp_path / "run"
    assert run(fit_command(cifar10_dir, out, "--epochs=1")).returncode == 0
    before = (out / "metrics.json").read_text()
    refused = run(fit_command(cifar10_dir, out, "--epochs=1"))
    assert refused.returncode != 0
    assert "--overwrite" in refused.stderr.strip().splitlines()[-1]
    assert (out / "metrics.json").read_text() == before
    again = run(fit_command(cifar10_dir, out, "--epochs=1", "--overwrite"))
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.slow
def test_deterministic_runs_are_identical(cifar10_dir, tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        result = run(fit_command(cifar10_dir, out, "--epochs=2", "--deterministic", "--seed=7"))
        assert result.returncode == 0, result.stderr[-3000:]
    metrics = [json.loads((out / "metrics.json").read_text()) for out in outs]
    for key in ("clean_accuracy", "worst_of_10_accuracy", "grid_accuracy", "final_train_logs"):
        assert metrics[0][key] == metrics[1][key], key
    weights = [keras.models.load_model(out / "model.keras").get_weights() for out in outs]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


class PoisonWeights(keras.callbacks.Callback):
    """Sets one weight to NaN at the start of epoch `epoch` (0-based)."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            weight = self.model.trainable_weights[0]
            weight.assign(np.full(weight.shape, np.nan, np.float32))


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(cifar10_dir, tmp_path):
    config = dataclasses.replace(
        experiment_config.ExperimentConfig(),
        dataset="cifar10",
        data_dir=str(cifar10_dir),
        network="small_cnn",
        adversary="random",
        ce_on="mix",
        lambda_reg=1.0,
        epochs=3,
        batch_size=32,
        train_examples=128,
        test_examples=10,
        output_dir=str(tmp_path / "run"),
        verbose=0,
    )
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 2, batch 1.*last good checkpoint"):
        experiment.run(config, extra_callbacks=[PoisonWeights(epoch=1)])
    model = keras.models.load_model(tmp_path / "run" / "checkpoints" / "last.keras")
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert np.isfinite(model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)).all()
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_absurd_learning_rate_exits_with_one_line(cifar10_dir, tmp_path):
    result = run(fit_command(cifar10_dir, tmp_path / "run", "--epochs=2", "--lr=1e30"))
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training loss became") and "--lr" in last


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_training_on_loopback(cifar10_dir, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    out = tmp_path / "run"
    processes = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}),
        )
        processes.append(
            subprocess.Popen(
                fit_command(cifar10_dir, out, "--epochs=1"),
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [p.communicate(timeout=600) for p in processes]
    for process, (_, stderr) in zip(processes, results):
        assert process.returncode == 0, stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["replicas_in_sync"] == 2
    assert metrics["epochs"] == 1 and (out / "model.keras").is_file()


@pytest.mark.slow
def test_grid_attack_on_2000_images_stays_under_4_gb(cifar10_dir, tmp_path):
    out = tmp_path / "run"
    assert run(fit_command(cifar10_dir, out, "--epochs=1", "--network=small_cnn")).returncode == 0
    result = run(
        [
            sys.executable,
            "-m",
            "trainers.evaluate",
            f"--model_dir={out}",
            "--attack=grid",
            "--examples=2000",
            "--batch_size=256",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    assert json.loads((out / "evaluation.json").read_text())["grid"]["examples"] == 2000
    assert peak_gb < 4.0, peak_gb
