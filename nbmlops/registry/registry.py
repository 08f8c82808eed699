"""The model registry: MLflow's registered models, versions and aliases, addressed nbmlops' way.

Addresses: ``NAME`` (its ``production`` alias if set, else its latest live version),
``NAME@ALIAS``, ``NAME@v3``, ``models:/NAME/3`` and ``models:/NAME@ALIAS``.

Every alias write (:meth:`Registry.set_alias`, :meth:`Registry.rollback`,
:meth:`Registry.archive`) holds :func:`alias_lock` on the model. The registry never guesses: an
answer "no such model, version or alias" is told apart from a store that failed to answer, which
is a :class:`~nbmlops.errors.RegistryError` naming the store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from nbmlops.config import Settings
from nbmlops.errors import ModelNotFoundError, RegistryError
from nbmlops.registry import history
from nbmlops.registry.lock import advisory_lock, file_lock
from nbmlops.registry.refs import (
    PRODUCTION,
    parse_ref,
    previous_alias,
    validate_alias,
    validate_name,
)

ARCHIVED_TAG = "archived"
#: MLflow's answers for a model, version or alias that does not exist (the sqlite store says
#: INVALID_PARAMETER_VALUE for a missing alias, RESOURCE_DOES_NOT_EXIST for a missing model or
#: version; a tracking server passes the same codes on). Any other error is the store failing.
_ABSENT = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


@dataclass(frozen=True)
class ModelVersion:
    """One registered version, as the registry knows it."""

    name: str
    version: str
    run_id: str | None
    source: str
    aliases: tuple[str, ...] = ()
    tags: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    created: str = ""
    description: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def archived(self) -> bool:
        return self.tags.get(ARCHIVED_TAG) == "true"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "source": self.source,
            "aliases": list(self.aliases),
            "tags": dict(self.tags),
            "metrics": dict(self.metrics),
            "created": self.created,
            "description": self.description,
        }


@dataclass(frozen=True)
class ModelSummary:
    """A registered model with its versions' aliases, for listings."""

    name: str
    latest_version: str | None
    n_versions: int
    aliases: dict[str, str]
    description: str = ""


