"""A finished run's robustness landscape: its accuracy at every grid transformation, kept in landscape.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from invariance_tf import evaluation, files, model_files, plots, run_data
from invariance_tf.experiment_config import ExperimentConfig


def landscape(config: ExperimentConfig, examples: int) -> np.ndarray:
    """Accuracy per grid transformation of the run's model on `examples` evenly spaced test images.

    The test subset is ordered by class, so evenly spaced images cover every
    class. Computed once with the brute-force grid, kept in
    `<run>/landscape.json`, and drawn into `<run>/robustness_landscape.png`.
    """
    out = Path(config.output_dir)
    cache = out / "landscape.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached["examples"] == examples and cached.get("selection") == "evenly_spaced":
            return np.asarray(cached["per_transform_accuracy"])
    print(f"landscape of {out}: brute-force grid on {examples} test images", flush=True)
    images, labels = run_data.load_splits(config).test
    chosen = np.linspace(0, len(images) - 1, min(examples, len(images))).round().astype(int)
    model = model_files.load_keras(out / "model.keras")
    accuracy = evaluation.grid_accuracy(
        model,
        images[chosen],
        labels[chosen],
        method="brute",
        limits=config.limits,
        resampling=config.eval_resampling,
        batch_size=config.evaluation_batch_size,
    ).per_transform_accuracy
    files.write_text(
        cache,
        json.dumps({"examples": examples, "selection": "evenly_spaced", "per_transform_accuracy": accuracy.tolist()}),
    )
    plots.robustness_landscape(
        accuracy,
        out / "robustness_landscape.png",
        limits=config.limits,
        title=f"{out.name}: grid accuracy on {min(examples, len(images))} test images",
    )
    return accuracy
