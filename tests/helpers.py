"""Helpers shared by the test files: the repository root, running the command-line tools, a small trained CNN.

Test files import it as `helpers`: pytest puts this folder (it has no `__init__.py`) on `sys.path`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np

from invariance_tf import callbacks, networks, transforms

REPO_ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str], timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`command` run from the repository root, output captured as text; `env` adds to this process's variables."""
    return subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def run_cli(module: str, *args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` from the repository root, as README and CI run the command-line tools."""
    return run([sys.executable, "-m", module, *args], timeout=timeout, env=env)


def train_small_cnn(images: np.ndarray, labels: np.ndarray, copies: int, epochs: int, seed: int) -> keras.Model:
    """small_cnn trained for a few seconds on `images` and `copies` randomly transformed copies of them.

    Copy i is transformed with seed [i, 0]; `seed` seeds Keras (initial weights, shuffling).
    """
    images = images.astype(np.float32)
    moved = [
        transforms.transform(images, transforms.sample_uniform(len(images), seed=[i, 0])).numpy() for i in range(copies)
    ]
    keras.utils.set_random_seed(seed)
    model = networks.build("small_cnn")
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(np.concatenate([images, *moved]), np.tile(labels, copies + 1), batch_size=32, epochs=epochs, verbose=0)
    return model


def kill_after_first_backup(command: list[str], out: Path, timeout: float = 300) -> int:
    """SIGKILLs the training run `command` (into `out`) once it has backed up an epoch; returns its epochs."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not callbacks.finished_epochs(out / "backup") and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return callbacks.finished_epochs(out / "backup")
