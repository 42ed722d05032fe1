"""Export a trained classifier as a TF Serving SavedModel (`export_for_serving`), and the flags of `trainers.export`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import tensorflow as tf

from invariance_tf.layers.input_convention import InputConvention
from invariance_tf.model import classifier_network
from invariance_tf.options import check, is_count, option


@dataclasses.dataclass
class ExportOptions:
    """The flags of `trainers.export`: field names equal the flag names (see its `--help`)."""

    model_dir: str = option("", "output directory of trainers.fit (holds model.keras)")
    export_dir: str = option("", "TF Serving model base path; the SavedModel goes to <export_dir>/<version>")
    version: int = option(1, "model version number (TF Serving serves the highest)")

    def validate(self) -> None:
        """Raises ValueError naming the first bad option as its flag, before any model is loaded."""
        check(
            self,
            [
                ("model_dir", bool(self.model_dir), "must name a finished trainers.fit run folder"),
                ("export_dir", bool(self.export_dir), "must name the TF Serving model base path"),
                ("model_dir", self.model_path.is_file(), "has no model.keras (is it a finished trainers.fit run?)"),
                ("version", is_count(self.version), "must be >= 1"),
            ],
        )

    @property
    def model_path(self) -> Path:
        """The run's model.keras inside `--model_dir`."""
        return Path(self.model_dir) / "model.keras"


def export_for_serving(
    model: keras.Model, export_dir: str | Path, version: int = 1, convention: InputConvention | None = None
) -> Path:
    """Writes `export_dir/<version>/`, a SavedModel whose `serving_default` maps images to predictions.

    The signature takes `images`: float32 [None, H, W, C] in the network's
    input `convention` (by default raw pixel values 0-255, as this project's
    networks take; a model fine-tuned from another's takes what the original
    took, as its run records), with H, W, C fixed to the network's input
    shape, and returns `logits` and `probabilities` ([None, classes]). This
    is the layout TF Serving loads (`--model_base_path=export_dir`).
    """
    convention = convention or InputConvention()
    if int(version) < 1:
        raise ValueError(f"version must be an integer >= 1 (TF Serving's numbering); got {version!r}")
    network = classifier_network(model)
    height, width, channels = network.input_shape[1:]
    path = Path(export_dir) / str(int(version))
    if path.exists():
        raise FileExistsError(f"{path} exists; choose another --version or remove it")

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        tf.debugging.assert_equal(
            tf.shape(images)[1:],
            tf.constant([height, width, channels]),
            message=f"images must be float32 [batch, {height}, {width}, {channels}] {convention.describe()}",
        )
        logits = network(images, training=False)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    archive = keras.export.ExportArchive()
    archive.track(network)
    archive.add_endpoint(
        name="serving_default",
        fn=serve,
        input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32, name="images")],
    )
    archive.write_out(str(path), verbose=False)
    return path
