"""nbmlops: from a Jupyter notebook to a production prediction service, and keep it healthy.

In a notebook: ``%load_ext nbmlops``, then ``%%mlops_package`` and ``%mlops_serve``. In scripts:
:func:`package`, :func:`load`, :func:`predict`, :func:`serve`, :func:`monitor`, :func:`retrain`,
:func:`promote`, :func:`rollback`, :func:`history`, :func:`export`, :func:`plan`,
:func:`stream`. Names are imported on first use, so that
``import nbmlops`` (and the command line) start fast.
"""

import importlib as _importlib

from nbmlops.errors import (
    ArtifactError,
    ArtifactModifiedError,
    BatchError,
    CaptureError,
    LogError,
    ModelNotFoundError,
    NbmlopsError,
    ParityError,
    RegistryError,
    ServingError,
    StreamError,
    UsageError,
    ValidationError,
)

__version__ = "0.1.0"

_LAZY = {
    "LoadedModel": "nbmlops.registry.load",
    "load": "nbmlops.registry.load",
    "MonitorReport": "nbmlops.monitoring.report",
    "monitor": "nbmlops.monitoring.monitor",
    "PackagedVersion": "nbmlops.packaging.package",
    "package": "nbmlops.packaging.package",
    "ServerHandle": "nbmlops.serving.client",
    "serve": "nbmlops.serving.process",
    "promote": "nbmlops.registry.registry",
    "rollback": "nbmlops.registry.registry",
    "AliasEvent": "nbmlops.registry.history",
    "history": "nbmlops.registry.history",
    "JobResult": "nbmlops.jobs.retrain",
    "BatchResult": "nbmlops.batch.run",
    "predict": "nbmlops.batch.run",
    "retrain": "nbmlops.jobs.retrain",
    "OnnxExport": "nbmlops.exports.onnx",
    "DockerContext": "nbmlops.exports.docker",
    "export": "nbmlops.exports.run",
    "DeploymentPlan": "nbmlops.plans.plan",
    "plan": "nbmlops.plans.plan",
    "StreamHandle": "nbmlops.streaming.run",
    "stream": "nbmlops.streaming.run",
}

__all__ = [
    "AliasEvent",
    "ArtifactError",
    "ArtifactModifiedError",
    "BatchError",
    "BatchResult",
    "CaptureError",
    "DeploymentPlan",
    "DockerContext",
    "LogError",
    "JobResult",
    "LoadedModel",
    "ModelNotFoundError",
    "MonitorReport",
    "NbmlopsError",
    "OnnxExport",
    "PackagedVersion",
    "ParityError",
    "RegistryError",
    "ServerHandle",
    "ServingError",
    "StreamError",
    "StreamHandle",
    "UsageError",
    "ValidationError",
    "export",
    "history",
    "load",
    "load_ipython_extension",
    "monitor",
    "package",
    "plan",
    "predict",
    "promote",
    "retrain",
    "rollback",
    "serve",
    "stream",
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbmlops' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load_ipython_extension(ipython) -> None:
    """Register the nbmlops magics (``%load_ext nbmlops``)."""
    from nbmlops.magics import NbmlopsMagics
    from nbmlops.packaging.parity import prewarm

    ipython.register_magics(NbmlopsMagics)
    prewarm()
