"""A server whose PostgreSQL log goes away: it answers 503 instead of a prediction it could not
log, still tells a bad caller what is wrong, and recovers by itself when the log comes back."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest
from psycopg import sql

import nbmlops
from nbmlops.errors import ServingError
from nbmlops.predlog.log import PredictionLog
from tests.churn_store import (
    NAME,
    churn_registry_fixture,  # noqa: F401 - a fixture
    churn_store_fixture,  # noqa: F401 - a fixture
)


def set_connections(admin_uri: str, database: str, allowed: bool) -> None:
    """Let clients into ``database`` or not; when not, drop the ones that are in."""
    with psycopg.connect(admin_uri, autocommit=True) as db:
        db.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(database), sql.Literal(allowed)
            )
        )
        if not allowed:
            db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )


def test_a_log_outage_answers_503_and_the_server_recovers(
    churn_registry, postgres_admin_uri, postgres_log_uri, monkeypatch
):
    monkeypatch.setenv("NBMLOPS_LOG_URI", postgres_log_uri)
    database = postgres_log_uri.rsplit("/", 1)[1]
    record = churn_registry.X_score.iloc[:1].to_dict("records")[0]
    server = nbmlops.serve(f"{NAME}@v1")
    answered = 0
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/predict", json=record).status_code == 200
            answered += 1

            set_connections(postgres_admin_uri, database, allowed=False)
            refused = client.post("/predict", json=record)
            assert refused.status_code == 503
            assert "prediction log cannot be written" in refused.json()["error"]
            assert refused.json()["request_id"]
            bad = client.post("/predict", json={**record, "tenure_months": "ten"})
            assert bad.status_code == 422 and "tenure_months" in bad.text

            set_connections(postgres_admin_uri, database, allowed=True)
            deadline = time.monotonic() + 30
            while (reply := client.post("/predict", json=record)).status_code != 200:
                assert reply.status_code == 503, reply.text
                assert time.monotonic() < deadline, "the server never wrote to the log again"
                time.sleep(0.5)
            answered += 1
    finally:
        server.stop()
    log = PredictionLog(postgres_log_uri)
    try:
        assert log.count(NAME, "ok") == answered, "every answered prediction, and only those"
    finally:
        log.close()


def test_a_server_whose_log_cannot_be_reached_does_not_start(churn_registry, monkeypatch):
    monkeypatch.setenv("NBMLOPS_LOG_URI", "postgresql://nbmlops:secret@127.0.0.1:1/nbmlops")
    with pytest.raises(ServingError) as refused:
        nbmlops.serve(f"{NAME}@v1", timeout=60)
    message = str(refused.value)
    assert "cannot connect to the prediction log" in message and "NBMLOPS_LOG_URI" in message
    assert "secret" not in message
