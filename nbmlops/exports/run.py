"""``nbmlops.export``: a registered version in another form."""

from __future__ import annotations

from pathlib import Path

from nbmlops.config import Settings
from nbmlops.errors import UsageError
from nbmlops.exports.docker import DockerContext, export_docker
from nbmlops.exports.onnx import OnnxExport, export_onnx

FORMATS = ("onnx", "docker")


def export(
    ref: str, format: str = "onnx", output: Path | None = None, settings: Settings | None = None
) -> OnnxExport | DockerContext:
    """Export ``ref`` as ``format``.

    - ``onnx`` converts the model, proves parity with onnxruntime and attaches the graph to the
      version (see :func:`nbmlops.exports.onnx.export_onnx`); ``output`` also gets a copy.
    - ``docker`` writes a build context to ``output`` (default ``./NAME-vN-docker``): the
      artifact, pinned requirements and a Dockerfile that serves it without a registry (see
      :func:`nbmlops.exports.docker.export_docker`).
    """
    if format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {format!r}")
    if format == "docker":
        return export_docker(ref, output, settings)
    return export_onnx(ref, output, settings)
