"""Running stream consumers: ``nbmlops stream`` in the foreground, ``nbmlops.stream()`` and
``%mlops_stream`` in a background process (stopped with the process that started it), and
the records under ``NBMLOPS_HOME/streams/`` that ``--list`` and ``--stop`` read.
"""

from __future__ import annotations

import atexit
import html
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from nbmlops.config import Settings
from nbmlops.errors import StreamError, UsageError
from nbmlops.serving.client import pid_alive, process_created, terminate
from nbmlops.streaming.consumer import StreamConsumer, StreamOptions
from nbmlops.streaming.redis_streams import connect

#: What the consumer prints once it is consuming; the parent waits for it.
READY = "nbmlops stream: consuming"
READY_TIMEOUT = 120.0

_started: list[StreamHandle] = []


@dataclass(frozen=True)
class StreamHandle:
    """A consumer running in the background: ``.stop()`` drains it (SIGTERM)."""

    model: str
    source: str
    group: str
    consumer: str
    pid: int
    log_file: str
    pid_created: float | None = None

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid, self.pid_created)

    def stop(self) -> str:
        """Stop it gracefully: it finishes and acknowledges its batch. Returns its summary."""
        terminate(self.pid, self.pid_created, grace=60.0)
        _record(Path(self.log_file).parent, self.pid).unlink(missing_ok=True)
        return self.summary()

    def summary(self) -> str:
        """The consumer's last line of output: its summary once it has stopped."""
        lines = Path(self.log_file).read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def _repr_html_(self) -> str:
        state = "consuming" if self.alive else "stopped"
        return (
            f"<div><b>Streaming {html.escape(self.model)}</b> ({state}): "
            f"<code>{html.escape(self.source)}</code>, group <code>{html.escape(self.group)}"
            f"</code>, consumer <code>{html.escape(self.consumer)}</code>, pid {self.pid}</div>"
        )

    def __repr__(self) -> str:
        state = "consuming" if self.alive else "stopped"
        return (
            f"Streaming {self.model} ({state}) from {self.source}, group {self.group}, "
            f"consumer {self.consumer}, pid {self.pid}; log {self.log_file}"
        )


def stream(
    model: str,
    source: str,
    group: str,
    *,
    sink: str | None = None,
    dead_letter: str | None = None,
    consumer: str | None = None,
    batch_size: int = 500,
    block_ms: int = 1000,
    claim_idle: float = 30.0,
    metrics_port: int | None = None,
    unknown_categories: str = "reject",
    settings: Settings | None = None,
    timeout: float = READY_TIMEOUT,
) -> StreamHandle:
    """Score the Redis stream ``source`` (``redis://HOST:PORT/DB?stream=NAME``) with
    ``model`` as consumer group ``group``, in a background process; returns once it consumes.

    Each event's ``payload`` (one record as JSON) is checked against the schema and scored in
    batches of at most ``batch_size``; its answer goes to ``sink`` (default: stream
    ``NAME-scored`` on the same server) with fields ``source_id``, ``id``, ``prediction`` and
    ``proba``, an invalid event to ``dead_letter`` (default ``NAME-dead``) with ``source_id``,
    ``error`` and ``payload``; everything is logged (route ``stream``) and acknowledged after
    the write. An event left pending ``claim_idle`` seconds by a stopped consumer is
    reclaimed; no source id is ever written to the sink twice. An alias is followed.
    """
    settings = settings or Settings.from_env()
    options = StreamOptions(
        source=source,
        group=group,
        sink=sink,
        dead_letter=dead_letter,
        consumer=consumer,
        batch_size=batch_size,
        block_ms=block_ms,
        claim_idle=claim_idle,
        metrics_port=metrics_port,
        unknown_categories=unknown_categories,
    )
    addresses = options.addresses()
    connect(addresses[0]).close()  # an unreachable broker is said here, before a process starts
    folder = settings.home / "streams"
    folder.mkdir(parents=True, exist_ok=True)
    log_file = folder / f"stream-{time.time_ns()}.log"
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nbmlops.streaming.worker", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    request = {"model": model, "options": asdict(options), "settings": _plain(settings)}
    proc.stdin.write((json.dumps(request) + "\n").encode())
    proc.stdin.close()
    _wait_ready(proc, log_file, timeout)
    consumer_name = _ready_line(log_file).rsplit(" as ", 1)[-1]
    handle = StreamHandle(
        model, str(addresses[0]), group, consumer_name, proc.pid, str(log_file),
        process_created(proc.pid),
    )  # fmt: skip
    _record(folder, proc.pid).write_text(json.dumps(asdict(handle)))
    _started.append(handle)
    return handle


def consume(model: str, options: StreamOptions, settings: Settings) -> int:
    """``nbmlops stream``: consume in this process until SIGTERM or Ctrl-C; prints a summary."""
    consumer = StreamConsumer(model, options, settings)
    source = consumer.addresses[0]
    print(f"{READY} {source} with {model} as {consumer.consumer}", flush=True)

    def stop(signum, frame):
        consumer.stop()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = consumer.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(summary, flush=True)
    return 0


def list_streams(settings: Settings | None = None) -> list[StreamHandle]:
    """Consumers started in the background from this store that still run."""
    folder = (settings or Settings.from_env()).home / "streams"
    handles = []
    for path in sorted(folder.glob("*.stream.json")) if folder.is_dir() else []:
        try:
            handle = StreamHandle(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if handle.alive:
            handles.append(handle)
        else:
            path.unlink(missing_ok=True)
    return handles


def stop_streams(target: str = "all", settings: Settings | None = None) -> list[StreamHandle]:
    """Stop background consumers by model name, pid or ``all``; returns those stopped."""
    running = list_streams(settings)
    if target in ("", "all"):
        chosen = running
    else:
        name = target.split("@", 1)[0]
        chosen = [h for h in running if str(h.pid) == target or h.model.split("@")[0] == name]
        if not chosen:
            known = ", ".join(f"{h.model} (pid {h.pid})" for h in running) or "none"
            raise UsageError(f"no running stream consumer matches {target!r}; running: {known}")
    for handle in chosen:
        handle.stop()
    return chosen


def streams_text(handles: list[StreamHandle]) -> str:
    """One line per consumer: a running one's description, a stopped one's summary."""
    lines = [repr(h) if h.alive else f"stopped: {h.summary()}" for h in handles]
    return "\n".join(lines) or "no stream consumers running"


def _wait_ready(proc: subprocess.Popen, log_file: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ready_line(log_file):
            return
        if proc.poll() is not None:
            tail = log_file.read_text(errors="replace").strip().splitlines()[-8:]
            raise StreamError(
                f"the stream consumer exited with code {proc.returncode} before it consumed; "
                f"its log ({log_file}) ends:\n" + "\n".join(tail)
            )
        time.sleep(0.05)
    terminate(proc.pid, process_created(proc.pid))
    raise StreamError(f"the stream consumer did not start in {timeout:.0f} s; see {log_file}")


def _ready_line(log_file: Path) -> str:
    text = log_file.read_text(errors="replace") if log_file.is_file() else ""
    return next((line for line in text.splitlines() if line.startswith(READY)), "")


def _plain(settings: Settings) -> dict:
    return {**asdict(settings), "home": str(settings.home)}


def _record(folder: Path, pid: int) -> Path:
    return folder / f"{pid}.stream.json"


@atexit.register
def _stop_started() -> None:
    for handle in _started:
        if handle.alive:
            handle.stop()
