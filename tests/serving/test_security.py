"""Secrets stay secret and a recorded pid is signalled only while it is our server (SPEC 12)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from nbmlops.datasets import make_churn
from nbmlops.errors import UsageError
from nbmlops.serving.client import ServerHandle, record_path
from nbmlops.serving.options import ServeOptions
from nbmlops.serving.process import build_config, free_port, list_servers, serve, stop_servers
from tests.served_model import store_fixture  # noqa: F401 - a fixture

SECRET = "s3cret-from-the-environment-9f2c"
NBMLOPS = str(Path(sys.executable).parent / "nbmlops")


def one_record() -> dict:
    frame = make_churn(1, seed=3).drop(columns="churned")
    return json.loads(frame.to_json(orient="records"))[0]


def shown(handle: ServerHandle) -> str:
    """Everything a handle shows a user: repr, notebook HTML, to_dict, the curl example."""
    return "\n".join(
        [repr(handle), handle._repr_html_(), json.dumps(handle.to_dict()), handle.curl_example()]
    )


def wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_nbmlops_serve_takes_the_token_from_the_environment_and_shows_it_nowhere(store):
    port = free_port()
    env = {**os.environ, "NBMLOPS_HOME": str(store.home), "NBMLOPS_TOKEN": SECRET}
    cli = subprocess.Popen(
        [NBMLOPS, "serve", "churn", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    record = record_path(store.home / "servers", port)
    try:
        wait_for(record.is_file)
        url = f"http://127.0.0.1:{port}"
        body = {"records": [one_record()]}
        assert httpx.post(f"{url}/predict", json=body).status_code == 401
        wrong = {"Authorization": f"Bearer {SECRET[:-1]}x"}
        assert httpx.post(f"{url}/predict", json=body, headers=wrong).status_code == 401
        right = {"Authorization": f"Bearer {SECRET}"}
        assert httpx.post(f"{url}/predict", json=body, headers=right).status_code == 200

        # The record holds the token, for its owner only, so a handle read back can call.
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
        (handle,) = [h for h in list_servers(store) if h.port == port]
        assert len(handle.predict(make_churn(2, seed=4).drop(columns="churned"))) == 2
        assert SECRET not in shown(handle)
        assert '-H "Authorization: Bearer $NBMLOPS_TOKEN"' in handle.curl_example()
        assert handle.to_dict()["token_required"] is True

        # Not in what ps shows of the server or of the command, nor in the server's log.
        for pid in (handle.pid, cli.pid):
            assert SECRET not in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert SECRET not in Path(handle.log_file).read_text()
    finally:
        cli.send_signal(signal.SIGTERM)
        out, err = cli.communicate(timeout=30)
    assert cli.returncode == 0, err
    assert f"Serving churn v1 at {url}" in out
    assert SECRET not in out + err


def test_an_explicit_token_wins_over_the_environment(store, monkeypatch):
    monkeypatch.setenv("NBMLOPS_TOKEN", SECRET)
    handle = serve("churn", settings=store, token="explicit-token")
    try:
        body = {"records": [one_record()]}
        headers = {"Authorization": f"Bearer {SECRET}"}
        assert httpx.post(f"{handle.url}/predict", json=body, headers=headers).status_code == 401
        headers = {"Authorization": "Bearer explicit-token"}
        assert httpx.post(f"{handle.url}/predict", json=body, headers=headers).status_code == 200
        assert "explicit-token" not in shown(handle)
    finally:
        handle.stop()


def test_a_token_in_the_environment_counts_for_a_host_beyond_loopback(store, monkeypatch):
    with pytest.raises(UsageError, match="NBMLOPS_TOKEN"):
        build_config("churn", store, ServeOptions(host="0.0.0.0"))
    monkeypatch.setenv("NBMLOPS_TOKEN", SECRET)
    config = build_config("churn", store, ServeOptions(host="0.0.0.0"))
    assert config.token == SECRET
    assert SECRET not in repr(config)


def test_a_server_record_is_created_owner_only_whatever_the_umask(store):
    previous = os.umask(0)  # a file created and then chmod-ed would be 0666 for a moment
    try:
        handle = serve("churn", settings=store, token="record-token")
    finally:
        os.umask(previous)
    try:
        record = record_path(store.home / "servers", handle.port)
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
        assert json.loads(record.read_text())["token"] == "record-token"
    finally:
        handle.stop()


@pytest.fixture
def unrelated_process():
    """A process that is not a server, leading its own process group, as a reused pid would."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("created", ["an hour before", "not recorded"])
def test_a_record_whose_pid_was_reused_signals_nothing(settings, unrelated_process, created):
    """A server's record outlived it and the system gave its pid to another process."""
    servers = settings.home / "servers"
    servers.mkdir(parents=True)
    started = psutil.Process(unrelated_process.pid).create_time()
    stale = ServerHandle(
        model="churn",
        version="1",
        host="127.0.0.1",
        port=free_port(),
        pid=unrelated_process.pid,
        log_file=str(servers / "server-1.log"),
        pid_created=started - 3600 if created == "an hour before" else None,
    )
    record = record_path(servers, stale.port)
    record.write_text(json.dumps(stale.to_record()))

    assert not stale.alive
    stale.stop()  # what the atexit hook does with a handle it started
    assert list_servers(settings) == []
    assert not record.exists()
    record.write_text(json.dumps(stale.to_record()))
    assert stop_servers("all", settings) == []
    time.sleep(0.2)
    assert unrelated_process.poll() is None, "an unrelated process group was signalled"
