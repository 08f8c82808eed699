"""The prediction log read back for the monitor: statuses, scored rows, feedback by id; on
SQLite and on PostgreSQL alike."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time

import numpy as np

from nbmlops.predlog.log import PredictionLog
from nbmlops.predlog.records import ERROR, OK, REJECTED, LogRecord


def record(i: int, status: str = OK, ts: float | None = None, **inputs) -> LogRecord:
    return LogRecord(
        id=f"id{i}",
        ts=1000.0 + i if ts is None else ts,
        model="churn",
        version="1",
        route="primary",
        endpoint="/predict",
        status=status,
        latency_ms=2.0 + i,
        inputs=inputs or {"x": float(i), "city": f"c{i % 3}"},
        outputs={"prediction": i % 2} if status == OK else None,
        error=None if status == OK else "bad",
    )


def logged(i: int, inputs: str | None) -> LogRecord:
    """A scored record whose inputs were logged as the text ``inputs`` (None: SQL NULL)."""
    return dataclasses.replace(record(i), inputs=inputs)


def test_window_reads_statuses_scored_rows_and_feedback_by_id(log_uri):
    log = PredictionLog(log_uri)
    # written out of time order: the window comes back in time order
    log.write([record(i) for i in (5, 3, 1, 4, 2, 0)])
    log.write([record(10, REJECTED), record(11, ERROR), record(12, OK, ts=5000.0)])
    assert log.add_feedback([("id4", 1), ("id1", 0)], ts=2000.0) == []

    window = log.window("churn", "1", since=1000.0, until=1100.0)
    assert window.statuses == {OK: 6, REJECTED: 1, ERROR: 1}
    assert window.scored["ts"].tolist() == [1000.0 + i for i in range(6)]
    assert window.scored["latency_ms"].tolist() == [2.0 + i for i in range(6)]
    assert window.inputs["x"].tolist() == [float(i) for i in range(6)]
    assert window.inputs["city"].tolist() == [f"c{i % 3}" for i in range(6)]
    assert window.outputs["prediction"].tolist() == [i % 2 for i in range(6)]
    labels = [None if v is None else json.loads(v) for v in window.scored["feedback"]]
    assert labels == [None, 0, None, None, 1, None]
    log.close()


def test_window_copes_with_values_of_mixed_types_and_an_empty_range(log_uri):
    log = PredictionLog(log_uri)
    log.write([record(0, x=1.5, city="a"), record(1, x="n/a", city="b")])
    window = log.window("churn", "1")
    assert window.inputs["x"].tolist() == [1.5, "n/a"]
    empty = log.window("churn", "1", since=9999.0)
    assert empty.statuses == {} and empty.scored.empty and empty.inputs.empty
    log.close()


def test_background_checkpoints_keep_the_write_ahead_log_small(tmp_path):
    path = tmp_path / "predictions.db"
    log = PredictionLog(path, checkpoint_every=0.02)
    wal = path.with_name(path.name + "-wal")
    biggest = 0
    for batch in range(150):
        log.write([record(batch * 100 + i, x=float(i), city="x" * 200) for i in range(100)])
        biggest = max(biggest, wal.stat().st_size)
        time.sleep(0.005)
    log.close()
    # 15,000 rows of ~300 bytes: without checkpoints the write-ahead log would hold them all
    # (SQLite's own checkpoints would let it reach 4 MB first)
    assert biggest < 2_000_000
    reader = PredictionLog(path)
    assert reader.count("churn") == 15_000
    reader.close()


def test_window_skips_and_counts_texts_that_are_not_objects_keeping_positions(tmp_path):
    path = tmp_path / "predictions.db"
    log = PredictionLog(path)
    # the first record is a bare null: pyarrow 25 crashes the whole process on such a first line
    odd = ["null", "[1, 2]", '"text"', "not json", "", '{"x": 1.0}\n{"x": 2.0}', None]
    log.write([logged(i, text) for i, text in enumerate(odd)])
    log.write([record(10 + i) for i in range(4)])
    log.write([logged(20, '{"x": 5.0, "city": "c2"}')])
    with sqlite3.connect(path) as db:
        db.execute("UPDATE predictions SET latency_ms = 'slow' WHERE id = 'id11'")
        db.execute("UPDATE predictions SET outputs = 'null' WHERE id = 'id12'")
    window = log.window("churn", "1")
    assert window.skipped == {"inputs": 7, "outputs": 1, "latency": 1}
    assert len(window.scored) == 12
    assert window.inputs.index.tolist() == [7, 8, 9, 10, 11], "positions in the scored rows"
    assert window.inputs["x"].tolist() == [10.0, 11.0, 12.0, 13.0, 5.0]
    assert 9 not in window.outputs.index and len(window.outputs) == 11
    assert np.isnan(window.scored["latency_ms"].iloc[8])
    log.close()


def test_window_reads_a_null_line_after_the_first_as_skipped_not_as_a_row_of_nulls(log_uri):
    log = PredictionLog(log_uri)
    log.write([record(0), logged(1, "null"), logged(2, "{}"), record(3)])
    window = log.window("churn", "1")
    assert window.skipped == {"inputs": 1}
    assert window.inputs.index.tolist() == [0, 2, 3]
    log.close()
