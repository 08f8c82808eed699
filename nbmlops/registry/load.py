"""``nbmlops.load``: a registered version (or an artifact folder) as a model that predicts."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from nbmlops.artifact.card import Card
from nbmlops.artifact.files import DIGEST_TAG, ArtifactFiles
from nbmlops.artifact.lineage import Lineage
from nbmlops.artifact.nbmlops_loader_v1 import ArtifactPredictor
from nbmlops.artifact.profile import Profile
from nbmlops.artifact.schema import Schema
from nbmlops.artifact.validation import ALLOW, REJECT, Validator
from nbmlops.config import Settings
from nbmlops.errors import UsageError
from nbmlops.registry.registry import ModelVersion, Registry


@dataclass(frozen=True)
class LoadedModel:
    """A verified artifact: ``.predict(df)`` plus its schema, profile, lineage and metadata.

    The estimator and the preprocessing load on first use: the monitor, the card and the
    metadata need only the artifact's JSON files.
    """

    files: ArtifactFiles
    version: ModelVersion | None = None

    @cached_property
    def _validators(self) -> dict[str, Validator]:
        """One validator per unknown-category policy, built once, not per predict call."""
        return {policy: Validator(self.schema, policy) for policy in (REJECT, ALLOW)}

    @cached_property
    def predictor(self) -> ArtifactPredictor:
        # Read now, checked against the manifest read at load time: the files may have changed.
        return self.files.predictor()

    @property
    def schema(self) -> Schema:
        return self.files.schema

    @property
    def profile(self) -> Profile:
        return self.files.profile

    @property
    def lineage(self) -> Lineage:
        return self.files.lineage

    @property
    def path(self) -> Path:
        return self.files.root

    @property
    def digest(self) -> str:
        """SHA-256 of the manifest: one hash for the whole artifact."""
        return self.files.digest

    @property
    def metadata(self) -> dict:
        config = self.files.config
        data = {
            "name": config["name"],
            "version": None,
            "aliases": [],
            "task": config["task"],
            "classes": list(self.schema.classes) if self.schema.classes else None,
            "primary_metric": config["primary_metric"],
            "metrics": dict(self.lineage.metrics),
            "estimator_format": config["estimator_format"],
            "preprocess": list(config["preprocess"]),
            "artifact_sha256": self.digest,
            "path": str(self.path),
        }
        if self.version is not None:
            data.update(
                name=self.version.name,
                version=self.version.version,
                aliases=list(self.version.aliases),
                run_id=self.version.run_id,
                source=self.version.source,
                tags=dict(self.version.tags),
            )
        return data

    @property
    def card(self) -> Card:
        return Card(
            name=self.metadata["name"],
            schema=self.schema,
            lineage=self.lineage,
            primary_metric=self.files.config["primary_metric"],
            artifact_digest=self.digest,
            estimator_fallback=self.files.config.get("estimator_fallback"),
            version=self.version.version if self.version else None,
            aliases=self.version.aliases if self.version else (),
            description=self.version.description if self.version else None,
        )

    def predict(self, frame: pd.DataFrame, unknown_categories: str = REJECT) -> pd.DataFrame:
        """Predict raw rows: a ``prediction`` column and, for classifiers, ``proba_<label>``.

        The rows are checked against the schema first, as the server checks them: a missing
        column, a value of the wrong type, a null where training had none or a category never
        seen in training (unless ``unknown_categories="allow"``) raises
        :class:`~nbmlops.errors.ValidationError` naming each row (by position) and column.
        """
        if not isinstance(frame, pd.DataFrame):
            raise UsageError(f"predict takes a pandas DataFrame, got {type(frame).__name__}")
        validator = self._validators.get(unknown_categories)
        if validator is None:
            raise UsageError(
                f"unknown_categories must be {REJECT!r} or {ALLOW!r}, not {unknown_categories!r}"
            )
        validator.check_frame(frame)
        return self.predictor.predict(validator.builder.conform(frame))

    def _repr_html_(self) -> str:
        return self.card.to_html()

    def __repr__(self) -> str:
        return f"<LoadedModel {self.metadata['name']} v{self.metadata['version']} at {self.path}>"


def load(ref: str | Path, settings: Settings | None = None) -> LoadedModel:
    """Load a model by address (``churn``, ``churn@production``, ``churn@v3``, ``models:/churn/3``,
    ``models:/churn@production``) or from an artifact folder.

    Every file is checked against the manifest first; for a registered version, the manifest
    must also be the one registered (its SHA-256 is the version's ``nbmlops.artifact_sha256``
    tag), so a rewritten manifest is refused too. Versions registered without the tag are
    checked against their manifest alone."""
    if _is_folder(ref):
        return _load_dir(Path(ref), None)
    registry = Registry(settings)
    version = registry.resolve(ref)
    return _load_dir(registry.local_path(version), version)


def _is_folder(ref: str | Path) -> bool:
    """A path, not an address: a Path, or a string with a slash that is not a models:/ URI."""
    if isinstance(ref, Path):
        return True
    return isinstance(ref, str) and "/" in ref and not ref.startswith("models:/")


def _load_dir(root: Path, version: ModelVersion | None) -> LoadedModel:
    if version is None:
        return LoadedModel(files=ArtifactFiles.read(root))
    files = ArtifactFiles.read(
        root, version.tags.get(DIGEST_TAG), f"{version.name} v{version.version}"
    )
    return LoadedModel(files=files, version=version)
