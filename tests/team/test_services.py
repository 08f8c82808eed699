"""Smoke test of the team path's test services (.ci/team-services, tests/team_services.py).

The fixtures come from tests/conftest.py (``pytest_plugins = ["tests.team_services"]``); importing
them here as well would define them twice and start the services twice in one session.
"""

from __future__ import annotations

import urllib.request
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from mlflow.tracking import MlflowClient

_databases_seen: list[str] = []


@pytest.mark.parametrize("attempt", [1, 2])
def test_each_test_gets_a_fresh_database(postgres_log_uri, postgres_admin_uri, attempt):
    with psycopg.connect(postgres_log_uri) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()[0]
        conn.execute("CREATE TABLE scratch (x int)")
    assert tables == 0
    assert name not in _databases_seen
    with psycopg.connect(postgres_admin_uri) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)", (_databases_seen,)
        ).fetchall()
    assert left == [], "an earlier test's database was not dropped"
    _databases_seen.append(name)


def test_tracking_server_stores_models_in_postgres(team_tracking_uri, postgres_admin_uri):
    with urllib.request.urlopen(f"{team_tracking_uri}/health", timeout=10) as resp:
        assert resp.status == 200

    client = MlflowClient(tracking_uri=team_tracking_uri)
    name = f"smoke-{uuid.uuid4().hex[:12]}"
    client.create_registered_model(name)
    try:
        assert client.get_registered_model(name).name == name
        assert [m.name for m in client.search_registered_models(f"name = '{name}'")] == [name]
        mlflow_db = urlunsplit(urlsplit(postgres_admin_uri)._replace(path="/mlflow"))
        with psycopg.connect(mlflow_db) as conn:
            rows = conn.execute(
                "SELECT name FROM registered_models WHERE name = %s", (name,)
            ).fetchall()
        assert rows == [(name,)], "the server's backend store is not the PostgreSQL cluster"
    finally:
        client.delete_registered_model(name)
