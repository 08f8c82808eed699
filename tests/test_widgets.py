"""The monitor dashboard: what a notebook keeps of it, and its refreshing, in a real kernel too."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from nbmlops.datasets import make_churn
from nbmlops.errors import ArtifactModifiedError, UsageError
from nbmlops.jobs.notebooks import ensure_kernel
from nbmlops.monitoring.monitor import monitor
from nbmlops.registry.load import load
from nbmlops.widgets import Dashboard
from tests.conftest import make_notebook
from tests.monitoring.test_monitor import (
    drifted,
    log_traffic,
    packaged_fixture,  # noqa: F401 - the fixture
)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
REPORT_MIMETYPES = {"text/html", "image/png", "text/plain"}


def refresh_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("nbmlops-monitor")]


def wait_until(condition, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_the_report_is_an_output_of_its_own_and_the_live_widget_another(
    run_cells, settings, packaged
):
    log_traffic(settings, packaged, make_churn(500, seed=2).drop(columns="churned"))
    nb = run_cells(
        "%load_ext nbmlops\nimport matplotlib.pyplot as plt",
        "report = %mlops_monitor churn\nreport",
        "report.alerts",
        "live = %mlops_monitor churn --refresh 60\nlive",
        "live.stop()\nplt.plot([1, 2])\nplt.show()",
    )
    # without --refresh: the report, as one output every viewer can show, then the live line
    snapshot, controls = nb.cells[1].outputs
    assert snapshot.output_type == "display_data"
    assert set(controls.data) == {WIDGET_VIEW, "text/plain"}
    assert "live refresh of churn v1 (needs the running kernel" in controls.data["text/plain"]
    assert set(snapshot.data) == REPORT_MIMETYPES
    page = snapshot.data["text/html"]
    assert "Drift per feature" in page and "<script" not in page
    png = snapshot.data["image/png"]
    assert base64.b64decode(png).startswith(b"\x89PNG")
    assert f"data:image/png;base64,{png}" in page, "the page shows the same charts"
    assert snapshot.data["text/plain"].startswith("churn v1: OK (500 predictions")
    assert nb.cells[2].outputs[0].data["text/plain"] == "()", "it answers like the report"
    # with --refresh: the report output, then the live line as an output of its own
    report_output, live_output = nb.cells[3].outputs
    assert set(report_output.data) == REPORT_MIMETYPES
    assert set(live_output.data) == {WIDGET_VIEW, "text/plain"}
    assert "live refresh of churn v1 every 60 s" in live_output.data["text/plain"]
    # GitHub renders a notebook with widgets only when their state is stored under "state"
    state = nb.metadata.widgets[WIDGET_STATE]["state"]
    assert live_output.data[WIDGET_VIEW]["model_id"] in state
    # drawing the charts left the notebook's own plots alone (inline, not switched to Agg)
    assert any("image/png" in out.get("data", {}) for out in nb.cells[4].outputs)


def test_refreshing_dashboard_updates_in_place(settings, packaged):
    log_traffic(settings, packaged, make_churn(300, seed=1).drop(columns="churned"))
    dashboard = Dashboard(lambda: monitor("churn", settings=settings), refresh=0.2)
    try:
        assert dashboard.report.status == "ok" and dashboard.report.n_predictions == 300
        first_widget = dashboard.widget
        current = drifted(
            make_churn(3000, seed=2).drop(columns="churned"), np.random.default_rng(2)
        )
        log_traffic(settings, packaged, current)
        assert wait_until(lambda: dashboard.report.n_predictions == 3300)
        assert dashboard.widget is first_widget
        assert "live: churn v1, updated" in dashboard.widget.children[0].value
        assert dashboard.alerts and dashboard.to_dict()["status"] == "alert"
        assert "ALERT" in dashboard.to_html()
        assert dashboard.to_frame().loc["monthly_charges", "drifted"]
        bundle = dashboard._repr_mimebundle_()
        assert set(bundle) == REPORT_MIMETYPES
        assert "ALERT" in bundle["text/html"] and "alert" in bundle["text/plain"].lower()
    finally:
        dashboard.stop()
    assert refresh_threads() == []
    assert "stopped at" in dashboard.widget.children[0].value


def test_a_new_dashboard_for_the_model_stops_the_previous_one(settings, packaged):
    log_traffic(settings, packaged, make_churn(300, seed=1).drop(columns="churned"))
    first = Dashboard(lambda: monitor("churn", settings=settings), refresh=0.1)
    second = Dashboard(lambda: monitor("churn", settings=settings), refresh=0.1)
    try:
        assert wait_until(lambda: refresh_threads() == ["nbmlops-monitor churn v1"])
        stamp, button, _refresh_now = first.widget.children
        assert "a newer dashboard for this model replaced this one" in stamp.value
        assert button.disabled
        before = second.report.window_end
        assert wait_until(lambda: second.report.window_end != before), "the new one refreshes"
    finally:
        second.stop()
    assert refresh_threads() == []


def test_closing_the_widget_or_its_button_stops_refreshing(settings, packaged):
    log_traffic(settings, packaged, make_churn(300, seed=1).drop(columns="churned"))
    closed = Dashboard(lambda: monitor("churn", settings=settings), refresh=0.1)
    closed.widget.close()
    assert wait_until(lambda: refresh_threads() == [])
    clicked = Dashboard(lambda: monitor("churn", settings=settings), refresh=0.1)
    clicked.widget.children[1].click()
    assert wait_until(lambda: refresh_threads() == [])
    assert "stopped at" in clicked.widget.children[0].value


def test_a_failed_refresh_says_why_with_its_text_escaped(settings, packaged):
    log_traffic(settings, packaged, make_churn(300, seed=1).drop(columns="churned"))
    since = [None]
    dashboard = Dashboard(lambda: monitor("churn", since=since[0], settings=settings), 0.1)
    try:
        since[0] = "<img src=x onerror=alert(1)>"
        stamp = dashboard.widget.children[0]
        assert wait_until(lambda: "refresh failed" in stamp.value)
        assert "&lt;img src=x onerror=alert(1)&gt;" in stamp.value
        assert "<img" not in stamp.value
        assert dashboard.report.n_predictions == 300, "the last good report stays"
    finally:
        dashboard.stop()


@pytest.mark.parametrize("refresh", [0, -5, float("nan"), float("inf")])
def test_refresh_must_be_a_positive_number_of_seconds(refresh):
    # -5 refreshed in a busy loop, inf crashed the thread, 0 silently did not refresh
    with pytest.raises(UsageError, match=r"^--refresh \S+ is not a number of seconds; give"):
        Dashboard(lambda: pytest.fail("nothing is computed for a bad --refresh"), refresh)


EXITS_MID_REFRESH = """
import sys, threading, time
from nbmlops.monitoring.monitor import monitor
from nbmlops.widgets import Dashboard

