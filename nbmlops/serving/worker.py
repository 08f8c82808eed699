"""The server process itself: ``python -m nbmlops.serving.worker WORKERS PARENT_PID`` reads
its configuration on stdin and runs uvicorn with the app until stopped or orphaned.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

from nbmlops.serving.client import pid_alive, process_created
from nbmlops.serving.config import ServerConfig


def run(config: ServerConfig, workers: int = 1, parent_pid: int | None = None) -> None:
    """Run the server in this process until it is stopped (SIGTERM or Ctrl-C)."""
    import uvicorn

    if parent_pid:
        exit_with_parent(parent_pid)
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        os.environ["NBMLOPS_SERVER_CONFIG"] = config.to_json()
        # Each worker counts in files here, and /metrics adds them up across the workers.
        metrics_dir = tempfile.mkdtemp(prefix="nbmlops-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        multi = uvicorn.Config(
            "nbmlops.serving.worker:app_from_env",
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
    from nbmlops.serving.app import create_app

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
    from nbmlops.serving.app import create_app

    return create_app(ServerConfig.from_json(os.environ["NBMLOPS_SERVER_CONFIG"]))


def exit_with_parent(parent_pid: int) -> None:
    """Stop this process gracefully (SIGTERM to itself) when the process that started it is
    gone."""
    created = process_created(parent_pid)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid and not pid_alive(parent_pid, created):
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="nbmlops-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    """``python -m nbmlops.serving.worker WORKERS PARENT_PID``, configuration on stdin: the server
    process. It imports its libraries before the configuration arrives."""
    workers, parent = (argv or sys.argv[1:])[:2]
    import sklearn.pipeline  # noqa: F401
    import skops.io  # noqa: F401 - warm imports while the parent resolves the model

    import nbmlops.serving.app  # noqa: F401

    line = sys.stdin.readline()
    if not line.strip():
        return
    run(ServerConfig.from_json(line), int(workers), int(parent) or None)


if __name__ == "__main__":
    main()
