"""``nbmlops demo``: run the quickstart notebook end to end on the embedded store."""

from __future__ import annotations

from pathlib import Path

from nbmlops.config import Settings
from nbmlops.errors import UsageError
from nbmlops.jobs.notebooks import run_notebook

QUICKSTART = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"


def run_demo(notebook: Path | None = None, output: Path | None = None) -> Path:
    """Execute the quickstart with papermill; returns the executed notebook's path."""
    notebook = notebook or QUICKSTART
    if not notebook.is_file():
        raise UsageError(
            f"the quickstart notebook is not at {notebook}; run the demo from a source "
            "checkout (pip install -e .) or pass --notebook PATH"
        )
    settings = Settings.from_env()
    settings.ensure()
    output = output or settings.runs_dir / "quickstart.ipynb"
    return run_notebook(notebook, output, settings)
