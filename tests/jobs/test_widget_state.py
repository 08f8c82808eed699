"""Notebooks we execute and keep render on GitHub: widget metadata always has its ``state``."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

from nbmlops.cli import main
from nbmlops.jobs.notebooks import WIDGET_STATE, run_notebook
from tests.conftest import make_notebook

TRAIN = Path(__file__).resolve().parents[2] / "notebooks" / "train.ipynb"


def renders_on_github(nb: dict) -> bool:
    """GitHub's rule: a notebook with ``metadata.widgets`` keeps the widget state under
    ``metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]``."""
    widgets = nb["metadata"].get("widgets")
    if widgets is None:
        return True
    return isinstance(widgets.get(WIDGET_STATE, {}).get("state"), dict)


def stateless_widgets(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``nb`` with widget metadata as some editors save it: versions, but no ``state``."""
    nb.metadata.widgets = {WIDGET_STATE: {"version_major": 2, "version_minor": 0}}
    return nb


def test_a_kept_notebook_without_widgets_drops_metadata_github_refuses(settings, tmp_path):
    source = tmp_path / "saved-by-an-editor.ipynb"
    nbformat.write(stateless_widgets(make_notebook("answer = 6 * 7\nanswer")), source)
    assert not renders_on_github(json.loads(source.read_text()))
    executed = run_notebook(source, tmp_path / "runs" / "executed.ipynb", settings)
    assert renders_on_github(json.loads(executed.read_text()))
    assert nbformat.read(executed, as_version=4).cells[0].outputs[0].data["text/plain"] == "42"
    HTMLExporter().from_filename(str(executed))  # nbconvert reads it too (a KeyError before)


def test_a_job_notebook_keeps_the_state_of_the_widgets_it_made(settings, tmp_path, capsys):
    train = stateless_widgets(nbformat.read(TRAIN, as_version=4))
    train.cells.append(nbformat.v4.new_code_cell("%mlops_monitor churn --refresh 3600"))
    notebook = tmp_path / "train.ipynb"
    nbformat.write(train, notebook)
    assert main(["retrain", str(notebook), "--model", "churn"]) == 0, capsys.readouterr()
    (executed,) = settings.runs_dir.glob("churn-*.ipynb")
    assert renders_on_github(json.loads(executed.read_text()))
    nb = nbformat.read(executed, as_version=4)
    live = nb.cells[-1].outputs[1].data["application/vnd.jupyter.widget-view+json"]
    assert live["model_id"] in nb.metadata.widgets[WIDGET_STATE]["state"]
    report = executed.with_suffix(".html").read_text()
    assert 'class="nbmlops-monitor"' in report, "the job's HTML report shows the monitor"
