"""Evaluate a trained run under spatial attacks.

    python -m trainers.evaluate --model_dir runs/quickstart --attack grid [--examples 1000]

Attacks: clean, worst_of_k (k random transformations; correct only if all are),
spgd (spatial PGD on the cross-entropy) and grid (all 775 transformations of the
paper's grid). Results are merged into <model_dir>/evaluation.json and printed as a table.
With --plot, the grid runs brute force and its accuracy per transformation is drawn
into <model_dir>/robustness_landscape.png.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import keras
from absl import app, flags

from invariance_tf import data, evaluation, plots
from invariance_tf.experiment import ExperimentConfig

ATTACKS = ("clean", "worst_of_k", "spgd", "grid")
flags.DEFINE_string("model_dir", None, "output directory of trainers.fit (model.keras, config.json)", required=True)
flags.DEFINE_list("attack", ["clean", "grid"], f"comma-separated attacks among {list(ATTACKS)}")
flags.DEFINE_integer("examples", 1000, "test examples to evaluate (0 = the whole test split)")
flags.DEFINE_string("data_dir", None, "override the run's --data_dir")
flags.DEFINE_integer("batch_size", 0, "images per model call, bounds memory (0 = auto: 128 on CPU, 1024 on GPU)")
flags.DEFINE_integer("k", 10, "k of the worst_of_k attack")
flags.DEFINE_integer("spgd_steps", 5, "steps of the spgd attack")
flags.DEFINE_integer("spgd_restarts", 1, "random restarts of the spgd attack")
flags.DEFINE_enum("grid_method", "early_exit", ["early_exit", "brute"], "grid algorithm (same answer)")
flags.DEFINE_bool("plot", False, "with grid in --attack: run the brute grid and write "
                  "<model_dir>/robustness_landscape.png")
flags.DEFINE_integer("seed", 0, "seed of the random attacks and of the test subset")
FLAGS = flags.FLAGS


def check_flags(model_dir: Path) -> None:
    """Exits with one line naming the first bad flag."""
    unknown = [a for a in FLAGS.attack if a not in ATTACKS]
    problems = [
        (not (model_dir / "model.keras").is_file(), f"--model_dir={model_dir} has no model.keras"),
        (not (model_dir / "config.json").is_file(), f"--model_dir={model_dir} has no config.json"),
        (bool(unknown), f"--attack={','.join(FLAGS.attack)}: unknown {unknown}; valid attacks are {list(ATTACKS)}"),
        (FLAGS.examples < 0, f"--examples={FLAGS.examples} is invalid: must be >= 0"),
        (FLAGS.batch_size < 0, f"--batch_size={FLAGS.batch_size} is invalid: must be >= 0 (0 = auto)"),
        (FLAGS.k < 1, f"--k={FLAGS.k} is invalid: must be >= 1"),
        (FLAGS.spgd_steps < 1, f"--spgd_steps={FLAGS.spgd_steps} is invalid: must be >= 1"),
        (FLAGS.plot and "grid" not in FLAGS.attack, f"--plot needs grid in --attack={','.join(FLAGS.attack)}"),
    ]
    for bad, message in problems:
        if bad:
            sys.exit(f"error: {message}")


def run_attack(name: str, model, images, labels, config: ExperimentConfig) -> evaluation.RobustResult | float:
    common = {"limits": config.limits, "batch_size": FLAGS.batch_size or None}
    if name == "clean":
        return evaluation.clean_accuracy(model, images, labels, batch_size=common["batch_size"])
    if name == "worst_of_k":
        return evaluation.worst_of_k_accuracy(model, images, labels, k=FLAGS.k, seed=(FLAGS.seed, 0), **common)
    if name == "spgd":
        return evaluation.spgd_accuracy(model, images, labels, steps=FLAGS.spgd_steps,
                                        restarts=FLAGS.spgd_restarts, seed=(FLAGS.seed, 0), **common)
    method = "brute" if FLAGS.plot else FLAGS.grid_method
    return evaluation.grid_accuracy(model, images, labels, method=method, verbose=1, **common)


def main(argv: list[str]) -> None:
    model_dir = Path(FLAGS.model_dir)
    check_flags(model_dir)
    config = ExperimentConfig.from_json(json.loads((model_dir / "config.json").read_text()))
    data_dir = FLAGS.data_dir or config.data_dir or None
    try:
        data.validate_source(config.dataset, data_dir)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    images, labels, _ = data.load(config.dataset, data_dir, "test", examples=FLAGS.examples or None, seed=FLAGS.seed)
    model = keras.models.load_model(model_dir / "model.keras")
    report_path = model_dir / "evaluation.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    for name in FLAGS.attack:
        start = time.perf_counter()
        result = run_attack(name, model, images, labels, config)
        accuracy = result if isinstance(result, float) else result.accuracy
        report[name] = {"accuracy": float(accuracy), "examples": int(len(images)),
                        "seconds": time.perf_counter() - start}
        if name == "grid" and FLAGS.plot:
            landscape = model_dir / "robustness_landscape.png"
            plots.robustness_landscape(result.per_transform_accuracy, landscape, limits=config.limits,
                                       title=f"{model_dir.name}: grid accuracy on {len(images)} test images")
            print(f"landscape written to {landscape}")
    report_path.write_text(json.dumps(report, indent=2))
    print(f"\n{'attack':<12}{'examples':>10}{'accuracy':>10}{'seconds':>10}")
    for name in FLAGS.attack:
        row = report[name]
        print(f"{name:<12}{row['examples']:>10}{row['accuracy']:>10.4f}{row['seconds']:>10.1f}")
    print(f"\nwritten to {report_path}")


if __name__ == "__main__":
    app.run(main)
