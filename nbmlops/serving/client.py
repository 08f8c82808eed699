"""The handle of a running server: its URL, ``predict(df)`` over HTTP, ``stop()``; and the
few process calls a handle needs (is it alive, stop it).

A server is known by its pid *and* the time its process started: a pid the system has given to
another process since is never signalled.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import psutil

from nbmlops.errors import ServingError, UsageError, ValidationError

#: How far apart two readings of one process's start time may be (psutil derives it from the
#: boot time, which moves when the clock is stepped).
START_TOLERANCE = 1.0


@dataclass(frozen=True)
class ServerHandle:
    """A running server: its URL, and ``.predict(df)`` / ``.stop()``.

    The token authenticates the handle's own requests; no repr, HTML or :meth:`to_dict` shows
    it (the curl example reads ``$NBMLOPS_TOKEN``).
    """

    model: str
    version: str
    host: str
    port: int
    pid: int
    log_file: str
    token: str | None = None
    started: float = 0.0
    example: dict | None = None
    pid_created: float | None = None  # when the process ``pid`` started (psutil create_time)
    routes: tuple = ()  # {"route", "version", "weight" or "fraction"[, "sticky"]} per route

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def docs_url(self) -> str:
        return f"{self.url}/docs"

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid, self.pid_created)

    def curl_example(self) -> str:
        body = json.dumps({"records": [self.example or {}]})
        auth = ' -H "Authorization: Bearer $NBMLOPS_TOKEN"' if self.token else ""
        return f"curl -s {self.url}/predict -H 'Content-Type: application/json'{auth} -d '{body}'"

    def predict(self, frame):
        """Score a frame through the server: ``prediction``, ``proba_<label>`` and ``id``."""
        import pandas as pd

        if not isinstance(frame, pd.DataFrame):
            raise UsageError(f"predict takes a pandas DataFrame, got {type(frame).__name__}")
        from nbmlops.artifact.frames import to_records

        answer = self.request("POST", "/predict", {"records": to_records(frame)})
        rows = []
        for item in answer["predictions"]:
            row = {"prediction": item["prediction"]}
            row.update({f"proba_{k}": v for k, v in item.get("proba", {}).items()})
            row["id"] = item["id"]
            rows.append(row)
        return pd.DataFrame(rows, index=frame.index)

    def request(self, method: str, path: str, body=None) -> dict:
        """Send one JSON request; a 4xx/5xx answer raises with the server's message."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            payload = _json_or_text(exc.read())
            if exc.code == 422 and isinstance(payload, dict):
                from nbmlops.artifact.validation import Problem

                raise ValidationError(
                    [
                        Problem(p.get("record"), p.get("field"), p["message"])
                        for p in payload.get("problems", [])
                    ]
                ) from None
            message = payload.get("error") if isinstance(payload, dict) else payload
            raise ServingError(f"{self.url}{path} answered {exc.code}: {message}") from None
        except urllib.error.URLError as exc:
            raise ServingError(
                f"cannot reach the server at {self.url}: {exc.reason}; is it running? "
                "(%mlops_serve --list)"
            ) from None

    def current(self) -> tuple[str, tuple]:
        """The version answering and the routes with their weights now, from ``/metadata``
        (a canary's weight moves, an alias is followed); as started if the server is silent."""
        req = urllib.request.Request(self.url + "/metadata")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                shown = json.loads(resp.read())
            return str(shown["version"]), tuple(shown["routes"])
        except (OSError, ValueError, KeyError, TypeError):
            return self.version, self.routes

    def stop(self) -> None:
        """Stop the server gracefully (it finishes and logs what it is scoring)."""
        terminate(self.pid, self.pid_created)
        record_path(Path(self.log_file).parent, self.port).unlink(missing_ok=True)

    def to_dict(self) -> dict:
        """The handle as plain data, without the token (``token_required`` says if one is)."""
        data = {k: v for k, v in self.__dict__.items() if k != "token"}
        return {**data, "token_required": bool(self.token), "url": self.url, "alive": self.alive}

    def to_record(self) -> dict:
        """Everything, the token included: what the server's owner-only record file holds."""
        return dict(self.__dict__)

    def _repr_html_(self) -> str:
        import html

        return (
            f"<div><b>Serving {html.escape(self.model)} v{html.escape(self.version)}</b> at "
            f"<a href='{self.url}' target='_blank'>{self.url}</a> &middot; "
            f"<a href='{self.docs_url}' target='_blank'>API docs</a> &middot; pid {self.pid}"
            f"<pre>{html.escape(self.curl_example())}</pre></div>"
        )

    def __repr__(self) -> str:
        version, now = self.current() if self.alive else (self.version, self.routes)
        routes = f"\n  routes: {routes_text(now)}" if len(now) > 1 else ""
        return (
            f"Serving {self.model} v{version} at {self.url} (docs: {self.docs_url}, "
            f"pid {self.pid}){routes}\n  {self.curl_example()}"
        )


