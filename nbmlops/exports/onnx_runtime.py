"""Serving through an ONNX twin: fetch a version's attached graph, check it against the digest
the export tagged, and score with onnxruntime after the captured Python preprocessing."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from nbmlops.errors import ArtifactError, UsageError
from nbmlops.exports.onnx import ARTIFACT_FOLDER, ONNX_TAG, features, graph_feeds
from nbmlops.registry.registry import ModelVersion, Registry


def onnx_twin(registry: Registry, version: ModelVersion) -> Path:
    """The local folder of ``version``'s parity-proven ONNX twin, checked against its tag."""
    expected = version.tags.get(ONNX_TAG)
    if expected is None:
        raise UsageError(
            f"{version.ref} has no parity-proven ONNX twin: run `nbmlops export "
            f"{version.name}@v{version.version} --format onnx` first, or serve it without "
            "--runtime onnx"
        )
    folder = registry.settings.home / "cache" / "onnx" / version.name / version.version
    if not (folder / "export.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        downloaded = registry.client.download_artifacts(version.run_id, ARTIFACT_FOLDER)
        shutil.copytree(downloaded, folder)
    record = (folder / "export.json").read_bytes()
    if hashlib.sha256(record).hexdigest() != expected:
        raise ArtifactError(
            f"{version.ref}'s ONNX record ({folder / 'export.json'}) differs from the one its "
            "export tagged: refusing to serve it; export the version again"
        )
    graph = (folder / "model.onnx").read_bytes()
    if hashlib.sha256(graph).hexdigest() != json.loads(record)["sha256"]:
        raise ArtifactError(
            f"{version.ref}'s ONNX graph ({folder / 'model.onnx'}) differs from the one its "
            "export proved: refusing to serve it; export the version again"
        )
    return folder


class OnnxPredictor:
    """The artifact's preprocessing, then the graph: ``score`` answers as
    :meth:`ArtifactPredictor.score` does (predictions, class probabilities or None)."""

    def __init__(self, folder: Path, steps: list, classes) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # one request's arithmetic is too small to split
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = json.loads((folder / "export.json").read_bytes())["inputs"]
        self.steps = steps
        self.classes = None if classes is None else np.asarray(classes)

    def score(self, frame):
        outputs = self.session.run(None, graph_feeds(features(self.steps, frame), self.inputs))
        if self.classes is None:
            return np.asarray(outputs[0]).reshape(len(frame)), None
        proba = np.asarray(outputs[1], dtype=float)
        return self.classes.take(np.argmax(proba, axis=1), axis=0), proba
