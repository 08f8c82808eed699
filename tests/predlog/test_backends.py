"""The log's two backends answer alike; its schema is versioned; concurrent writers lose no row;
a log that cannot be used says what to fix."""

from __future__ import annotations

import sqlite3
import threading

import pandas as pd
import psycopg
import pytest

from nbmlops.errors import LogError
from nbmlops.predlog.log import PredictionLog
from nbmlops.predlog.migrations import LATEST
from nbmlops.predlog.records import ERROR, OK, REJECTED, LogRecord

BATCH_RUN = {
    "ts": 1500.0, "model": "churn", "version": "1", "engine": "local", "input": "/in.csv",
    "input_sha256": "ab" * 32, "output": "/out.parquet", "rows_in": 10, "rows_scored": 9,
    "rows_rejected": 1, "seconds": 0.5,
}  # fmt: skip


def record(i: int, status: str = OK, version: str = "1", route: str = "primary") -> LogRecord:
    return LogRecord(
        id=f"id{i}",
        ts=1000.0 + i,
        model="churn",
        version=version,
        route=route,
        endpoint="/predict",
        status=status,
        latency_ms=2.0 + i,
        inputs={"x": float(i), "city": f"c{i % 3}", "when": "2026-01-01T00:00:00+01:00"},
        outputs={"prediction": i % 2, "probability_1": i / 100} if status == OK else None,
        error=None if status == OK else f"record {i}: x: expected a number",
    )


def fill(log: PredictionLog) -> dict:
    """Write the same traffic, feedback, events and runs; return what every query answers."""
    log.write([record(i) for i in range(70)])  # 64 + 4 + 1 + 1: every statement size
    log.write([record(100, REJECTED), record(101, ERROR), record(102, version="2", route="canary")])
    unknown = log.add_feedback([("id1", 1), ("nope", 0)], ts=1.0)
    assert log.add_feedback([("id1", 1), ("id2", 0), ("id1", 0)], ts=2.0) == []
    assert log.add_feedback([("id2", 1)], ts=3.0) == []  # a second label replaces the first
    log.add_event(1200.0, "churn", "switch", "2", "1", "followed production")
    log.add_batch_run(BATCH_RUN)
    window = log.window("churn", "1", since=1000.0, until=1090.0)
    return {
        "unknown": unknown,
        "count": log.count("churn"),
        "rejected": log.count("churn", REJECTED),
        "routes": sorted(log.routes("churn")),
        "frame": log.frame("churn", "1").drop(columns=[]),
        "events": log.events("churn", "2"),
        "runs": log.batch_runs("churn", "1", since=1000.0),
        "statuses": window.statuses,
        "scored": window.scored,
        "inputs": window.inputs,
        "outputs": window.outputs,
    }


def test_sqlite_and_postgresql_answer_every_query_alike(tmp_path, postgres_log_uri):
    answers = []
    for uri in (f"sqlite:///{tmp_path / 'p.db'}", postgres_log_uri):
        log = PredictionLog(uri)
        answers.append(fill(log))
        log.close()
    sqlite_answers, postgres_answers = answers
    assert sqlite_answers["unknown"] == ["nope"]
    assert sqlite_answers["count"] == 73 and sqlite_answers["rejected"] == 1
    assert sqlite_answers["routes"] == [("canary", "2", 1), ("primary", "1", 72)]
    assert sqlite_answers["events"][0]["reason"] == "followed production"
    assert sqlite_answers["runs"] == [BATCH_RUN]
    labels = sqlite_answers["scored"]["feedback"].tolist()
    assert labels[1:3] == ["0", "1"] and labels.count(None) == 68
    for key, value in sqlite_answers.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(value, postgres_answers[key], check_dtype=False)
        else:
            assert value == postgres_answers[key], key


def test_a_log_from_before_versioning_is_adopted_with_its_rows(tmp_path):
    path = tmp_path / "predictions.db"
    with sqlite3.connect(path) as db:  # the 0.1 schema, as its servers created it
        db.execute(
            "CREATE TABLE predictions (id TEXT PRIMARY KEY, ts REAL NOT NULL, model TEXT NOT "
            "NULL, version TEXT NOT NULL, route TEXT NOT NULL, endpoint TEXT NOT NULL, status "
            "TEXT NOT NULL, latency_ms REAL, inputs TEXT, outputs TEXT, error TEXT)"
        )
        db.execute(
            "INSERT INTO predictions VALUES ('old', 1.0, 'churn', '1', 'primary', '/predict', "
            """'ok', 3.0, '{"x": 1.0}', '{"prediction": 1}', NULL)"""
        )
    db.close()
    log = PredictionLog(path)
    window = log.window("churn", "1")
    assert window.inputs["x"].tolist() == [1.0] and window.statuses == {OK: 1}
    log.add_batch_run(BATCH_RUN)  # a table the old log lacked
    log.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM log_schema").fetchall() == [(LATEST,)]
    db.close()


def test_a_log_written_by_a_newer_nbmlops_is_refused_not_misread(log_uri):
    PredictionLog(log_uri).close()
    if log_uri.startswith("sqlite"):
        db = sqlite3.connect(log_uri.removeprefix("sqlite:///"))
        db.execute("INSERT INTO log_schema VALUES (99, 0, 'from the future')")
        db.commit()
        db.close()
    else:
        with psycopg.connect(log_uri) as db:
            db.execute("INSERT INTO log_schema VALUES (99, 0, 'from the future')")
    with pytest.raises(LogError, match="schema version 99.*upgrade nbmlops"):
        PredictionLog(log_uri)


def test_replicas_opening_a_fresh_database_at_once_migrate_it_once(postgres_log_uri):
    errors, logs = [], []

    def open_one():
        try:
            logs.append(PredictionLog(postgres_log_uri))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and len(logs) == 6
    for log in logs:
        log.close()
    with psycopg.connect(postgres_log_uri) as db:
        assert db.execute("SELECT version FROM log_schema").fetchall() == [(LATEST,)]


def test_concurrent_writers_in_two_replicas_lose_no_row(log_uri):
    replicas = [PredictionLog(log_uri), PredictionLog(log_uri)]

    def writer(n: int):
        log = replicas[n % 2]
        for batch in range(40):
            first = (n * 40 + batch) * 3
            log.write([record(first + k) for k in range(3)])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert replicas[0].count("churn") == 8 * 40 * 3
    assert len(replicas[1].frame("churn")["id"].unique()) == 960
    for log in replicas:
        log.close()


def test_a_log_that_cannot_be_used_says_what_to_fix_without_its_password():
    with pytest.raises(LogError) as refused:
        PredictionLog("postgresql://bob:s3cret@127.0.0.1:1/nbmlops")
    message = str(refused.value)
    assert "NBMLOPS_LOG_URI" in message and "127.0.0.1:1" in message
    assert "s3cret" not in message and "bob:***@" in message
    with pytest.raises(LogError, match="neither a postgresql:// URI nor a SQLite file"):
        PredictionLog("mysql://127.0.0.1/nbmlops")
