"""What the registry knew of a version, written beside a copy of its artifact so that the copy
can be served where there is no registry (a container): ``registration.json`` next to
``model/``, the artifact folder."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nbmlops.artifact.files import manifest_digest
from nbmlops.errors import ArtifactError, ArtifactModifiedError

RECORD = "registration.json"
MODEL_FOLDER = "model"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Registration:
    """A registered version's name, number, aliases and metrics at export time, and the digest
    the registry recorded for its manifest (``None`` for a version packaged before digests)."""

    name: str
    version: str
    artifact_sha256: str | None
    aliases: tuple[str, ...] = ()
    metrics: dict = field(default_factory=dict)
    exported_at: str = ""
    format_version: int = FORMAT_VERSION

    def write(self, folder: Path) -> Path:
        path = Path(folder) / RECORD
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def is_registered_copy(target: str) -> bool:
    """Whether ``target`` (what a user gave as a model) names a folder holding a registered
    copy rather than a registry address: a path (with a ``/``, or ``.``) to such a folder."""
    if target.startswith("models:/") or not ("/" in target or target in (".", "..")):
        return False
    return (Path(target) / RECORD).is_file()


def read_registered_copy(folder: Path) -> tuple[Registration, Path]:
    """The registration in ``folder`` and its artifact folder, whose manifest must be the one
    the registry recorded; else an :class:`ArtifactError` saying what to do."""
    folder = Path(folder)
    try:
        data = json.loads((folder / RECORD).read_text())
        data["aliases"] = tuple(data.get("aliases", ()))
        registration = Registration(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise ArtifactError(
            f"{folder / RECORD} is not a registration nbmlops wrote ({exc}); export the "
            "version again with nbmlops export MODEL --format docker"
        ) from None
    if registration.format_version > FORMAT_VERSION:
        raise ArtifactError(
            f"{folder / RECORD} has format {registration.format_version}; this nbmlops reads up "
            f"to {FORMAT_VERSION}: upgrade nbmlops"
        )
    artifact = folder / MODEL_FOLDER
    if not (artifact / "manifest.json").is_file():
        raise ArtifactError(
            f"{artifact} holds no artifact (no manifest.json); export the version again"
        )
    expected = registration.artifact_sha256
    if expected is not None and manifest_digest(artifact) != expected:
        raise ArtifactModifiedError(
            str(artifact),
            "manifest.json",
            f"is not the one registered for {registration.name} v{registration.version} ({RECORD})",
        )
    return registration, artifact
