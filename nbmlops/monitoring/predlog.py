"""The prediction log: every record scored, rejected or failed, durably, with feedback joined by id.

SQLite in WAL mode under the store (``<home>/predictions.db``). Each micro-batch is one
transaction, committed before its responses are sent: a prediction a caller received is in the
log even if the server is killed with ``kill -9`` the next instant (``synchronous=NORMAL`` in WAL
mode survives a process crash; an operating-system crash can lose the last transactions).
"""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from nbmlops import jsoncodec

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
CREATE TABLE IF NOT EXISTS rollout_events (
    ts REAL NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    version TEXT NOT NULL,
    primary_version TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rollout_events_by_model_time ON rollout_events (model, ts);
CREATE TABLE IF NOT EXISTS batch_runs (
    ts REAL NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    engine TEXT NOT NULL,
    input TEXT NOT NULL,
    input_sha256 TEXT NOT NULL,
    output TEXT NOT NULL,
    rows_in INTEGER NOT NULL,
    rows_scored INTEGER NOT NULL,
    rows_rejected INTEGER NOT NULL,
    seconds REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS batch_runs_by_model_time ON batch_runs (model, ts);
"""
#: The columns of a batch run, in the table's order.
BATCH_RUN_FIELDS = (
    "ts", "model", "version", "engine", "input", "input_sha256", "output", "rows_in",
    "rows_scored", "rows_rejected", "seconds",
)  # fmt: skip

#: INSERT statements by the rows they add, largest first. One statement for many rows costs a
#: third less per row than ``executemany``; a few fixed sizes stay in sqlite3's statement cache
#: (preparing a 100-row statement would cost more than it saves).
_INSERTS = {
    size: "INSERT INTO predictions VALUES "
    + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * size)
    for size in (64, 16, 4, 1)
}

OK = "ok"
REJECTED = "rejected"
ERROR = "error"


class PredictionIds:
    """Prediction ids: unique across processes (a random prefix), increasing within one (cheap
    to index)."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:8]
        self._counter = itertools.count(int(time.time() * 1000) << 16)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):012x}"


