"""Evaluate a classifier under spatial attacks: a trainers.fit run, or any Keras / SavedModel / ONNX classifier.

    python -m trainers.evaluate --model_dir runs/quickstart --attack grid,refined [--examples 1000]
    python -m trainers.evaluate --model exported/quickstart/1 --data_dir ../shared/data/cifar10 --attack grid,refined
    python -m trainers.evaluate --model my_model.keras --data_dir cifar10 --input_range 0-1
    python -m trainers.evaluate --model model.onnx --data_dir cifar10 --input_range 0-1 --mean 0.5 --std 0.25

--model is a trainers.fit run folder, a `.keras` file, a SavedModel folder (its `serving_default`
signature, e.g. from trainers.export) or an `.onnx` file; --input_range says which pixel scale it
expects and --mean / --std (1 value or one per channel, in that scale) the normalisation: model input =
(pixels_in_range - mean) / std (`layers.InputConvention`; a run folder's recorded convention is used).
The transformations act on the raw images first (the black canvas is 0 before rescaling and normalisation).
A SavedModel is a TensorFlow program: load only ones you trust as code. --data_dir is an ImageFolder root
(only its test/ split is read) or a TFDS name. ONNX models run in onnxruntime, without gradients (spgd and
refined are refused); --input_layout=auto finds their channel axis.

Attacks (`invariance_tf.evaluation.ATTACKS`, each bringing its own flags): clean, worst_of_k, spgd, grid (the
paper's 775 transformations), refined (S-PGD on the margin from each grid survivor's weakest grid points) and
report (how the model fails: per class, per-image invariance and KL, nested boxes, worst-of-k's overestimate,
from one brute grid pass; failure_report.png).
Written to --output_dir (default: the run folder, or <model>_evaluation beside --model): evaluation.json,
examples.csv, with the brute grid grid_per_angle.csv and grid_per_shift.csv, with --plot
robustness_landscape.png and failures.png (`invariance_tf.evaluation.reporting`). Attacks run in chunks of
--chunk_size examples saved in <output_dir>/evaluation_state: a killed evaluation rerun with the same flags
resumes. --symmetry=p4|p4m (with --model_dir or a .keras --model) adds how far the logits move under exact
quarter-turns (and flips) to evaluation.json, after training and (`initial`) for the architecture freshly initialised.
docs/evaluating.md says more.
"""

from __future__ import annotations

import dataclasses
import sys

from absl import app, flags

from invariance_tf import flags as cli_flags
from invariance_tf.evaluation import reporting
from invariance_tf.evaluation.options import EvaluateOptions, attack_options_type

AttackOptions = attack_options_type()
cli_flags.define_flags(EvaluateOptions)
cli_flags.define_flags(AttackOptions)
flags.adopt_module_key_flags(cli_flags)


def main(argv: list[str]) -> None:
    """The command: evaluates under --attack and writes the report; an error exits with one line."""
    try:
        options = cli_flags.from_flags(EvaluateOptions)
        options.validate()
        reporting.run(options, dataclasses.asdict(cli_flags.from_flags(AttackOptions)))
    except (ValueError, FileNotFoundError, ImportError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    app.run(main)
