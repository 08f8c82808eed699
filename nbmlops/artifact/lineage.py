"""Lineage: which code, data, notebook and environment produced a model."""

from __future__ import annotations

import functools
import getpass
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

#: Distributions whose versions every artifact records and pins.
CORE_PACKAGES = ("scikit-learn", "pandas", "numpy", "scipy", "skops", "joblib", "mlflow")


@dataclass(frozen=True)
class NotebookContext:
    """Where a packaging call came from; every field may be unknown."""

    path: str | None = None
    cell_source: str | None = None
    execution_count: int | None = None

    @property
    def cell_hash(self) -> str | None:
        if self.cell_source is None:
            return None
        return hashlib.sha256(self.cell_source.encode()).hexdigest()


@dataclass(frozen=True)
class Lineage:
    """Everything needed to tell how a version was made."""

    data_hash: str
    data_shape: tuple[int, int]
    target: str | None
    hyperparameters: dict
    metrics: dict
    notebook_path: str | None
    cell_hash: str | None
    execution_count: int | None
    git_commit: str | None
    git_dirty: bool | None
    packages: dict
    python: str
    user: str
    created: str
    eval_data_hash: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data["data_shape"] = list(self.data_shape)
        data["format_version"] = 1
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Lineage:
        fields = {k: v for k, v in data.items() if k != "format_version"}
        fields["data_shape"] = tuple(fields["data_shape"])
        return cls(**fields)


def data_hash(frame: pd.DataFrame | pd.Series) -> str:
    """Content hash of a frame: values, column names and dtypes, not the index."""
    if isinstance(frame, pd.Series):
        frame = frame.to_frame()
    digest = hashlib.sha256()
    for name in frame.columns:
        digest.update(f"{name}\0{frame[name].dtype}\0".encode())
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest.update(rows.tobytes())
    return "sha256:" + digest.hexdigest()


def notebook_path(
    user_ns: dict, env: dict | None = None, explicit: str | None = None
) -> str | None:
    """The running notebook's path where the front end exposes it, else None.

    Order: an explicit path, ``NBMLOPS_NOTEBOOK_PATH``, VS Code's ``__vsc_ipynb_file__``,
    JupyterLab's ``__session__`` / ``JPY_SESSION_NAME``, papermill's ``PAPERMILL_INPUT_PATH``.
    """
    env = os.environ if env is None else env
    candidates = (
        explicit,
        env.get("NBMLOPS_NOTEBOOK_PATH"),
        user_ns.get("__vsc_ipynb_file__"),
        user_ns.get("__session__"),
        env.get("JPY_SESSION_NAME"),
        env.get("PAPERMILL_INPUT_PATH"),
    )
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.endswith(".ipynb"):
            return candidate
    return None


def git_state(directory: Path) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git repository holding ``directory``, or ``(None, None)``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    return commit.stdout.strip(), bool(status.stdout.strip())


def package_versions(extra_modules: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the core packages and of the distributions behind ``extra_modules``."""
    names = list(CORE_PACKAGES)
    for module in extra_modules:
        if module in sys.stdlib_module_names or module in ("sklearn", *CORE_PACKAGES):
            continue
        names.extend(_distributions().get(module, []))
    versions = {}
    for name in dict.fromkeys(names):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


@functools.cache
def _distributions() -> dict[str, list[str]]:
    """Module name -> distribution names; scanning every installed package takes ~0.5 s."""
    return importlib.metadata.packages_distributions()


def build_lineage(
    *,
    data: pd.DataFrame,
    target: pd.Series | None,
    hyperparameters: dict,
    metrics: dict,
    context: NotebookContext,
    packages: dict,
    eval_data: pd.DataFrame | None = None,
) -> Lineage:
    """Collect the lineage of one packaging call."""
    where = Path(context.path).parent if context.path else Path.cwd()
    commit, dirty = git_state(where if where.exists() else Path.cwd())
    return Lineage(
        data_hash=data_hash(data),
        data_shape=(int(data.shape[0]), int(data.shape[1])),
        target=None if target is None else str(getattr(target, "name", None) or "target"),
        hyperparameters=hyperparameters,
        metrics=metrics,
        notebook_path=context.path,
        cell_hash=context.cell_hash,
        execution_count=context.execution_count,
        git_commit=commit,
        git_dirty=dirty,
        packages=packages,
        python=platform.python_version(),
        user=_user(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        eval_data_hash=None if eval_data is None else data_hash(eval_data),
    )


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
