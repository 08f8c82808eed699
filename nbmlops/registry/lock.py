"""Exclusive locks that are re-entrant within a thread: a ``flock`` on a file (one machine) or
a PostgreSQL advisory lock (every machine that reaches the database). The mechanisms under
:func:`nbmlops.registry.registry.alias_lock`."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

from nbmlops.config import redacted
from nbmlops.errors import RegistryError


class _ReentrantLock:
    """One lock, re-entrant in the thread that holds it (a second ``flock`` or advisory lock
    from the same process would wait for, or silently share, the first): ``acquire`` returns
    a release function."""

    def __init__(self, acquire: Callable[[], Callable[[], None]]) -> None:
        self.acquire = acquire
        self.thread_lock = threading.RLock()
        self.depth = 0
        self.release: Callable[[], None] | None = None

    @contextlib.contextmanager
    def held(self):
        with self.thread_lock:
            if self.depth == 0:
                self.release = self.acquire()
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                if self.depth == 0:
                    self.release()
                    self.release = None


_LOCKS: dict[tuple, _ReentrantLock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock(key: tuple, acquire: Callable[[], Callable[[], None]]) -> _ReentrantLock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, _ReentrantLock(acquire))


@contextlib.contextmanager
def file_lock(path: Path):
    """Hold the exclusive lock on ``path`` (created if missing), across processes and threads."""
    path = path.resolve()

    def acquire():
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
        fcntl.flock(handle, fcntl.LOCK_EX)

        def release():
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

        return release

    with _lock(("file", path), acquire).held():
        yield


@contextlib.contextmanager
def advisory_lock(uri: str, name: str):
    """Hold PostgreSQL's session advisory lock for ``name`` in the database at ``uri``, across
    machines, processes and threads. It lives on a connection of its own: if this process dies,
    the server drops the connection and the lock with it."""

    def acquire():
        import psycopg

        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        try:
            conn = psycopg.connect(uri, autocommit=True, connect_timeout=15)
        except psycopg.Error as exc:
            raise RegistryError(
                f"cannot take the lock {name!r} in {redacted(uri)}: {str(exc).strip()}; "
                "check that the database accepts connections"
            ) from None
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))

        def release():
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            finally:
                conn.close()

        return release

    with _lock(("postgresql", uri, name), acquire).held():
        yield
