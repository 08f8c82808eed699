"""The prediction log: every record scored, rejected or failed, durably, with feedback joined by
id; and the rollout events and batch runs of each model.

One interface over two backends: a SQLite file under the store (the default) or PostgreSQL
(``NBMLOPS_LOG_URI=postgresql://...``), so that replicas on several machines write one log
that one monitor reads. The schema is versioned (:mod:`nbmlops.predlog.migrations`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from nbmlops.config import postgres_uri, redacted
from nbmlops.errors import LogError
from nbmlops.predlog.migrations import migrate
from nbmlops.predlog.parsing import collector_paused, json_lines_frame, numbers
from nbmlops.predlog.records import (
    BATCH_RUN_FIELDS,
    EVENT_FIELDS,
    OK,
    PREDICTION_FIELDS,
    LogRecord,
    Window,
    dumps,
)
from nbmlops.predlog.sql import insert


class PredictionLog:
    """A thread-safe writer and reader of one prediction log.

    ``target`` is a path or ``sqlite:///PATH`` for a SQLite file, or a ``postgresql://`` URI.
    ``checkpoint_every`` (seconds) applies to SQLite only (see
    :class:`~nbmlops.predlog.sqlite.SqliteBackend`).
    """

    def __init__(self, target: Path | str, checkpoint_every: float | None = None) -> None:
        text = str(target)
        if (uri := postgres_uri(text)) is not None:
            from nbmlops.predlog.postgres import PostgresBackend

            self.where = redacted(uri)
            self._backend = PostgresBackend(uri)
        else:
            from nbmlops.predlog.sqlite import SqliteBackend

            path = Path(text.removeprefix("sqlite:///"))
            if "://" in text.removeprefix("sqlite:///"):
                raise LogError(
                    f"NBMLOPS_LOG_URI {text!r} is neither a postgresql:// URI nor a SQLite "
                    "file (a path or sqlite:///PATH)"
                )
            self.where = str(path)
            self._backend = SqliteBackend(path, checkpoint_every)
        try:
            migrate(self._backend, self.where)
        except BaseException:
            self._backend.close()
            raise

    # -- writing -----------------------------------------------------------------------------

    def write(self, records: Sequence[LogRecord]) -> None:
        """Append ``records`` in one transaction."""
        self._backend.append("predictions", PREDICTION_FIELDS, [r.row() for r in records])

    def add_feedback(self, items: Sequence[tuple[str, object]], ts: float) -> list[str]:
        """Record ground truth for prediction ids; returns the ids that are not in the log
        (nothing is written then). A second label for an id replaces the first."""
        labels = {i: label for i, label in items}  # the last label given for an id wins
        ids = list(labels)
        with self._backend.transaction() as execute:
            known = set()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT id FROM predictions WHERE status = '{OK}' AND id IN ({marks})"
                known.update(row[0] for row in execute(query, chunk))
            unknown = [i for i in ids if i not in known]
            if unknown:
                return unknown
            rows = [(i, ts, dumps(label)) for i, label in labels.items()]
            upsert = " ON CONFLICT (id) DO UPDATE SET ts = excluded.ts, label = excluded.label"
            insert(execute, "feedback", 3, rows, upsert)
        return []

    def add_event(
        self, ts: float, model: str, kind: str, version: str, primary_version: str, reason: str
    ) -> None:
        """Record a rollout event of ``model``'s ``version`` beside ``primary_version``, with
        its reason: ``rollback``, ``step`` and ``promote`` of a canary, ``switch`` of a server
        that followed its alias (``version`` the new primary, ``primary_version`` the old)."""
        with self._backend.transaction() as execute:
            row = (ts, model, kind, version, primary_version, reason)
            insert(execute, "rollout_events", len(EVENT_FIELDS), [row])

    def add_batch_run(self, run: dict) -> None:
        """Record a finished batch run (the fields of :data:`BATCH_RUN_FIELDS`)."""
        with self._backend.transaction() as execute:
            row = tuple(run[k] for k in BATCH_RUN_FIELDS)
            insert(execute, "batch_runs", len(BATCH_RUN_FIELDS), [row])

    # -- reading -----------------------------------------------------------------------------

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
        rows = self._read(query + " ORDER BY ts", args)
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def logged(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the log holds (a stream's redelivered events are logged once)."""
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ", ".join("?" * len(chunk))
            rows = self._read(f"SELECT id FROM predictions WHERE id IN ({marks})", chunk)
            found.update(row[0] for row in rows)
        return found

    def count(self, model: str | None = None, status: str | None = None) -> int:
        query, args = "SELECT COUNT(*) FROM predictions WHERE 1=1", []
        if model is not None:
            query += " AND model = ?"
            args.append(model)
        if status is not None:
            query += " AND status = ?"
            args.append(status)
        return int(self._read(query, args)[0][0])

    def frame(
        self,
        model: str,
        version: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> pd.DataFrame:
        """Log rows of ``model`` (optionally one version, a time range) with feedback labels."""
        where, args = _where(model, version, since, until)
        columns = ", ".join(f"p.{name}" for name in PREDICTION_FIELDS)
        query = (
            f"SELECT {columns}, f.label AS feedback FROM predictions p "
            f"LEFT JOIN feedback f ON f.id = p.id WHERE {where} ORDER BY p.ts"
        )
        rows = self._read(query, args)
        return pd.DataFrame(rows, columns=[*PREDICTION_FIELDS, "feedback"])

    def routes(
        self, model: str, since: float | None = None, until: float | None = None
    ) -> list[tuple[str, str, int]]:
        """``(route, version, rows)`` of ``model`` over a time range, counted by the
        database."""
        where, args = _where(model, None, since, until)
        query = (
            "SELECT p.route, p.version, COUNT(*) FROM predictions p "
            f"WHERE {where} GROUP BY p.route, p.version"
        )
        return [(route, version, int(n)) for route, version, n in self._read(query, args)]

    def window(
        self, model: str, version: str, since: float | None = None, until: float | None = None
    ) -> Window:
        """What the monitor reads for one version and time range, in one consistent read,
        parsed in bulk: a million logged records take seconds, not minutes. Rows by status are
        counted by the database; only scored records are fetched."""
        where, args = _where(model, version, since, until)
        scored = f"{where} AND p.status = '{OK}'"
        # A million rows are a million tuples: the cyclic collector would walk them again and
        # again while they pile up (about a third of the time), and none of them is a cycle.
        with collector_paused(), self._backend.transaction() as execute:
            statuses = execute(
                f"SELECT p.status, COUNT(*) FROM predictions p WHERE {where} GROUP BY p.status",
                args,
            )
            rows = execute(
                "SELECT p.id, p.ts, p.latency_ms, p.inputs, p.outputs FROM predictions p "
                f"WHERE {scored} ORDER BY p.ts",
                args,
            )
            labels = execute(
                "SELECT p.id, f.label FROM feedback f JOIN predictions p ON p.id = f.id "
                f"WHERE {scored}",
                args,
            )
        ids, ts, latency, inputs, outputs = zip(*rows, strict=True) if rows else ((),) * 5
        feedback = pd.Series([None] * len(rows), dtype=object)
        if labels:
            labelled, values = zip(*labels, strict=True)
            feedback.iloc[pd.Index(ids).get_indexer(labelled)] = values
        ts, _ = numbers(ts)
        latency, bad_latency = numbers(latency)
        inputs, bad_inputs = json_lines_frame(inputs)
        outputs, bad_outputs = json_lines_frame(outputs)
        skipped = {"inputs": bad_inputs, "outputs": bad_outputs, "latency": bad_latency}
        return Window(
            statuses={status: int(n) for status, n in statuses},
            scored=pd.DataFrame({"ts": ts, "latency_ms": latency, "feedback": feedback}),
            inputs=inputs,
            outputs=outputs,
            skipped={k: v for k, v in skipped.items() if v},
        )

    def _read(self, query: str, args: Sequence) -> list[tuple]:
        with self._backend.transaction() as execute:
            return execute(query, args)

    def close(self) -> None:
        self._backend.close()


def _where(model, version, since, until) -> tuple[str, list]:
    clauses, args = ["p.model = ?"], [model]
    for clause, value in (("p.version = ?", version), ("p.ts >= ?", since), ("p.ts < ?", until)):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    return " AND ".join(clauses), args
