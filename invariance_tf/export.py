"""Export a trained classifier as a TF Serving SavedModel."""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from invariance_tf.layers.input_convention import InputConvention
from invariance_tf.model import classifier_network


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
