"""Where nbmlops keeps things: the store, its MLflow URIs and folders.

The store is resolved once from the environment; MLflow URIs are then passed explicitly to
``MlflowClient`` so that nothing here writes ``MLFLOW_TRACKING_URI`` into ``os.environ``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".nbmlops"


@dataclass(frozen=True)
class Settings:
    """The store: a home folder, the MLflow tracking and registry URIs, and the prediction
    log's URI (``NBMLOPS_LOG_URI``; a SQLite file under ``home`` by default).

    ``embedded`` is true when nbmlops owns the MLflow backend (sqlite under ``home``).
    """

    home: Path
    tracking_uri: str
    registry_uri: str
    embedded: bool
    log_uri: str = ""

    def __post_init__(self) -> None:
        if not self.log_uri:
            object.__setattr__(self, "log_uri", f"sqlite:///{self.home / 'predictions.db'}")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Resolve the store from ``NBMLOPS_HOME`` and MLflow's own variables."""
        env = dict(os.environ if env is None else env)
        home = Path(env.get("NBMLOPS_HOME") or DEFAULT_HOME).expanduser().resolve()
        user_uri = env.get("MLFLOW_TRACKING_URI")
        tracking = user_uri or f"sqlite:///{home / 'mlflow.db'}"
        registry = env.get("MLFLOW_REGISTRY_URI") or tracking
        return cls(
            home=home,
            tracking_uri=tracking,
            registry_uri=registry,
            embedded=not user_uri,
            log_uri=env.get("NBMLOPS_LOG_URI", ""),
        )

    @property
    def lock_uri(self) -> str | None:
        """The PostgreSQL database whose advisory locks guard alias moves across machines:
        the registry's when it is PostgreSQL, else the log's; None when neither is (a file
        lock under ``home`` then, which holds on one machine)."""
        for uri in (self.registry_uri, self.log_uri):
            if (found := postgres_uri(uri)) is not None:
                return found
        return None

    @property
    def artifacts_dir(self) -> Path:
        """Where runs of the embedded store keep their artifacts."""
        return self.home / "artifacts"

    @property
    def runs_dir(self) -> Path:
        """Executed notebooks of jobs and demos."""
        return self.home / "runs"

    def ensure(self) -> None:
        """Create the home folder (and, for the embedded store, its artifact folder)."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.embedded:
            self.artifacts_dir.mkdir(parents=True, exist_ok=True)


def postgres_uri(uri: str) -> str | None:
    """``uri`` as the ``postgresql://`` URI psycopg takes when it names a PostgreSQL database
    (``postgres://`` and SQLAlchemy's ``postgresql+psycopg://`` too), else None."""
    if uri.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return "postgresql://" + uri.split("://", 1)[1]
    return None


def redacted(uri: str) -> str:
    """``uri`` without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", uri)