class Registry:
    """nbmlops' view of an MLflow registry (embedded sqlite or any tracking server)."""

    def __init__(self, settings: Settings | None = None) -> None:
        from mlflow.tracking import MlflowClient

        for noisy in ("mlflow.store.db.utils", "alembic.runtime.migration"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.settings = settings or Settings.from_env()
        self.settings.ensure()
        self.client = MlflowClient(
            tracking_uri=self.settings.tracking_uri, registry_uri=self.settings.registry_uri
        )

    # -- writing -----------------------------------------------------------------------------

    def experiment_id(self, name: str) -> str:
        """The experiment that holds the runs of model ``name`` (created on first use)."""
        from mlflow.exceptions import MlflowException

        exp_name = f"nbmlops/{name}"
        found = self.client.get_experiment_by_name(exp_name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.settings.embedded:
            location = (self.settings.artifacts_dir / name).as_uri()
        try:
            return self.client.create_experiment(exp_name, artifact_location=location)
        except MlflowException:
            found = self.client.get_experiment_by_name(exp_name)
            if found is None:
                raise
            return found.experiment_id

    def register(
        self,
        name: str,
        artifact_dir: Path,
        *,
        metrics: dict[str, float],
        params: dict[str, str],
        run_tags: dict[str, str],
        version_tags: dict[str, str],
        description: str | None,
    ) -> ModelVersion:
        """Log ``artifact_dir`` as a run and register it as the next version of ``name``."""
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException

        exp_id = self.experiment_id(name)
        run = self.client.create_run(exp_id, run_name=f"package-{name}", tags=run_tags)
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                params=[Param(k[:250], str(v)[:6000]) for k, v in params.items()],
            )
            self.client.log_artifacts(run_id, str(artifact_dir), artifact_path="model")
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id)
        # Under the model's lock: two registrations of one name at once each get a version
        # (a tracking server on PostgreSQL can otherwise give both the same number and refuse one)
        with alias_lock(self.settings, name):
            try:
                self.client.create_registered_model(name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            mv = self.client.create_model_version(
                name,
                source=f"{run.info.artifact_uri}/model",
                run_id=run_id,
                tags=version_tags,
                description=description,
            )
        return self.get(name, mv.version)

    def set_alias(
        self,
        ref: str,
        alias: str,
        remember_previous: bool = True,
        reason: str = "promote",
        detail: str = "",
    ) -> ModelVersion:
        """Point ``alias`` at the version ``ref``; the version it leaves becomes ``previous``
        (``previous-ALIAS`` for aliases other than production) unless told otherwise. Each
        alias moved is recorded in the alias history with ``reason`` (and ``detail``)."""
        validate_alias(alias)
        history.validate_reason(reason)
        with alias_lock(self.settings, parse_ref(ref)[0]):
            target = self.resolve(ref)
            if target.archived:
                raise RegistryError(
                    f"{target.ref} is archived; promote another version or register a new one"
                )
            name, current = target.name, self.alias_version(target.name, alias)
            with self._answering(f"move the alias {name}@{alias}"):
                if remember_previous and current is not None and current != target.version:
                    prev = previous_alias(alias)
                    was = self.alias_version(name, prev)
                    self.client.set_registered_model_alias(name, prev, current)
                    history.record(self, name, prev, was, current, reason, detail)
                self.client.set_registered_model_alias(name, alias, target.version)
            history.record(self, name, alias, current, target.version, reason, detail)
            return self.get(name, target.version)

    def rollback(
        self, name: str, alias: str = PRODUCTION, reason: str = "rollback", detail: str = ""
    ) -> tuple[ModelVersion, ModelVersion]:
        """Swap ``alias`` and its previous version, recording both moves with ``reason``;
        returns ``(now_current, now_previous)``."""
        validate_name(name)
        validate_alias(alias)
        history.validate_reason(reason)
        prev_alias = previous_alias(alias)
        with alias_lock(self.settings, name):
            current = self.alias_version(name, alias)
            previous = self.alias_version(name, prev_alias)
            if current is None:
                raise RegistryError(
                    f"{name} has no '{alias}' alias, so there is nothing to roll back"
                )
            if previous is None:
                raise RegistryError(
                    f"{name}@{alias} is v{current} and no earlier version was recorded as "
                    f"'{prev_alias}'; promote the version you want with "
                    f"`nbmlops models promote {name}@vN --to {alias}`"
                )
            with self._answering(f"roll back {name}@{alias}"):
                self.client.set_registered_model_alias(name, alias, previous)
                self.client.set_registered_model_alias(name, prev_alias, current)
            history.record(self, name, alias, current, previous, reason, detail)
            history.record(self, name, prev_alias, previous, current, reason, detail)
            return self.get(name, previous), self.get(name, current)

    def archive(self, ref: str, reason: str = "archive", detail: str = "") -> ModelVersion:
        """Remove every alias of the version ``ref`` (each removal recorded) and tag it
        archived."""
        history.validate_reason(reason)
        with alias_lock(self.settings, parse_ref(ref)[0]):
            target = self.resolve(ref)
            with self._answering(f"archive {target.ref}"):
                for alias in target.aliases:
                    self.client.delete_registered_model_alias(target.name, alias)
                    history.record(self, target.name, alias, target.version, None, reason, detail)
                self.client.set_model_version_tag(target.name, target.version, ARCHIVED_TAG, "true")
            return self.get(target.name, target.version)

    # -- reading -----------------------------------------------------------------------------

    def get(self, name: str, version: str) -> ModelVersion:
        """The version ``version`` of ``name``; raises :class:`ModelNotFoundError`."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(name, str(version))
        except MlflowException as exc:
            if exc.error_code not in _ABSENT:
                raise self._failed(f"read {name} v{version}", exc) from None
            raise ModelNotFoundError(
                f"{name} has no version {version}; {self._known_versions(name)}"
            ) from None
        metrics = {}
        if mv.run_id:
            try:
                metrics = dict(self.client.get_run(mv.run_id).data.metrics)
            except MlflowException as exc:  # a deleted run leaves the version without metrics
                if exc.error_code not in _ABSENT:
                    raise self._failed(f"read the run of {name} v{version}", exc) from None
        return ModelVersion(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id,
            source=mv.source,
            aliases=tuple(sorted(mv.aliases or ())),
            tags=dict(mv.tags or {}),
            metrics=metrics,
            created=_iso(mv.creation_timestamp),
            description=mv.description or "",
        )

    def resolve(self, ref: str) -> ModelVersion:
        """The version an address points at."""
        name, version, alias = parse_ref(ref)
        if version is not None:
            return self.get(name, version)
        if alias is not None:
            found = self.alias_version(name, alias)
            if found is None:
                raise ModelNotFoundError(
                    f"{name} has no alias '{alias}'; {self._known_versions(name)}"
                )
            return self.get(name, found)
        production = self.alias_version(name, PRODUCTION)
        if production is not None:
            return self.get(name, production)
        versions = self.versions(name)
        live = [v for v in versions if not v.archived]
        if live:
            return live[-1]
        if versions:
            numbers = ", ".join(v.version for v in versions)
            raise ModelNotFoundError(
                f"every version of {name} is archived ({numbers}); package a new one with "
                f"%%mlops_package {name} ... or address an archived one as {name}@vN"
            )
        raise ModelNotFoundError(self._known_versions(name))

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first."""
        with self._answering(f"list the versions of {name}"):
            found = self.client.search_model_versions(f"name = '{name}'")
        return sorted((self.get(name, mv.version) for mv in found), key=lambda v: int(v.version))

    def list_models(self) -> list[ModelSummary]:
        summaries = []
        with self._answering("list the registered models"):
            models = [
                (rm, self.client.search_model_versions(f"name = '{rm.name}'"))
                for rm in self.client.search_registered_models()
            ]
        for rm, versions in models:
            numbers = sorted(int(v.version) for v in versions)
            summaries.append(
                ModelSummary(
                    name=rm.name,
                    latest_version=str(numbers[-1]) if numbers else None,
                    n_versions=len(numbers),
                    aliases={a: str(v) for a, v in sorted((rm.aliases or {}).items())},
                    description=rm.description or "",
                )
            )
        return sorted(summaries, key=lambda s: s.name)

    def local_path(self, version: ModelVersion) -> Path:
        """A local folder holding the version's artifact (downloaded once when remote)."""
        parsed = urlparse(version.source)
        if parsed.scheme in ("", "file"):
            path = Path(unquote(parsed.path))
            if path.is_dir():
                return path
        import mlflow.artifacts

        dest = self.settings.home / "cache" / version.name / version.version
        if not (dest / "model" / "MLmodel").is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=dest.parent) as partial:
                mlflow.artifacts.download_artifacts(
                    artifact_uri=version.source,
                    dst_path=partial,
                    tracking_uri=self.settings.tracking_uri,
                )
                shutil.rmtree(dest, ignore_errors=True)
                os.replace(partial, dest)
                Path(partial).mkdir()
        return dest / "model"

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version ``alias`` points at; None when the model or the alias does not exist.

        Any other failure is a :class:`RegistryError`: taking it for "no alias" would send
        ``NAME`` to the latest version, which may be one the gate rejected.
        """
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if exc.error_code in _ABSENT:
                return None
            raise self._failed(f"read the alias {name}@{alias}", exc) from None

    def _known_versions(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        try:
            rm = self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code not in _ABSENT:
                raise self._failed(f"read the model {name}", exc) from None
            with self._answering("list the registered models"):
                names = sorted(m.name for m in self.client.search_registered_models())
            known = f"registered models: {', '.join(names)}" if names else "none is registered"
            return (
                f"no model named {name!r} in the registry at {self.settings.tracking_uri} "
                f"({known}); package one with %%mlops_package {name} ..."
            )
        with self._answering(f"list the versions of {name}"):
            versions = self.client.search_model_versions(f"name = '{name}'")
        numbers = ", ".join(str(v) for v in sorted(int(v.version) for v in versions))
        aliases = ", ".join(f"{a}=v{v}" for a, v in sorted((rm.aliases or {}).items()))
        known = f"it has versions {numbers or 'none'}"
        return known + (f" and aliases {aliases}" if aliases else "")

    @contextlib.contextmanager
    def _answering(self, what: str):
        """A failure of the MLflow client inside becomes a :class:`RegistryError`."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as exc:
            raise self._failed(what, exc) from None

    def _failed(self, what: str, exc: Exception) -> RegistryError:
        """The store failed to answer: one line naming it, the reason and what to do."""
        reason = " ".join(str(exc).split())
        reason = reason if len(reason) <= 200 else reason[:200] + "..."
        return RegistryError(
            f"the registry at {self.settings.tracking_uri} failed to {what} ({reason}); check "
            "that it is reachable (MLFLOW_TRACKING_URI, the tracking server or the database "
            "file) and retry"
        )


