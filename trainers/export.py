"""Export a trained run for TF Serving.

    python -m trainers.export --model_dir runs/quickstart --export_dir exported/quickstart [--version 1]

Writes EXPORT/<version>/, a SavedModel with a `serving_default` signature:
float32 `images` [None, H, W, 3] in the input convention the run records (raw pixel values 0-255, or
what a fine-tuned --init_model took) -> `logits`, `probabilities`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags

from invariance_tf import export
from invariance_tf.networks import pretrained

flags.DEFINE_string("model_dir", None, "output directory of trainers.fit (holds model.keras)", required=True)
flags.DEFINE_string(
    "export_dir", None, "TF Serving model base path; the SavedModel goes to <export_dir>/<version>", required=True
)
flags.DEFINE_integer("version", 1, "model version number (TF Serving serves the highest)")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    """The command: exports --model_dir's model.keras; an error exits with one line."""
    model_path = Path(FLAGS.model_dir) / "model.keras"
    if not model_path.is_file():
        sys.exit(f"error: --model_dir={FLAGS.model_dir} has no model.keras (is it a finished trainers.fit run?)")
    if FLAGS.version < 1:
        sys.exit(f"error: --version={FLAGS.version} is invalid: must be >= 1")
    try:
        convention = pretrained.recorded_convention(Path(FLAGS.model_dir))
        path = export.export_for_serving(pretrained.load_keras(model_path), FLAGS.export_dir, FLAGS.version, convention)
    except FileExistsError as error:
        sys.exit(f"error: {error}")
    print(
        f"Exported {model_path} (input: {convention.describe()}) to {path}; inspect with: "
        f"saved_model_cli show --dir {path} --all"
    )


if __name__ == "__main__":
    app.run(main)
