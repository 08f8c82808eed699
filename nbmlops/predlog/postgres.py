"""The log in PostgreSQL (``NBMLOPS_LOG_URI=postgresql://...``): one log for every replica,
canary and batch run of a team, through a small pool of psycopg 3 connections.

Each transaction commits before it returns, so a server's answer still follows its log write.
SQL is written with SQLite's ``?`` placeholders and translated once per statement.
"""

from __future__ import annotations

import contextlib
import functools
import time
import weakref
from collections.abc import Sequence

from nbmlops.config import redacted
from nbmlops.errors import LogError

#: The advisory lock under which one process at a time migrates the schema.
_MIGRATION_LOCK = 0x6E626D6C6F7073  # "nbmlops"


class PostgresBackend:
    def __init__(self, uri: str, max_connections: int = 4) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool, PoolTimeout

        self.uri = uri
        self._errors = (psycopg.Error, PoolTimeout)
        try:  # once, directly: the pool would retry for its whole timeout
            psycopg.connect(uri, connect_timeout=15).close()
        except psycopg.Error as exc:
            raise LogError(
                f"cannot connect to the prediction log {redacted(uri)}: {_first_line(exc)}; "
                "check NBMLOPS_LOG_URI and that the database exists and accepts connections"
            ) from None
        self._check = ConnectionPool.check_connection
        self._last_used: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._pool = ConnectionPool(
            uri,
            min_size=1,
            max_size=max_connections,
            name="nbmlops-log",
            kwargs={"autocommit": True},  # transactions are explicit; an append is one COPY
            check=self._check_idle,
            timeout=5,  # an outage answers 503 in seconds rather than holding every request
            open=False,
        )
        self._pool.open(wait=True, timeout=15)

    #: A connection idle longer than this is checked before use (a restarted database costs
    #: no failed write); a busy one is not, which would cost a round trip per write.
    CHECK_IDLE_SECONDS = 5.0

    def _check_idle(self, conn) -> None:
        if time.monotonic() - self._last_used.get(conn, 0.0) > self.CHECK_IDLE_SECONDS:
            self._check(conn)

    @contextlib.contextmanager
    def _connection(self):
        try:
            with self._pool.connection() as conn:
                yield conn
                self._last_used[conn] = time.monotonic()
        except self._errors as exc:
            raise LogError(
                f"the prediction log {redacted(self.uri)} failed: {_first_line(exc)}"
            ) from exc

    def append(self, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
        """Add ``rows`` to ``table`` with one ``COPY``: atomic, two round trips, and a tenth
        of the CPU of a multi-row INSERT of its size."""
        with self._connection() as conn, conn.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

    @contextlib.contextmanager
    def transaction(self, exclusive: bool = False):
        """One transaction on a pooled connection; yields ``execute(sql, args) -> rows``.
        ``exclusive`` first takes the migration lock, released at commit."""
        with self._connection() as conn, conn.transaction(), conn.cursor() as cursor:

            def execute(sql: str, args: Sequence = ()) -> list[tuple]:
                cursor.execute(_translated(sql), args)
                return cursor.fetchall() if cursor.description else []

            if exclusive:
                execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            yield execute

    def close(self) -> None:
        self._pool.close()


@functools.lru_cache(maxsize=256)
def _translated(sql: str) -> str:
    return sql.replace("?", "%s")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