@dataclass(slots=True)
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
    """A thread-safe writer and reader of one prediction log file.

    With ``checkpoint_every`` (seconds), the write-ahead log is copied into the database by a
    background thread instead of by whichever write happens to fill it: SQLite's automatic
    checkpoint syncs the file to disk and would add ~8 ms to one request in every few dozen.
    """

    def __init__(self, path: Path, checkpoint_every: float | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._closed = threading.Event()
        if checkpoint_every is not None:
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            threading.Thread(
                target=self._checkpoints,
                args=(checkpoint_every,),
                name="nbmlops-log-checkpoint",
                daemon=True,
            ).start()

    #: A write-ahead log larger than this is checkpointed between two writes (see
    #: :meth:`_checkpoints`).
    RESTART_BYTES = 1 << 20

    def _checkpoints(self, every: float) -> None:
        """Copy the write-ahead log into the database every ``every`` seconds.

        A passive checkpoint never makes a writer wait, but the log only starts over when a
        write begins after a checkpoint has copied everything: under steady writes that can
        fail for minutes (300 MB in 8 s of 1,600-row batches). Past :attr:`RESTART_BYTES`, a
        second passive checkpoint copies the few frames written meanwhile while holding the
        writers' lock, so the next write starts the log over: writes wait for that short
        copy (p99 of such a write 18 ms) instead of for a RESTART checkpoint (76 ms).
        """
        db = sqlite3.connect(self.path, timeout=30)
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            while not self._closed.wait(every):
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                if wal.exists() and wal.stat().st_size > self.RESTART_BYTES:
                    with self._lock:
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            db.close()

    def write(self, records: Sequence[LogRecord]) -> None:
        """Append ``records`` in one transaction."""
        rows = [r.row() for r in records]
        with self._lock, self._db:
            start = 0
            for size, insert in _INSERTS.items():
                while len(rows) - start >= size:
                    chunk = rows[start : start + size]
                    self._db.execute(insert, [value for row in chunk for value in row])
                    start += size

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

    def add_event(
        self, ts: float, model: str, kind: str, version: str, primary_version: str, reason: str
    ) -> None:
        """Record a rollout event of ``model``'s ``version`` beside ``primary_version``, with
        its reason: ``rollback``, ``step`` and ``promote`` of a canary, ``switch`` of a server
        that followed its alias (``version`` the new primary, ``primary_version`` the old)."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO rollout_events VALUES (?, ?, ?, ?, ?, ?)",
                (ts, model, kind, version, primary_version, reason),
            )

    def events(
        self, model: str, version: str, since: float | None = None, until: float | None = None
    ) -> list[dict]:
        """The rollout events of ``model`` over a time range that concern ``version`` (as
        the canary or as the primary), oldest first."""
        keys = ("ts", "kind", "version", "primary_version", "reason")
        query = (
            f"SELECT {', '.join(keys)} FROM rollout_events "
            "WHERE model = ? AND (version = ? OR primary_version = ?)"
        )
        narrowing = ((" AND ts >= ?", since), (" AND ts < ?", until))
        return self._dicts(query, [model, version, version], narrowing, keys)

    def add_batch_run(self, run: dict) -> None:
        """Record a finished batch run (the fields of :data:`BATCH_RUN_FIELDS`)."""
        marks = ", ".join("?" * len(BATCH_RUN_FIELDS))
        with self._lock, self._db:
            self._db.execute(
                f"INSERT INTO batch_runs VALUES ({marks})", [run[k] for k in BATCH_RUN_FIELDS]
            )

    def batch_runs(
        self,
        model: str,
        version: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[dict]:
        """The batch runs of ``model`` (optionally one version, a time range), oldest first."""
        query = f"SELECT {', '.join(BATCH_RUN_FIELDS)} FROM batch_runs WHERE model = ?"
        narrowing = (
            (" AND version = ?", version),
            (" AND ts >= ?", since),
            (" AND ts < ?", until),
        )
        return self._dicts(query, [model], narrowing, BATCH_RUN_FIELDS)

    def _dicts(self, query: str, args: list, narrowing, keys: Sequence[str]) -> list[dict]:
        """Rows of ``query`` as dicts of ``keys``, oldest first, narrowed by each
        ``(clause, value)`` whose value is given."""
        args = list(args)
        for clause, value in narrowing:
            if value is not None:
                query += clause
                args.append(value)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY ts", args).fetchall()
        return [dict(zip(keys, row, strict=True)) for row in rows]

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
    ) -> pd.DataFrame:
        """Log rows of ``model`` (optionally one version, a time range) with feedback labels."""
        where, args = _where(model, version, since, until)
        query = (
            "SELECT p.*, f.label AS feedback FROM predictions p "
            f"LEFT JOIN feedback f ON f.id = p.id WHERE {where} ORDER BY p.ts"
        )
        with self._lock:
            return pd.read_sql_query(query, self._db, params=args)

    def routes(
        self, model: str, since: float | None = None, until: float | None = None
    ) -> list[tuple[str, str, int]]:
        """``(route, version, rows)`` of ``model`` over a time range: one cheap query."""
        where, args = _where(model, None, since, until)
        query = (
            "SELECT p.route, p.version, COUNT(*) FROM predictions p "
            f"WHERE {where} GROUP BY p.route, p.version"
        )
        with self._lock:
            return self._db.execute(query, args).fetchall()

    def window(
        self, model: str, version: str, since: float | None = None, until: float | None = None
    ) -> Window:
        """What the monitor reads for one version and time range, parsed in bulk: a million
        logged records take seconds, not minutes."""
        where, args = _where(model, version, since, until)
        scored = f"{where} AND p.status = '{OK}'"
        # A million rows are a million tuples: the cyclic collector would walk them again and
        # again while they pile up (about a third of the time), and none of them is a cycle.
        with self._lock, _collector_paused():
            statuses = self._db.execute(
                f"SELECT p.status, COUNT(*) FROM predictions p WHERE {where} GROUP BY p.status",
                args,
            ).fetchall()
            rows = self._db.execute(
                "SELECT p.rowid, p.ts, p.latency_ms, p.inputs, p.outputs FROM predictions p "
                f"WHERE {scored} ORDER BY p.ts",
                args,
            ).fetchall()
            labels = self._db.execute(
                "SELECT p.rowid, f.label FROM feedback f JOIN predictions p ON p.id = f.id "
                f"WHERE {scored}",
                args,
            ).fetchall()
            rowids, ts, latency, inputs, outputs = zip(*rows, strict=True) if rows else ((),) * 5
        feedback = pd.Series([None] * len(rows), dtype=object)
        if labels:
            labelled, values = zip(*labels, strict=True)
            feedback.iloc[pd.Index(rowids).get_indexer(labelled)] = values
        ts, _ = _numbers(ts)
        latency, bad_latency = _numbers(latency)
        inputs, bad_inputs = _json_lines_frame(inputs)
        outputs, bad_outputs = _json_lines_frame(outputs)
        skipped = {"inputs": bad_inputs, "outputs": bad_outputs, "latency": bad_latency}
        return Window(
            statuses=dict(statuses),
            scored=pd.DataFrame({"ts": ts, "latency_ms": latency, "feedback": feedback}),
            inputs=inputs,
            outputs=outputs,
            skipped={k: v for k, v in skipped.items() if v},
        )

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._db.close()


@dataclass(frozen=True)
class Window:
    """The log of one model version over a time range: rows by status, and for the scored
    records their time, latency, feedback label (JSON text or None), inputs and outputs.

    ``inputs`` and ``outputs`` are indexed by the position of their record in ``scored``; a
    record whose logged text is not a JSON object has no row there. ``skipped`` counts those
    (``inputs``, ``outputs``) and the latencies that are not numbers (``latency``), when any.
    """

    statuses: dict[str, int]
    scored: pd.DataFrame
    inputs: pd.DataFrame
    outputs: pd.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)


@contextlib.contextmanager
def _collector_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _where(model, version, since, until) -> tuple[str, list]:
    clauses, args = ["p.model = ?"], [model]
    for clause, value in (("p.version = ?", version), ("p.ts >= ?", since), ("p.ts < ?", until)):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    return " AND ".join(clauses), args


def _json_lines_frame(texts: Sequence) -> tuple[pd.DataFrame, int]:
    """One JSON object per text, as a frame, parsed in one go; and how many texts are not a
    JSON object (no row: the frame's index is the position of each text it read)."""
    if not texts:
        return pd.DataFrame(), 0
    table = _arrow_table(texts)
    if table is not None and table.num_rows == len(texts):
        frame = table.to_pandas()
        # pyarrow reads a ``null`` line as a row of nulls: there is none when some column has
        # no null at all, else only the rows of nulls need a second look
        if table.num_columns and min(c.null_count for c in table.columns) == 0:
            return frame, 0
        nulls = frame.isna().all(axis=1).to_numpy() if table.num_columns else None
        candidates = range(len(texts)) if nulls is None else np.flatnonzero(nulls)
        bad = [i for i in candidates if not isinstance(_object(texts[i]), dict)]
        return frame.drop(index=bad), len(bad)
    # Something pyarrow refuses: a text that is not an object, or a field whose values are of
    # mixed types. Objects are told apart one text at a time, then parsed together again.
    keep = [i for i, text in enumerate(texts) if _looks_like_object(text)]
    table = _arrow_table([texts[i] for i in keep]) if len(keep) < len(texts) else None
    if table is not None and table.num_rows == len(keep):
        frame = table.to_pandas()
    else:
        with _collector_paused():
            parsed = [(i, _object(texts[i])) for i in keep]
            keep = [i for i, value in parsed if isinstance(value, dict)]
            frame = pd.DataFrame([value for _, value in parsed if isinstance(value, dict)])
    frame.index = pd.Index(keep) if len(frame) else pd.RangeIndex(0)
    return frame, len(texts) - len(keep)


def _arrow_table(texts: Sequence):
    """The table pyarrow reads from ``texts``, one JSON text a line, or None if it refuses
    them (or one of them spans lines)."""
    import pyarrow.json  # the server, which imports this module, never parses

    if not texts or not _looks_like_object(texts[0]):
        return None  # pyarrow 25 crashes the process (SIGSEGV) when the first line is null
    try:
        data = "\n".join(texts).encode()
        # a text with a line break of its own would shift every record after it
        if data.count(b"\n") != len(texts) - 1:
            return None
        return pyarrow.json.read_json(io.BytesIO(data))
    except (ValueError, TypeError, UnicodeError, pyarrow.ArrowException):
        return None


def _looks_like_object(text) -> bool:
    return isinstance(text, str) and (text[:1] == "{" or text.lstrip()[:1] == "{")


def _object(text):
    """The JSON value ``text`` holds, or None if it is not JSON text."""
    try:
        return jsoncodec.loads(text)
    except (ValueError, TypeError):  # DecodeError is a ValueError
        return None


def _numbers(values: Sequence) -> tuple[np.ndarray, int]:
    """``values`` as floats, and how many were neither a finite number nor null (they become
    NaN)."""
    try:
        numbers = np.array(values, dtype=float)
        present = None
    except (TypeError, ValueError):
        series = pd.Series(values, dtype=object)
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
        present = series.notna().to_numpy()
    bad = ~np.isfinite(numbers)
    if present is None:
        present = ~np.isnan(numbers)  # None became NaN: it stands for no value
    count = int((bad & present).sum())
    if count:
        numbers = np.where(bad, np.nan, numbers)
    return numbers, count


def _dumps(value) -> str:
    return jsoncodec.dumps(value).decode()
