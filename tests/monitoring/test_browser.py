"""A reviewer without a kernel: the executed notebook as nbconvert HTML in a real Chromium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbconvert import HTMLExporter
from traitlets.config import Config

from nbmlops.datasets import make_churn
from tests.monitoring.test_monitor import (
    drifted,
    log_traffic,
    packaged_fixture,  # noqa: F401 - the fixture
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = os.environ.get("NBMLOPS_SCREENSHOT")  # set to refresh docs/monitor.png

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium: apt-get install chromium"
)


def static_html(nb: nbformat.NotebookNode) -> str:
    """nbconvert HTML that prefers the static snapshot over the widget view, as a reviewer's
    viewer without a widget manager must."""
    priority = [
        "text/html",
        "image/svg+xml",
        "image/png",
        "text/markdown",
        "text/plain",
        "application/vnd.jupyter.widget-view+json",
    ]
    exporter = HTMLExporter(config=Config({"NbConvertBase": {"display_data_priority": priority}}))
    body, _ = exporter.from_notebook_node(nb)
    return body


def test_monitor_report_is_visible_in_offline_nbconvert_html(
    run_cells, settings, packaged, tmp_path
):
    from playwright.sync_api import sync_playwright

    current = make_churn(3000, seed=4).drop(columns="churned")
    log_traffic(settings, packaged, drifted(current, np.random.default_rng(4)))
    nb = run_cells("%load_ext nbmlops", "%mlops_monitor churn")
    page_file = tmp_path / "executed.html"
    page_file.write_text(static_html(nb))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            page.goto(page_file.as_uri())
            report = page.wait_for_selector(".nbmlops-monitor", timeout=30_000)
            text = report.inner_text()
            assert "churn v1" in text and "Drift per feature" in text
            assert "ALERT" in text and "DRIFTED" in text and "monthly_charges drifted" in text
            assert "latency p50 / p95 / p99" in text
            chart = page.wait_for_selector(".nbmlops-monitor img", timeout=30_000)
            width = chart.evaluate("img => img.complete ? img.naturalWidth : 0")
            assert width > 200, "the drift charts did not render"
            if SCREENSHOT:
                report.screenshot(path=SCREENSHOT)
        finally:
            browser.close()
