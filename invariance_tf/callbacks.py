"""Keras callbacks for robust training: robust validation metrics in the logs and TensorBoard."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from invariance_tf import evaluation, transforms


def repair_backup(backup_dir: str | Path) -> None:
    """Falls back to the previous `BackupAndRestore` backup when the latest was cut off mid-write.

    Keras writes the weights, then `training_metadata.json`, keeping the
    previous pair as `*.bkp`; a kill between the two leaves unreadable
    metadata, which Keras cannot resume from.
    """
    backup_dir = Path(backup_dir)
    metadata = backup_dir / "training_metadata.json"
    try:
        json.loads(metadata.read_text())
        return
    except FileNotFoundError:
        return
    except json.JSONDecodeError:
        pass
    previous = [backup_dir / f"{name}.bkp" for name in ("training_metadata.json", "latest.weights.h5")]
    if all(path.is_file() for path in previous):
        for path in previous:
            shutil.copyfile(path, path.with_suffix(""))
    else:
        shutil.rmtree(backup_dir)


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
            saved = (f"the last good checkpoint is {self.last_good_checkpoint}"
                     if self.last_good_checkpoint.is_file() else "no epoch finished, so there is no checkpoint")
            raise TrainingDivergedError(
                f"training loss became {loss} at epoch {self._epoch + 1}, batch {batch + 1} "
                f"(try a smaller --lr); {saved}")


class RobustValidation(keras.callbacks.Callback):
    """Every `every` epochs, adds worst-of-k validation accuracy to the epoch logs.

    The value appears as `val_worst_of_{k}_accuracy` in the logs that later
    callbacks see (keras-tuner reads its objective there) and in TensorBoard
    under `log_dir/validation` when `log_dir` is given. Worst-of-k here: an
    example counts as correct only if all k random transformations are
    classified correctly.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, k: int = 10, every: int = 1,
                 limits=transforms.DEFAULT_LIMITS, seed: int = 0, batch_size: int | None = None,
                 log_dir: str | Path | None = None):
        super().__init__()
        if every < 1:
            raise ValueError(f"RobustValidation needs every >= 1 epochs; got {every}")
        self.images, self.labels = images, labels
        self.k, self.every, self.limits, self.seed, self.batch_size = k, every, limits, seed, batch_size
        self.key = f"val_worst_of_{k}_accuracy"
        self._writer = tf.summary.create_file_writer(str(Path(log_dir) / "validation")) if log_dir else None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every and epoch + 1 != self.params.get("epochs"):
            return
        result = evaluation.worst_of_k_accuracy(
            self.model, self.images, self.labels, k=self.k, limits=self.limits, seed=(self.seed, 0),
            batch_size=self.batch_size)
        if logs is not None:
            logs[self.key] = result.accuracy
        if self._writer is not None:
            with self._writer.as_default():
                tf.summary.scalar(f"epoch_worst_of_{self.k}_accuracy", result.accuracy, step=epoch)
            self._writer.flush()
