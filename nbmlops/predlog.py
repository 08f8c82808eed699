"""The prediction log: every record scored, rejected or failed, durably, with feedback joined by id.

SQLite in WAL mode under the store (``<home>/predictions.db``). Each micro-batch is one
transaction, committed before its responses are sent: a prediction a caller received is in the
log even if the server is killed with ``kill -9`` the next instant (``synchronous=NORMAL`` in WAL
mode survives a process crash; an operating-system crash can lose the last transactions).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    route TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    status TEXT NOT NULL,
    latency_ms REAL,
    inputs TEXT,
    outputs TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS predictions_by_model_time ON predictions (model, version, ts);
CREATE TABLE IF NOT EXISTS feedback (
    id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    label TEXT NOT NULL
);
"""

OK = "ok"
REJECTED = "rejected"
ERROR = "error"


@dataclass(frozen=True)
class LogRecord:
    """One row of the log: a scored record (``ok``), a rejected request or a failure."""

    id: str
    ts: float
    model: str
    version: str
    route: str
    endpoint: str
    status: str
    latency_ms: float | None
    inputs: dict | str | None
    outputs: dict | None = None
    error: str | None = None

    def row(self) -> tuple:
        inputs = (
            self.inputs
            if isinstance(self.inputs, str) or self.inputs is None
            else _dumps(self.inputs)
        )
        outputs = None if self.outputs is None else _dumps(self.outputs)
        return (
            self.id,
            self.ts,
            self.model,
            self.version,
            self.route,
            self.endpoint,
            self.status,
            self.latency_ms,
            inputs,
            outputs,
            self.error,
        )


class PredictionLog:
    """A thread-safe writer and reader of one prediction log file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def write(self, records: Sequence[LogRecord]) -> None:
        """Append ``records`` in one transaction."""
        rows = [r.row() for r in records]
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )

    def add_feedback(self, items: Sequence[tuple[str, object]], ts: float) -> list[str]:
        """Record ground truth for prediction ids; returns the ids that are not in the log
        (nothing is written then)."""
        ids = [i for i, _ in items]
        with self._lock:
            known = set()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                known.update(
                    r[0]
                    for r in self._db.execute(
                        f"SELECT id FROM predictions WHERE status = 'ok' AND id IN ({marks})",
                        chunk,
                    )
                )
            unknown = [i for i in ids if i not in known]
            if unknown:
                return unknown
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO feedback VALUES (?, ?, ?)",
                    [(i, ts, _dumps(label)) for i, label in items],
                )
        return []

    def count(self, model: str | None = None, status: str | None = None) -> int:
        query, args = "SELECT COUNT(*) FROM predictions WHERE 1=1", []
        if model is not None:
            query += " AND model = ?"
            args.append(model)
        if status is not None:
            query += " AND status = ?"
            args.append(status)
        with self._lock:
            return int(self._db.execute(query, args).fetchone()[0])

    def frame(
        self,
        model: str,
        version: str | None = None,
        since: float | None = None,
        until: float | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Log rows of ``model`` (optionally one version, a time range) with feedback labels;
        ``columns`` picks the log's columns to read (all by default; reading fewer is faster)."""
        picked = "p.*" if columns is None else ", ".join(f"p.{_column(c)}" for c in columns)
        query = (
            f"SELECT {picked}, f.label AS feedback FROM predictions p "
            "LEFT JOIN feedback f ON f.id = p.id WHERE p.model = ?"
        )
        args: list = [model]
        for clause, value in (
            ("p.version = ?", version),
            ("p.ts >= ?", since),
            ("p.ts < ?", until),
        ):
            if value is not None:
                query += f" AND {clause}"
                args.append(value)
        with self._lock:
            return pd.read_sql_query(query + " ORDER BY p.ts", self._db, params=args)

    def close(self) -> None:
        with self._lock:
            self._db.close()


_COLUMNS = frozenset(LogRecord.__dataclass_fields__)


def _column(name: str) -> str:
    if name not in _COLUMNS:
        raise ValueError(f"the prediction log has no column {name!r}")
    return name


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