@dataclass(frozen=True)
class ServerList:
    """Servers listed or stopped, as a table."""

    servers: list[ServerHandle]
    stopped: bool = False

    @cached_property
    def _rows(self) -> list[tuple[str, ...]]:
        """One row per server, read once (a notebook shows both the HTML and the text)."""
        rows = []
        for h in self.servers:
            version, routes = (h.version, h.routes) if self.stopped else h.current()
            rows.append((h.model, f"v{version}", h.url, str(h.pid), routes_text(routes)))
        return rows

    def _repr_html_(self) -> str:
        import html

        if not self.servers:
            return f"<p>{html.escape(repr(self))}</p>"
        head = "".join(f"<th>{h}</th>" for h in ("model", "version", "url", "pid", "routes"))
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in self._rows
        )
        title = "Stopped" if self.stopped else "Running"
        return f"<b>{title}</b><table><tr>{head}</tr>{body}</table>"

    def __repr__(self) -> str:
        if not self.servers:
            return "no servers stopped" if self.stopped else "no servers running"
        title = "stopped" if self.stopped else "running"
        lines = [f"{title}:"] + ["  " + "  ".join(row) for row in self._rows]
        return "\n".join(lines)


def routes_text(routes) -> str:
    """``primary v3 90% · canary v4 10% (sticky x-user-id)``; the primary alone when a server
    has no canary or shadow."""
    if not routes:
        return "primary"
    parts = []
    for route in routes:
        share = route.get("weight", route.get("fraction", 1.0))
        text = f"{route['route']} v{route['version']} {share:.0%}"
        if route.get("sticky"):
            text += f" (sticky {route['sticky']})"
        parts.append(text)
    return " · ".join(parts)


def terminate(pid: int, created: float | None, grace: float = 15.0) -> None:
    """SIGTERM (the server finishes and logs what it is scoring), SIGKILL after ``grace``; only
    while ``pid`` is the process that started at ``created``."""
    if not send_signal(pid, created, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid, created):
            return
        time.sleep(0.05)
    send_signal(pid, created, signal.SIGKILL)
    while pid_alive(pid, created):
        time.sleep(0.05)


def send_signal(pid: int, created: float | None, signum: int) -> bool:
    """Signal a server's process group when it leads one (its uvicorn workers too), if ``pid``
    is still the process that started at ``created``; False when it is gone."""
    if not pid_alive(pid, created):
        return False
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def process_created(pid: int) -> float | None:
    """When the process ``pid`` started (psutil's ``create_time``); None when there is none."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def pid_alive(pid: int, created: float | None) -> bool:
    """``pid`` runs and is the process that started at ``created``. A pid reused by another
    process is not, and neither is a record without a start time (nothing proves it ours)."""
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)  # reap our own child once it has exited
        if finished == pid:
            return False
    except ChildProcessError:
        pass
    if created is None:
        return False
    try:
        process = psutil.Process(pid)
        same = abs(process.create_time() - created) <= START_TOLERANCE
        return same and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def record_path(directory: Path, port: int) -> Path:
    return directory / f"{port}.server.json"


def _json_or_text(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:500]
