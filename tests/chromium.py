"""Debian's Chromium for the browser tests (Playwright cannot download browsers here)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# CI (.ci/run) sets NBMLOPS_REQUIRE_BROWSER=1: there a missing Chromium fails the test
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("NBMLOPS_REQUIRE_BROWSER"),
    reason="needs Debian's chromium: apt-get install chromium",
)


def launch(playwright):
    """A headless Chromium as these machines can run it (no sandbox, no GPU, no network of
    its own)."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
        ],
    )