def _iso(millis: int | None) -> str:
    if not millis:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(millis / 1000))


@contextlib.contextmanager
def alias_lock(settings: Settings, model: str):
    """Hold the store's lock on ``model``'s aliases and versions: two alias writes (promotions,
    rollbacks, a job's gate and candidate, ``package(alias=)``, archiving, a canary's promotion)
    or two registrations never lose or cross an update. On a PostgreSQL registry or log
    (:attr:`Settings.lock_uri`) it is an advisory lock there, held across machines; otherwise a
    file lock under the store, held on this machine. Re-entrant within a thread; every
    alias-writing method of :class:`Registry` takes it."""
    name = validate_name(model)
    if settings.lock_uri is not None:
        with advisory_lock(settings.lock_uri, f"nbmlops/aliases/{name}"):
            yield
    else:
        with file_lock(settings.home / "locks" / f"{name}.lock"):
            yield


def promote(ref: str, to: str = PRODUCTION, settings: Settings | None = None) -> ModelVersion:
    """Point the alias ``to`` at the version ``ref``; the version it leaves becomes ``previous``
    (``previous-ALIAS`` for other aliases), so :func:`rollback` undoes it in one step."""
    return Registry(settings).set_alias(ref, to)


def rollback(
    name: str, alias: str = PRODUCTION, settings: Settings | None = None
) -> tuple[ModelVersion, ModelVersion]:
    """Swap ``alias`` and its previous version; ``(now_current, now_previous)``. A second
    rollback undoes the first."""
    return Registry(settings).rollback(name, alias)
