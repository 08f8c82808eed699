"""Each test runs in its own working directory with its own embedded store."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from nbmlops.config import Settings
from nbmlops.jobs.notebooks import ensure_kernel

pytest_plugins = ["tests.team_services", "tests.redis_service"]

_STORE_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "NBMLOPS_LOG_URI",
    "NBMLOPS_NOTEBOOK_PATH",
)


@pytest.fixture(autouse=True)
def isolated_store(tmp_path, monkeypatch) -> Settings:
    """A fresh working directory whose ``.nbmlops/`` is the store; MLflow variables unset."""
    monkeypatch.chdir(tmp_path)
    for name in _STORE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NBMLOPS_HOME", str(tmp_path / ".nbmlops"))
    monkeypatch.setenv("JUPYTER_PATH", os.environ.get("JUPYTER_PATH", ""))
    return Settings.from_env()


@pytest.fixture
def settings(isolated_store) -> Settings:
    return isolated_store


def make_notebook(*sources: str) -> nbformat.NotebookNode:
    """A notebook with one code cell per source."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


@pytest.fixture
def run_cells(settings):
    """Execute code cells in a real kernel (nbclient); returns the executed notebook.

    With ``expect_error=True`` returns ``(notebook, CellExecutionError)`` instead of raising.
    """
    kernel = ensure_kernel(settings)

    def run(*sources: str, expect_error: bool = False, timeout: int = 300):
        nb = make_notebook(*sources)
        client = NotebookClient(
            nb, kernel_name=kernel, timeout=timeout, resources={"metadata": {"path": os.getcwd()}}
        )
        if not expect_error:
            client.execute()
            return nb
        with pytest.raises(CellExecutionError) as info:
            client.execute()
        return nb, info.value

    return run


def outputs_text(nb: nbformat.NotebookNode) -> str:
    """All text of all outputs of a notebook (streams, results, errors), for assertions."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
            parts.append(out.get("data", {}).get("text/html", ""))
            parts.append(out.get("evalue", ""))
    return "\n".join(parts)


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
