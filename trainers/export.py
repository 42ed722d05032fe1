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

from invariance_tf import export, model_files
from invariance_tf import flags as cli_flags

cli_flags.define_flags(export.ExportOptions)
flags.adopt_module_key_flags(cli_flags)


def main(argv: list[str]) -> None:
    """The command: exports --model_dir's model.keras; an error exits with one line."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    options = cli_flags.from_flags(export.ExportOptions)
    try:
        options.validate()
        convention = model_files.recorded_convention(Path(options.model_dir))
        model = model_files.load_keras(options.model_path)
        path = export.export_for_serving(model, options.export_dir, options.version, convention)
    except (ValueError, FileExistsError) as error:
        sys.exit(f"error: {error}")
    print(
        f"Exported {options.model_path} (input: {convention.describe()}) to {path}; inspect with: "
        f"saved_model_cli show --dir {path} --all"
    )


if __name__ == "__main__":
    app.run(main)
