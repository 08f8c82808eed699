"""A reviewer without a kernel: the executed notebook as nbconvert's default HTML, offline, in a
real Chromium."""

from __future__ import annotations

import os

import numpy as np
from nbconvert import HTMLExporter

from nbmlops.datasets import make_churn
from tests.chromium import launch, needs_chromium
from tests.monitoring.test_monitor import (
    drifted,
    log_traffic,
    packaged_fixture,  # noqa: F401 - the fixture
)

SCREENSHOT = os.environ.get("NBMLOPS_SCREENSHOT")  # set to refresh docs/monitor.png
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

pytestmark = needs_chromium


def test_every_report_is_visible_in_default_nbconvert_html_offline(
    run_cells, settings, packaged, tmp_path
):
    from playwright.sync_api import sync_playwright

    current = make_churn(3000, seed=4).drop(columns="churned")
    log_traffic(settings, packaged, drifted(current, np.random.default_rng(4)))
    # run_cells executes with nbclient's defaults, as papermill does: widget state is stored
    nb = run_cells(
        "%load_ext nbmlops\nimport nbmlops",
        "nbmlops.load('churn')",
        "server = %mlops_serve churn\nserver",
        "%mlops_serve --list",
        "board = %mlops_monitor churn --refresh 60\nboard",
        "board.stop()\n%mlops_serve --stop all",
    )
    live = nb.cells[4].outputs[1].data[WIDGET_VIEW]["model_id"]
    assert live in nb.metadata.widgets[WIDGET_STATE]["state"]
    body, _ = HTMLExporter().from_notebook_node(nb)  # nbconvert's default settings
    assert WIDGET_VIEW in body, "nbconvert chose the widget's view for the live output"
    page_file = tmp_path / "executed.html"
    page_file.write_text(body)
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            # offline: the widget manager, require.js and MathJax never load
            page.route(
                "**/*",
                lambda route: (
                    route.continue_() if route.request.url.startswith("file:") else route.abort()
                ),
            )
            page.goto(page_file.as_uri())
            report = page.locator(".nbmlops-monitor")
            report.wait_for(state="visible", timeout=30_000)
            text = report.inner_text()
            assert "churn v1" in text and "Drift per feature" in text
            assert "ALERT" in text and "DRIFTED" in text and "monthly_charges drifted" in text
            assert "latency p50 / p95 / p99" in text
            chart = report.locator("img")
            chart.wait_for(state="visible", timeout=30_000)
            width = chart.evaluate("img => img.complete ? img.naturalWidth : 0")
            assert width > 200, "the drift charts did not render"
            card = page.locator(".nbmlops-card")
            assert card.is_visible() and "Model card: churn v1" in card.inner_text()
            assert "Input schema" in card.inner_text()
            handle = page.get_by_text("Serving churn v1")
            assert handle.is_visible()
            assert (
                "http://127.0.0.1:"
                in page.locator(".jp-OutputArea-output", has=handle).first.inner_text()
            )
            running = page.locator(".jp-OutputArea-output", has_text="Running").first
            assert running.is_visible() and "churn" in running.inner_text()
            if SCREENSHOT:
                report.screenshot(path=SCREENSHOT)
        finally:
            browser.close()