marks = open(sys.argv[1], "a", buffering=1)
report = monitor("churn")
refreshing = threading.Event()

def compute():
    if threading.current_thread().name.startswith("nbmlops-monitor"):
        marks.write("refresh started\\n")
        refreshing.set()
        time.sleep(1.5)
        marks.write("refresh finished\\n")
    return report

dashboard = Dashboard(compute, refresh=0.05)
refreshing.wait(60)
# the interpreter exits here, in the middle of a refresh
"""


def test_refreshing_stops_at_interpreter_exit_without_cutting_a_refresh_short(
    settings, packaged, tmp_path
):
    log_traffic(settings, packaged, make_churn(300, seed=1).drop(columns="churned"))
    marks = tmp_path / "marks.txt"
    script = tmp_path / "exits.py"
    script.write_text(textwrap.dedent(EXITS_MID_REFRESH))
    proc = subprocess.run(
        [sys.executable, str(script), str(marks)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert marks.read_text().splitlines() == ["refresh started", "refresh finished"]
    assert "Traceback" not in proc.stderr and "Exception in thread" not in proc.stderr


@contextmanager
def kernel(settings):
    """A real kernel that runs one cell at a time, so the test can act between cells."""
    nb = make_notebook()
    client = NotebookClient(
        nb,
        kernel_name=ensure_kernel(settings),
        timeout=300,
        resources={"metadata": {"path": os.getcwd()}},
    )
    client.reset_execution_trackers()

    def run(source: str) -> nbformat.NotebookNode:
        nb.cells.append(nbformat.v4.new_code_cell(source))
        client.execute_cell(nb.cells[-1], len(nb.cells) - 1)
        return nb.cells[-1]

    with client.setup_kernel():
        yield run


WAIT_FOR_3300 = """
import time
deadline = time.monotonic() + 60
while board.report.n_predictions != 3300 and time.monotonic() < deadline:
    time.sleep(0.1)
time.sleep(1.5)  # later refreshes, and the output updates they send, arrive while this runs
print(board.report.n_predictions, board.widget.children[0].value)
"""


def test_a_refreshing_monitor_loads_its_model_once_and_updates_its_report_output(
    settings, packaged
):
    log_traffic(settings, packaged, make_churn(300, seed=1).drop(columns="churned"))
    with kernel(settings) as run:
        run("%load_ext nbmlops")
        shown = run("board = %mlops_monitor churn --refresh 0.2\nboard")
        assert shown.outputs[0].data["text/plain"].startswith("churn v1: OK (300 predictions")
        # the artifact no longer matches its manifest: verifying it again would fail each time
        card = load("churn", settings).path / "card.md"
        card.write_text(card.read_text() + "edited after the dashboard loaded the model\n")
        with pytest.raises(ArtifactModifiedError):
            load("churn", settings)
        current = drifted(
            make_churn(3000, seed=2).drop(columns="churned"), np.random.default_rng(2)
        )
        log_traffic(settings, packaged, current)
        waited = run(WAIT_FOR_3300)
        run("board.stop()")
    printed = waited.outputs[0].text
    assert printed.startswith("3300 <small>live: churn v1, updated"), printed
    report_output, live_output = shown.outputs
    assert report_output.data["text/plain"].startswith("churn v1: ALERT (3300 predictions")
    assert "DRIFTED" in report_output.data["text/html"]
    assert set(report_output.data) == REPORT_MIMETYPES
    assert WIDGET_VIEW in live_output.data


def test_refresh_now_updates_the_report_without_a_refresh_interval(settings, packaged):
    log_traffic(settings, packaged, make_churn(300, seed=1).drop(columns="churned"))
    dashboard = Dashboard(lambda: monitor("churn", settings=settings))
    stamp, refresh_now = dashboard.widget.children
    assert refresh_threads() == [] and "refreshing every" not in stamp.value
    current = drifted(make_churn(3000, seed=2).drop(columns="churned"), np.random.default_rng(2))
    log_traffic(settings, packaged, current)
    assert dashboard.report.n_predictions == 300, "nothing changes until asked"
    refresh_now.click()
    assert dashboard.report.n_predictions == 3300 and dashboard.report.status == "alert"
    assert "live: churn v1, updated" in stamp.value
