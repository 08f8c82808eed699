"""The log in one SQLite file (the embedded default), in WAL mode.

Each transaction is committed before its responses are sent: a prediction a caller received is
in the log even if the server is killed with ``kill -9`` the next instant (``synchronous=NORMAL``
in WAL mode survives a process crash; an operating-system crash can lose the last
transactions). One connection, serialised by a lock, serves every thread of a process.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from nbmlops.predlog.sql import insert


class SqliteBackend:
    """With ``checkpoint_every`` (seconds), the write-ahead log is copied into the database by
    a background thread instead of by whichever write happens to fill it: SQLite's automatic
    checkpoint syncs the file to disk and would add ~8 ms to one request in every few dozen.
    """

    #: A write-ahead log larger than this is checkpointed between two writes (see
    #: :meth:`_checkpoints`).
    RESTART_BYTES = 1 << 20

    def __init__(self, path: Path, checkpoint_every: float | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, timeout=30, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._closed = threading.Event()
        if checkpoint_every is not None:
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            threading.Thread(
                target=self._checkpoints,
                args=(checkpoint_every,),
                name="nbmlops-log-checkpoint",
                daemon=True,
            ).start()

    @contextlib.contextmanager
    def transaction(self, exclusive: bool = False):
        """One transaction; yields ``execute(sql, args) -> rows``. ``exclusive`` takes the
        write lock at once (``BEGIN IMMEDIATE``), so two processes migrating wait in turn."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE" if exclusive else "BEGIN")
            try:
                yield self._execute
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def append(self, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
        """Add ``rows`` to ``table`` in one transaction."""
        with self.transaction() as execute:
            insert(execute, table, len(columns), rows)

    def _execute(self, sql: str, args: Sequence = ()) -> list[tuple]:
        return self._db.execute(sql, args).fetchall()

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

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._db.close()
