"""Keras callbacks for robust training: crash-safe backups, epoch records and robust validation metrics.

Backups and checkpoints are written atomically; `RobustValidation` adds worst-of-k validation accuracy every few
epochs and `GridValidation` the grid accuracy after the last, in the logs and TensorBoard.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from invariance_tf import evaluation, files, transforms

BACKUP_PREFIX = "epoch-"
_BACKUP_NAME = re.compile(rf"{BACKUP_PREFIX}(\d+)({re.escape(files.PARTIAL)}(-\d+)?)?")


def _backups(backup_dir: Path) -> dict[Path, tuple[int, bool]]:
    """The backup folders in `backup_dir`: path -> (epoch, complete); anything else there is left alone."""
    found = {}
    for path in backup_dir.iterdir() if backup_dir.is_dir() else ():
        match = _BACKUP_NAME.fullmatch(path.name)
        if match and path.is_dir():
            found[path] = (int(match.group(1)), match.group(2) is None)
    return found


def latest_backup(backup_dir: str | Path) -> Path | None:
    """The newest complete backup folder written by `AtomicBackupAndRestore`, or None."""
    complete = {path: epoch for path, (epoch, done) in _backups(Path(backup_dir)).items() if done}
    return max(complete, key=complete.get, default=None)


def finished_epochs(backup_dir: str | Path) -> int:
    """The epochs finished by the run whose newest complete backup is in `backup_dir` (0 without one)."""
    latest = latest_backup(backup_dir)
    return 0 if latest is None else int(json.loads((latest / "training_metadata.json").read_text())["epoch"])


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' `BackupAndRestore` whose backups are complete or absent.

    A kill at any moment resumes from the last finished epoch, and nothing finished is lost.

    Keras writes the weights and then `training_metadata.json` in place, so a
    kill during either write leaves a backup it cannot read or that disagrees
    with itself. Here each epoch's pair is written by Keras into
    `<backup_dir>/epoch-<E>.partial-<pid>/`, which is then renamed to
    `<backup_dir>/epoch-<E>/` (an atomic rename); older backups are removed
    only after that. Restoring reads the newest complete folder of
    `restore_dir` (default: `backup_dir`): the workers of a multi-worker run
    restore the chief's backup and write their own into scratch folders.
    """

    def __init__(self, backup_dir: str | Path, restore_dir: str | Path | None = None):
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False)
        self.restore_dir = Path(restore_dir or backup_dir)

    def _use_folder(self, folder: Path) -> None:
        self._weights_path = str(folder / "latest.weights.h5")
        self._training_metadata_path = str(folder / "training_metadata.json")

    def on_train_begin(self, logs: dict | None = None) -> None:
        latest = latest_backup(self.restore_dir)
        if latest is not None:
            self._use_folder(latest)
            self._load_model()

    def _save_model(self) -> None:
        root = Path(self.backup_dir)
        final = root / f"{BACKUP_PREFIX}{self._current_epoch}"
        with files.atomic_path(final) as partial:
            partial.mkdir()
            self._use_folder(partial)
            super()._save_model()
        for old in _backups(root):
            if old != final:
                shutil.rmtree(old)


def save_model_atomically(model: keras.Model, path: str | Path) -> None:
    """`model.save(path)` (a `.keras` file) through a temporary file: a kill leaves the old file or the new one."""
    with files.atomic_path(path, suffix=".keras") as partial:
        model.save(partial)


