"""nbmlops: from a Jupyter notebook to a production prediction service, and keep it healthy.

In a notebook: ``%load_ext nbmlops``, then ``%%mlops_package`` and ``%mlops_serve``. In scripts:
:func:`package`, :func:`load`, :func:`serve`. Names are imported on first use, so that
``import nbmlops`` (and the command line) start fast.
"""

import importlib as _importlib

from nbmlops.errors import (
    ArtifactError,
    ArtifactModifiedError,
    CaptureError,
    ModelNotFoundError,
    NbmlopsError,
    ParityError,
    RegistryError,
    ServingError,
    UsageError,
    ValidationError,
)

__version__ = "0.1.0"

_LAZY = {
    "LoadedModel": "nbmlops.model",
    "load": "nbmlops.model",
    "MonitorReport": "nbmlops.monitoring",
    "monitor": "nbmlops.monitoring",
    "PackagedVersion": "nbmlops.packaging",
    "package": "nbmlops.packaging",
    "ServerHandle": "nbmlops.service",
    "serve": "nbmlops.service",
}

__all__ = [
    "ArtifactError",
    "ArtifactModifiedError",
    "CaptureError",
    "LoadedModel",
    "ModelNotFoundError",
    "MonitorReport",
    "NbmlopsError",
    "PackagedVersion",
    "ParityError",
    "RegistryError",
    "ServerHandle",
    "ServingError",
    "UsageError",
    "ValidationError",
    "load",
    "load_ipython_extension",
    "monitor",
    "package",
    "serve",
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
    from nbmlops.parity import prewarm

    ipython.register_magics(NbmlopsMagics)
    prewarm()
