"""The log's schema, versioned: each migration is portable SQL that SQLite and PostgreSQL both
run, applied once, in order, under the backend's exclusive lock, and recorded in
``log_schema``. A log written by a newer nbmlops is refused, not misread."""

from __future__ import annotations

import time
from dataclasses import dataclass

from nbmlops.errors import LogError


@dataclass(frozen=True)
class Migration:
    version: int
    what: str
    statements: tuple[str, ...]


# Type names both backends know: SQLite reads DOUBLE PRECISION as REAL and BIGINT as INTEGER.
# Logs written before versioning have these tables already (``IF NOT EXISTS``) and become v1.
_V1 = (
    """CREATE TABLE IF NOT EXISTS predictions (
        id TEXT PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        model TEXT NOT NULL,
        version TEXT NOT NULL,
        route TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        status TEXT NOT NULL,
        latency_ms DOUBLE PRECISION,
        inputs TEXT,
        outputs TEXT,
        error TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS predictions_by_model_time ON predictions (model, version, ts)",
    """CREATE TABLE IF NOT EXISTS feedback (
        id TEXT PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        label TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS rollout_events (
        ts DOUBLE PRECISION NOT NULL,
        model TEXT NOT NULL,
        kind TEXT NOT NULL,
        version TEXT NOT NULL,
        primary_version TEXT NOT NULL,
        reason TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS rollout_events_by_model_time ON rollout_events (model, ts)",
    """CREATE TABLE IF NOT EXISTS batch_runs (
        ts DOUBLE PRECISION NOT NULL,
        model TEXT NOT NULL,
        version TEXT NOT NULL,
        engine TEXT NOT NULL,
        input TEXT NOT NULL,
        input_sha256 TEXT NOT NULL,
        output TEXT NOT NULL,
        rows_in BIGINT NOT NULL,
        rows_scored BIGINT NOT NULL,
        rows_rejected BIGINT NOT NULL,
        seconds DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS batch_runs_by_model_time ON batch_runs (model, ts)",
)

MIGRATIONS = (Migration(1, "predictions, feedback, rollout events and batch runs", _V1),)
LATEST = MIGRATIONS[-1].version

_VERSIONS = """CREATE TABLE IF NOT EXISTS log_schema (
    version INTEGER PRIMARY KEY,
    applied DOUBLE PRECISION NOT NULL,
    what TEXT NOT NULL
)"""


def migrate(backend, where: str) -> list[int]:
    """Bring the log at ``where`` to :data:`LATEST`; the versions applied now (none when it
    was current). Raises :class:`LogError` for a log newer than this nbmlops."""
    with backend.transaction(exclusive=True) as execute:
        execute(_VERSIONS)
        current = execute("SELECT MAX(version) FROM log_schema")[0][0] or 0
        if current > LATEST:
            raise LogError(
                f"the prediction log {where} has schema version {current}, written by a newer "
                f"nbmlops (this one knows up to {LATEST}): upgrade nbmlops to use it"
            )
        applied = []
        for migration in MIGRATIONS[current:]:
            for statement in migration.statements:
                execute(statement)
            execute(
                "INSERT INTO log_schema VALUES (?, ?, ?)",
                (migration.version, time.time(), migration.what),
            )
            applied.append(migration.version)
    return applied