class SaveLastModel(keras.callbacks.Callback):
    """Saves the whole model to `path` (a `.keras` file) after every epoch, atomically."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        save_model_atomically(self.model, self.path)


class EpochTimes(keras.callbacks.Callback):
    """Keeps the wall-clock seconds of every finished epoch in `path` (JSON list), across resumed runs.

    A resumed run overwrites the entries from its first epoch on, so the sum
    is the training time of the epochs the final model went through.
    """

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self._start = 0.0

    def seconds(self) -> list[float]:
        """The recorded seconds of the finished epochs, first epoch first."""
        return json.loads(self.path.read_text()) if self.path.is_file() else []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        files.write_text(self.path, json.dumps(self.seconds()[:epoch] + [time.perf_counter() - self._start]))


class EpochLogs(keras.callbacks.Callback):
    """Keeps the training logs of the last finished epoch in `path` (JSON object), across resumed runs.

    So that a run resumed after its last epoch (when `fit` trains no epoch and its history is empty) still
    reports them.
    """

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)

    def last(self) -> dict[str, float]:
        """The logs of the last finished epoch; empty before the first."""
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        files.write_text(self.path, json.dumps({name: float(value) for name, value in (logs or {}).items()}))


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `TrainingDivergedError` at the first batch whose loss is not finite.

    Raising (rather than setting `stop_training`) skips the epoch-end
    callbacks, so checkpoints and backups keep the last good epoch.
    """

    def __init__(self, last_good_checkpoint: str | Path):
        super().__init__()
        self.last_good_checkpoint = Path(last_good_checkpoint)
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if not np.isfinite(loss):
            saved = (
                f"the last good checkpoint is {self.last_good_checkpoint}"
                if self.last_good_checkpoint.is_file()
                else "no epoch finished, so there is no checkpoint"
            )
            raise TrainingDivergedError(
                f"training loss became {loss} at epoch {self._epoch + 1}, batch {batch + 1} "
                f"(try a smaller --lr); {saved}"
            )


class RobustValidation(keras.callbacks.Callback):
    """Every `every` epochs, adds worst-of-k validation accuracy to the epoch logs.

    The value appears as `val_worst_of_{k}_accuracy` in the logs that later
    callbacks see (keras-tuner reads its objective there) and in TensorBoard
    under `log_dir/validation` when `log_dir` is given. Worst-of-k here: an
    example counts as correct only if all k random transformations are
    classified correctly; images are resampled by `resampling` (see `transforms`).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        k: int = 10,
        every: int = 1,
        limits: Sequence[float] = transforms.DEFAULT_LIMITS,
        seed: int = 0,
        batch_size: int | None = None,
        log_dir: str | Path | None = None,
        resampling: str = "composed",
    ):
        super().__init__()
        if every < 1:
            raise ValueError(f"RobustValidation needs every >= 1 epochs; got {every}")
        self.images, self.labels = images, labels
        self.k, self.every, self.limits, self.seed, self.batch_size = k, every, limits, seed, batch_size
        self.resampling = transforms.validate_resampling(resampling)
        self.key = f"val_worst_of_{k}_accuracy"
        self._writer = tf.summary.create_file_writer(str(Path(log_dir) / "validation")) if log_dir else None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every and epoch + 1 != self.params.get("epochs"):
            return
        accuracy = evaluation.evaluate(
            self.model,
            (self.images, self.labels),
            ["worst_of_k"],
            options={"k": self.k},
            limits=self.limits,
            batch_size=self.batch_size,
            resampling=self.resampling,
            seed=self.seed,
            sample=False,
        ).summary["worst_of_k"]["accuracy"]
        if logs is not None:
            logs[self.key] = accuracy
        if self._writer is not None:
            with self._writer.as_default():
                tf.summary.scalar(f"epoch_worst_of_{self.k}_accuracy", accuracy, step=epoch)
            self._writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.close()


def grid_accuracy(
    model, images: np.ndarray, labels: np.ndarray, limits: Sequence[float], batch_size: int | None, resampling: str
) -> float:
    """Grid accuracy (a fraction) of held-out images, graded as validation grades them (`GridValidation`)."""
    return evaluation.evaluate(
        model,
        (images, labels),
        ["grid"],
        limits=limits,
        batch_size=batch_size,
        resampling=resampling,
        sample=False,
    ).summary["grid"]["accuracy"]


class GridValidation(keras.callbacks.Callback):
    """After the last epoch, adds the grid accuracy of validation images to the logs as `val_grid_accuracy`.

    Only the last epoch: the grid attack is costly and the search's objective
    is the value after training.
    """

    key = "val_grid_accuracy"

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        limits: Sequence[float] = transforms.DEFAULT_LIMITS,
        batch_size: int | None = None,
        resampling: str = "composed",
    ):
        super().__init__()
        self.images, self.labels, self.limits, self.batch_size = images, labels, limits, batch_size
        self.resampling = transforms.validate_resampling(resampling)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 != self.params.get("epochs") or logs is None:
            return
        logs[self.key] = grid_accuracy(
            self.model, self.images, self.labels, self.limits, self.batch_size, self.resampling
        )
