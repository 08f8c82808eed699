"""A real ``redis-server`` for the streaming tests, started once per session on a free port.

tests/conftest.py registers it with ``pytest_plugins``. Without Debian's ``redis-server`` the
tests that use it are skipped; with ``NBMLOPS_REQUIRE_REDIS=1`` (CI) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a server this session started (and stops, by pid)."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed: apt-get install redis-server"
        if os.environ.get("NBMLOPS_REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    directory = tmp_path_factory.mktemp("redis")
    port = _free_port()
    log = open(directory / "redis.log", "wb")  # noqa: SIM115 - closed at the end
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--dir", str(directory)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    said = (directory / "redis.log").read_text()
                    pytest.fail(f"redis-server did not start: {said}")
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
