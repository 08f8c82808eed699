"""Schemathesis against the served OpenAPI document: whatever it sends, never a 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.served_model import server_fixture, store_fixture  # noqa: F401 - fixtures


def assert_schemathesis_finds_no_server_error(url: str) -> None:
    """Run schemathesis against ``url``'s ``/openapi.json``; fail on any 5xx it provokes."""
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "st"),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "60",
            "--request-timeout",
            "30",
            "--generation-deterministic",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "passed" in proc.stdout and "ST101" not in proc.stdout


def test_schemathesis_finds_no_server_error(server):
    assert_schemathesis_finds_no_server_error(server.url)
