"""Running notebooks with papermill in a kernel that is this very Python (demo, jobs)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from traitlets.config import Config

from nbmlops.config import Settings

KERNEL_NAME = "nbmlops-python"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


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
    notebook: Path,
    output: Path,
    settings: Settings,
    parameters: dict | None = None,
    *,
    on_cell_executed: Callable[..., None] | None = None,
    progress_bar: bool | None = None,
) -> Path:
    """Execute ``notebook`` with papermill into ``output`` (in the current working directory).

    ``on_cell_executed`` is nbclient's hook, called with ``cell``, ``cell_index`` and
    ``execute_reply`` after each code cell; ``progress_bar`` defaults to a bar on a terminal.
    """
    import papermill

    kernel = ensure_kernel(settings)
    output.parent.mkdir(parents=True, exist_ok=True)
    # The kernel inherits this, so lineage records the notebook that really ran.
    before = os.environ.get("NBMLOPS_NOTEBOOK_PATH")
    os.environ["NBMLOPS_NOTEBOOK_PATH"] = str(Path(notebook).resolve())
    try:
        with _kernel_transport() as config:
            papermill.execute_notebook(
                str(notebook),
                str(output),
                parameters=parameters or {},
                kernel_name=kernel,
                cwd=os.getcwd(),
                progress_bar=sys.stderr.isatty() if progress_bar is None else progress_bar,
                config=config,
                on_cell_executed=on_cell_executed,
            )
    finally:
        _valid_widget_state(output)
        if before is None:
            os.environ.pop("NBMLOPS_NOTEBOOK_PATH", None)
        else:
            os.environ["NBMLOPS_NOTEBOOK_PATH"] = before
    return output


def _valid_widget_state(executed: Path) -> None:
    """Drop a ``metadata.widgets`` that has no widget ``state`` from the executed notebook.

    nbclient writes the state of the widgets a run made, under ``state``; a run that made none
    keeps what the source notebook carried, and an entry without ``state`` (some editors save
    one) makes GitHub refuse to render the notebook and nbconvert's HTML fail.
    """
    import nbformat

    if not executed.is_file():
        return
    nb = nbformat.read(executed, as_version=4)
    widgets = nb.metadata.get("widgets")
    if widgets is None:
        return
    entry = widgets.get(WIDGET_STATE) if isinstance(widgets, dict) else None
    if not (isinstance(entry, dict) and isinstance(entry.get("state"), dict)):
        del nb.metadata["widgets"]
        nbformat.write(nb, executed)


def html_copy(executed: Path) -> Path:
    """Write the executed notebook as HTML next to it (nbconvert's defaults); returns its path."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(executed))
    page = executed.with_suffix(".html")
    page.write_text(body, encoding="utf-8")
    return page


@contextlib.contextmanager
def _kernel_transport() -> Iterator[Config]:
    """nbclient's configuration for a kernel reached over IPC sockets in a private folder.

    Over TCP the kernel's messages are plain text on local ports, and the kernel warns about it
    on every start; the IPC sockets live in a folder only this user can open. Their paths are
    short (``/tmp/nbmlops-kernel-XXXX/kernel-N``): a Unix socket path has at most about 100
    bytes. Windows has no IPC transport and keeps TCP.
    """
    config = Config()
    if os.name == "nt":
        yield config
        return
    with tempfile.TemporaryDirectory(prefix="nbmlops-kernel-") as folder:
        config.KernelManager.transport = "ipc"
        config.KernelManager.ip = str(Path(folder) / "kernel")
        yield config
