"""Running prediction servers: start one in its own process, wait until ready, list, stop.

The parent (a kernel, a script, the CLI) resolves the model in the registry and hands the server
a :class:`~nbmlops.server.ServerConfig`; the server process never touches the registry. Servers
started from a process stop when it exits, and a server whose parent dies stops itself.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from nbmlops.config import Settings
from nbmlops.errors import ServingError, UsageError, ValidationError
from nbmlops.registry import Registry
from nbmlops.server_config import ServerConfig

READY_TIMEOUT = 120.0
_started: list[ServerHandle] = []


@dataclass(frozen=True)
class ServerHandle:
    """A running server: its URL, and ``.predict(df)`` / ``.stop()``."""

    model: str
    version: str
    host: str
    port: int
    pid: int
    log_file: str
    token: str | None = None
    started: float = 0.0
    example: dict | None = None

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
        return _pid_alive(self.pid)

    def curl_example(self) -> str:
        body = json.dumps({"records": [self.example or {}]})
        auth = f" -H 'Authorization: Bearer {self.token}'" if self.token else ""
        return f"curl -s {self.url}/predict -H 'Content-Type: application/json'{auth} -d '{body}'"

    def predict(self, frame):
        """Score a frame through the server: ``prediction``, ``proba_<label>`` and ``id``."""
        import pandas as pd

        if not isinstance(frame, pd.DataFrame):
            raise UsageError(f"predict takes a pandas DataFrame, got {type(frame).__name__}")
        from nbmlops.frames import to_records

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
                from nbmlops.validation import Problem

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

    def stop(self) -> None:
        """Stop the server gracefully (it finishes and logs what it is scoring)."""
        _terminate(self.pid)
        _record_path(Path(self.log_file).parent, self.port).unlink(missing_ok=True)

    def to_dict(self) -> dict:
        return {**self.__dict__, "url": self.url, "alive": self.alive}

    def _repr_html_(self) -> str:
        import html

        return (
            f"<div><b>Serving {html.escape(self.model)} v{html.escape(self.version)}</b> at "
            f"<a href='{self.url}' target='_blank'>{self.url}</a> &middot; "
            f"<a href='{self.docs_url}' target='_blank'>API docs</a> &middot; pid {self.pid}"
            f"<pre>{html.escape(self.curl_example())}</pre></div>"
        )

    def __repr__(self) -> str:
        return (
            f"Serving {self.model} v{self.version} at {self.url} (docs: {self.docs_url}, "
            f"pid {self.pid})\n  {self.curl_example()}"
        )


@dataclass(frozen=True)
class ServerList:
    """Servers listed or stopped, as a table."""

    servers: list[ServerHandle]
    stopped: bool = False

    def _rows(self) -> list[tuple[str, ...]]:
        return [(h.model, f"v{h.version}", h.url, str(h.pid)) for h in self.servers]

    def _repr_html_(self) -> str:
        import html

        if not self.servers:
            return f"<p>{html.escape(repr(self))}</p>"
        head = "".join(f"<th>{h}</th>" for h in ("model", "version", "url", "pid"))
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in self._rows()
        )
        title = "Stopped" if self.stopped else "Running"
        return f"<b>{title}</b><table><tr>{head}</tr>{body}</table>"

    def __repr__(self) -> str:
        if not self.servers:
            return "no servers stopped" if self.stopped else "no servers running"
        title = "stopped" if self.stopped else "running"
        lines = [f"{title}:"] + ["  " + "  ".join(row) for row in self._rows()]
        return "\n".join(lines)


def build_config(
    model: str,
    *,
    settings: Settings,
    host: str = "127.0.0.1",
    port: int | None = None,
    token: str | None = None,
    insecure: bool = False,
    unknown_categories: str = "reject",
    max_records: int | None = None,
    max_body_bytes: int | None = None,
) -> ServerConfig:
    """Resolve ``model`` in the registry and check the security defaults."""
    if not _is_loopback(host) and not token and not insecure:
        raise UsageError(
            f"--host {host} exposes the model beyond this machine; pass --token SECRET "
            "(clients then send 'Authorization: Bearer SECRET') or --insecure to allow it"
        )
    if unknown_categories not in ("reject", "allow"):
        raise UsageError(
            f"--unknown-categories {unknown_categories!r}: choose 'reject' (default) or 'allow'"
        )
    registry = Registry(settings)
    version = registry.resolve(model)
    config = ServerConfig(
        artifact=str(registry.local_path(version)),
        name=version.name,
        version=version.version,
        aliases=version.aliases,
        log_path=str(settings.home / "predictions.db"),
        host=host,
        port=port or free_port(host),
        token=token,
        unknown_categories=unknown_categories,
        metrics=dict(version.metrics),
    )
    limits = {"max_records": max_records, "max_body_bytes": max_body_bytes}
    return replace(config, **{k: v for k, v in limits.items() if v is not None})


def serve(
    model: str,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    workers: int = 1,
    token: str | None = None,
    insecure: bool = False,
    unknown_categories: str = "reject",
    max_records: int | None = None,
    max_body_bytes: int | None = None,
    settings: Settings | None = None,
    timeout: float = READY_TIMEOUT,
) -> ServerHandle:
    """Start a prediction server for ``model`` in its own process and wait until it is ready."""
    settings = settings or Settings.from_env()
    options = dict(
        host=host,
        port=port,
        token=token,
        insecure=insecure,
        unknown_categories=unknown_categories,
        max_records=max_records,
        max_body_bytes=max_body_bytes,
    )
    handle, proc = _start(model, settings, workers, os.getpid(), options, background=True)
    _wait_ready(handle, proc, timeout)
    _record_path(_servers_dir(settings), handle.port).write_text(json.dumps(handle.__dict__))
    _started.append(handle)
    return handle


def serve_foreground(model: str, settings: Settings, workers: int = 1, **options) -> int:
    """``nbmlops serve``: run a server until Ctrl-C or SIGTERM; returns its exit code."""
    handle, proc = _start(model, settings, workers, os.getpid(), options, background=False)
    record = _record_path(_servers_dir(settings), handle.port)

    def forward(signum, frame):
        _signal(proc.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _wait_ready(handle, proc, READY_TIMEOUT)
        record.write_text(json.dumps(handle.__dict__))
        print(f"{handle!r}\nCtrl-C stops it.", flush=True)
        return proc.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        record.unlink(missing_ok=True)
        if proc.poll() is None:
            _terminate(proc.pid)


def _start(model, settings, workers, parent_pid, options, background):
    """Spawn the server process first (it imports its libraries meanwhile), then resolve the
    model in the registry and hand the process its configuration."""
    servers = _servers_dir(settings)
    log_file = servers / f"server-{time.time_ns()}.log"
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nbmlops.service", str(workers), str(parent_pid or 0)],
            stdin=subprocess.PIPE,
            stdout=log if background else None,
            stderr=subprocess.STDOUT if background else None,
            start_new_session=True,
        )
    try:
        config = build_config(model, settings=settings, **options)
        for running in list_servers(settings):
            if running.port == config.port:
                raise UsageError(
                    f"port {config.port} is already serving {running.model} "
                    f"v{running.version}; pick another --port or stop it with "
                    f"%mlops_serve --stop {config.port}"
                )
        proc.stdin.write((config.to_json() + "\n").encode())
        proc.stdin.close()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    handle = ServerHandle(
        model=config.name,
        version=config.version,
        host=config.host,
        port=config.port,
        pid=proc.pid,
        log_file=str(log_file),
        token=config.token,
        started=time.time(),
        example=_example_record(config),
    )
    return handle, proc


def list_servers(settings: Settings | None = None) -> list[ServerHandle]:
    """Servers started from this store that are still running (stale records are removed)."""
    settings = settings or Settings.from_env()
    directory = settings.home / "servers"
    handles = []
    for path in sorted(directory.glob("*.server.json")) if directory.is_dir() else []:
        try:
            handle = ServerHandle(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if handle.alive:
            handles.append(handle)
        else:
            path.unlink(missing_ok=True)
    return handles


def stop_servers(
    target: str | None = "all", settings: Settings | None = None
) -> list[ServerHandle]:
    """Stop servers by model name or address, port, or ``all``; returns those stopped."""
    running = list_servers(settings)
    if target in (None, "", "all"):
        chosen = running
    elif target.isdigit():
        chosen = [h for h in running if h.port == int(target)]
    else:
        name = target.split("@", 1)[0].removeprefix("models:/").split("/", 1)[0]
        chosen = [h for h in running if h.model == name]
    if not chosen and target not in (None, "", "all"):
        known = ", ".join(f"{h.model} v{h.version} on {h.port}" for h in running) or "none"
        raise UsageError(f"no running server matches {target!r}; running: {known}")
    for handle in chosen:
        handle.stop()
    return chosen


def run(config: ServerConfig, workers: int = 1, parent_pid: int | None = None) -> None:
    """Run the server in this process until it is stopped (SIGTERM or Ctrl-C)."""
    import uvicorn

    if parent_pid:
        _exit_with_parent(parent_pid)
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        os.environ["NBMLOPS_SERVER_CONFIG"] = config.to_json()
        # Each worker counts in files here, and /metrics adds them up across the workers.
        metrics_dir = tempfile.mkdtemp(prefix="nbmlops-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        multi = uvicorn.Config(
            "nbmlops.service:app_from_env",
            factory=True,
            host=config.host,
            port=config.port,
            workers=workers,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=10,
        )
        sock = multi.bind_socket()
        # uvicorn binds without IPPROTO_TCP, so asyncio never sets TCP_NODELAY on accepted
        # connections and every kept-alive answer waits ~40 ms for a delayed ACK
        # (uvicorn issue 3149); rewrapping the socket fixes it.
        sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
        try:
            Multiprocess(multi, sockets=[sock]).run()
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        return
    from nbmlops.server import create_app

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            # Stop gracefully on SIGINT/SIGTERM, then exit normally: uvicorn would re-raise the
            # signal, which makes a clean stop look like a crash to whoever started us.
            signals = (signal.SIGINT, signal.SIGTERM)
            previous = {s: signal.signal(s, self.handle_exit) for s in signals}
            try:
                yield
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)

    Server(
        uvicorn.Config(
            create_app(config),
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    ).run()


def app_from_env():
    """App factory for multi-worker uvicorn (each worker builds its own app)."""
    from nbmlops.server import create_app

    return create_app(ServerConfig.from_json(os.environ["NBMLOPS_SERVER_CONFIG"]))


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host if host not in ("0.0.0.0", "::") else "", 0))
        return sock.getsockname()[1]


def _wait_ready(handle: ServerHandle, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = Path(handle.log_file).read_text(errors="replace").strip().splitlines()[-8:]
            raise ServingError(
                f"the server for {handle.model} v{handle.version} exited with code "
                f"{proc.returncode} before it was ready; its log ({handle.log_file}) ends:\n"
                + "\n".join(tail)
            )
        try:
            with urllib.request.urlopen(handle.url + "/ready", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    _terminate(proc.pid)
    raise ServingError(
        f"the server for {handle.model} was not ready after {timeout:.0f} s; see {handle.log_file}"
    )


def _terminate(pid: int, grace: float = 15.0) -> None:
    """SIGTERM (the server finishes and logs what it is scoring), SIGKILL after ``grace``."""
    if not _signal(pid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    _signal(pid, signal.SIGKILL)
    while _pid_alive(pid):
        time.sleep(0.05)


def _signal(pid: int, signum: int) -> bool:
    """Signal a server's process group when it leads one (its uvicorn workers too)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _exit_with_parent(parent_pid: int) -> None:
    """Stop this server gracefully when the process that started it is gone."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid and not _pid_alive(parent_pid):
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="nbmlops-parent-watch", daemon=True).start()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _servers_dir(settings: Settings) -> Path:
    directory = settings.home / "servers"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _record_path(directory: Path, port: int) -> Path:
    return directory / f"{port}.server.json"


def _example_record(config: ServerConfig) -> dict:
    """One plausible record from the training sample, for the curl example."""
    root = Path(config.artifact)
    profile = json.loads((root / "profile.json").read_text())
    dtypes = {
        c["name"]: c["dtype"] for c in json.loads((root / "schema.json").read_text())["columns"]
    }
    example = {}
    for column in profile["columns"]:
        value = column["sample"][0] if column["sample"] else None
        if value is not None and dtypes[column["name"]].startswith("int"):
            value = int(value)
        example[column["name"]] = value
    return example


def _json_or_text(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:500]


@atexit.register
def _stop_started() -> None:
    for handle in _started:
        if handle.alive:
            handle.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m nbmlops.service WORKERS PARENT_PID``, configuration on stdin: the server
    process. It imports its libraries before the configuration arrives."""
    workers, parent = (argv or sys.argv[1:])[:2]
    import sklearn.pipeline  # noqa: F401
    import skops.io  # noqa: F401 - warm imports while the parent resolves the model

    import nbmlops.server  # noqa: F401

    line = sys.stdin.readline()
    if not line.strip():
        return
    run(ServerConfig.from_json(line), int(workers), int(parent) or None)


if __name__ == "__main__":
    main()
