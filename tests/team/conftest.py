"""What a team member sets, and nothing else: the tracking server and the PostgreSQL log."""

from __future__ import annotations

import pytest

from nbmlops.config import Settings


@pytest.fixture
def team(team_tracking_uri, postgres_log_uri, monkeypatch) -> Settings:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_tracking_uri)
    monkeypatch.setenv("NBMLOPS_LOG_URI", postgres_log_uri)
    return Settings.from_env()
