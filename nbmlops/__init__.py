"""nbmlops: from a Jupyter notebook to a production prediction service, and keep it healthy.

In a notebook: ``%load_ext nbmlops``, then ``%%mlops_package``. In scripts: :func:`package`,
:func:`load`.
"""

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
from nbmlops.model import LoadedModel, load
from nbmlops.packaging import PackagedVersion, package
from nbmlops.service import ServerHandle, serve

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "ArtifactModifiedError",
    "CaptureError",
    "LoadedModel",
    "ModelNotFoundError",
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
    "package",
    "serve",
]


def load_ipython_extension(ipython) -> None:
    """Register the nbmlops magics (``%load_ext nbmlops``)."""
    from nbmlops.magics import NbmlopsMagics
    from nbmlops.parity import prewarm

    ipython.register_magics(NbmlopsMagics)
    prewarm()
