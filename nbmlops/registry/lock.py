"""A process-wide, thread re-entrant ``flock`` on a file: the mechanism under
:func:`nbmlops.registry.registry.alias_lock`."""

from __future__ import annotations

import contextlib
import fcntl
import threading
from pathlib import Path


class _FileLock:
    """An exclusive ``flock`` on one file, re-entrant in the thread that holds it (a second
    ``open`` + ``flock`` in the same process would wait for the first): one per path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.thread_lock = threading.RLock()
        self.depth = 0
        self.handle = None

    @contextlib.contextmanager
    def held(self):
        with self.thread_lock:
            if self.depth == 0:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.handle = open(self.path, "a")
                fcntl.flock(self.handle, fcntl.LOCK_EX)
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                if self.depth == 0:
                    fcntl.flock(self.handle, fcntl.LOCK_UN)
                    self.handle.close()
                    self.handle = None


_FILE_LOCKS: dict[Path, _FileLock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def file_lock(path: Path):
    """Hold the exclusive lock on ``path`` (created if missing), across processes and threads."""
    path = path.resolve()
    with _FILE_LOCKS_GUARD:
        lock = _FILE_LOCKS.setdefault(path, _FileLock(path))
    with lock.held():
        yield
