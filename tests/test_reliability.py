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
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from invariance_tf import callbacks, experiment
from invariance_tf.callbacks import TrainingDivergedError

REPO_ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = REPO_ROOT / "configs" / "quickstart.cfg"
TINY = ["--train_examples=256", "--test_examples=20", "--grid_examples=10", "--verbose=2"]


def fit_command(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "trainers.fit", f"--flagfile={QUICKSTART}", f"--data_dir={data_dir}",
            f"--output_dir={out}", *TINY, *extra]


def run(command: list[str], timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, **kwargs)


def backup_readable(metadata: Path) -> bool:
    try:
        return json.loads(metadata.read_text())["epoch"] >= 1
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return False


def test_backup_cut_off_mid_write_falls_back_to_the_previous_one(tmp_path):
    (tmp_path / "training_metadata.json").write_text("")
    (tmp_path / "latest.weights.h5").write_bytes(b"epoch 3")
    (tmp_path / "training_metadata.json.bkp").write_text('{"epoch": 2, "batch": 0}')
    (tmp_path / "latest.weights.h5.bkp").write_bytes(b"epoch 2")
    callbacks.repair_backup(tmp_path)
    assert json.loads((tmp_path / "training_metadata.json").read_text())["epoch"] == 2
    assert (tmp_path / "latest.weights.h5").read_bytes() == b"epoch 2"
    (tmp_path / "training_metadata.json").write_text("{")
    for name in ("training_metadata.json.bkp", "latest.weights.h5.bkp"):
        (tmp_path / name).unlink()
    callbacks.repair_backup(tmp_path)
    assert not tmp_path.exists()


def test_sigkilled_run_resumes_from_its_last_backup(cifar10_dir, tmp_path):
    out = tmp_path / "run"
    command = fit_command(cifar10_dir, out, "--epochs=6", "--train_examples=640")
    metadata = out / "backup" / "training_metadata.json"
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not backup_readable(metadata) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    callbacks.repair_backup(metadata.parent)
    done = json.loads(metadata.read_text())["epoch"]
    assert 1 <= done < 6, "the run must be killed between its first backup and its end"
    result = run(command)
    assert result.returncode == 0, result.stderr[-3000:]
    epochs_run = [line for line in result.stdout.splitlines() + result.stderr.splitlines()
                  if line.startswith("Epoch ")]
    assert epochs_run[0] == f"Epoch {done + 1}/6" and epochs_run[-1] == "Epoch 6/6"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 6 and metrics["epochs_this_process"] == 6 - done
    assert {"clean_accuracy", "worst_of_10_accuracy", "grid_accuracy"} <= set(metrics)
    assert not (out / "backup").exists()


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
        experiment.ExperimentConfig(), dataset="cifar10", data_dir=str(cifar10_dir), network="small_cnn",
        adversary="random", ce_on="mix", lambda_reg=1.0, epochs=3, batch_size=32, train_examples=128,
        test_examples=10, output_dir=str(tmp_path / "run"), verbose=0)
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
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                     "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(fit_command(cifar10_dir, out, "--epochs=1"), cwd=REPO_ROOT, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
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
    result = run([sys.executable, "-m", "trainers.evaluate", f"--model_dir={out}", "--attack=grid",
                  "--examples=2000", "--batch_size=256"])
    assert result.returncode == 0, result.stderr[-3000:]
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    assert json.loads((out / "evaluation.json").read_text())["grid"]["examples"] == 2000
    assert peak_gb < 4.0, peak_gb
