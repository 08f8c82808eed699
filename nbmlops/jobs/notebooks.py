"""Running notebooks with papermill in a kernel that is this very Python (demo, jobs)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from nbmlops.config import Settings

KERNEL_NAME = "nbmlops-python"


def ensure_kernel(settings: Settings) -> str:
    """Write a kernelspec for ``sys.executable`` under the store and put it on ``JUPYTER_PATH``.

    A user's own ``python3`` kernelspec may point at another environment without nbmlops;
    this one always runs the interpreter that runs nbmlops, with that interpreter's scripts
    first on ``PATH`` so that ``!nbmlops ...`` in a cell works in a venv nobody activated.
    """
    spec_dir = settings.home / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (nbmlops)",
        "language": "python",
        "env": {"PATH": f"{Path(sys.executable).parent}{os.pathsep}${{PATH}}"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    jupyter_dir = str(settings.home / "jupyter")
    paths = [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    if jupyter_dir not in paths:
        os.environ["JUPYTER_PATH"] = os.pathsep.join([jupyter_dir, *paths])
    return KERNEL_NAME


def run_notebook(
    notebook: Path, output: Path, settings: Settings, parameters: dict | None = None
) -> Path:
    """Execute ``notebook`` with papermill into ``output`` (in the current working directory)."""
    import papermill

    kernel = ensure_kernel(settings)
    output.parent.mkdir(parents=True, exist_ok=True)
    # The kernel inherits this, so lineage records the notebook that really ran.
    before = os.environ.get("NBMLOPS_NOTEBOOK_PATH")
    os.environ["NBMLOPS_NOTEBOOK_PATH"] = str(Path(notebook).resolve())
    try:
        papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters=parameters or {},
            kernel_name=kernel,
            cwd=os.getcwd(),
            progress_bar=sys.stderr.isatty(),
        )
    finally:
        if before is None:
            os.environ.pop("NBMLOPS_NOTEBOOK_PATH", None)
        else:
            os.environ["NBMLOPS_NOTEBOOK_PATH"] = before
    return output
