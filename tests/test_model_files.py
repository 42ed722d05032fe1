"""The loaders of `invariance_tf.model_files` keep the state keys evaluations saved before them."""

from __future__ import annotations

import hashlib
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
from test_evaluation import pinned_model

from invariance_tf import evaluation, export

pytestmark = pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")  # Keras' tf2onnx patch


def test_state_keys_of_model_files_are_those_before_the_shared_loaders(tmp_path):
    """The keys below were computed by `evaluation.classifiers`' own loaders (commit c9a109b).

    Equal keys are what lets an evaluation of a Keras file, a SavedModel or an ONNX file resume after the move.
    An ONNX model is named by its file's bytes (which its exporter's version may change), so its key is pinned
    as a function of them.
    """
    model = pinned_model()
    model.save(tmp_path / "pinned.keras")
    saved_model = export.export_for_serving(model, tmp_path / "export")
    model.export(str(tmp_path / "pinned.onnx"), format="onnx", verbose=False)
    keys = {
        "keras": evaluation.load_classifier(tmp_path / "pinned.keras"),
        "normalised": evaluation.load_classifier(tmp_path / "pinned.keras", "0-1", [0.5], [0.25]),
        "saved_model": evaluation.load_classifier(saved_model),
        "onnx": evaluation.load_classifier(tmp_path / "pinned.onnx", image_shape=(8, 8, 3)),
    }
    keys = {name: evaluation.model_key(classifier) for name, classifier in keys.items()}
    file_digest = hashlib.sha256((tmp_path / "pinned.onnx").read_bytes()).hexdigest()
    assert keys == {
        "keras": "0540468794ef58e156cf18f52afa8ace2a16419a359a8b8c761d59c9dabb499d-0-255",
        "normalised": "88a82bac7f79a6d7cad3c648cf8c64b923bfcedb11bd01bc320c1c28040ffce6-0-1",
        "saved_model": "360e238212ffa3430ee47c317dceb979eaf56ad8995c9d72bf74109d28a9848c-0-255",
        "onnx": hashlib.sha256(json.dumps({"model": file_digest}).encode()).hexdigest() + "-0-255",
    }
