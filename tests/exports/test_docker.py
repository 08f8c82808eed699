"""``export --format docker``: a build context whose command serves the version without the
registry. (``.ci/check-docker-context`` installs a context into a fresh venv; here the
command runs in this environment.)"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

import nbmlops
from nbmlops.errors import ArtifactModifiedError, UsageError
from nbmlops.predlog.log import PredictionLog
from nbmlops.registry.registry import Registry
from nbmlops.serving.process import free_port
from tests.churn_store import (
    NAME,
    churn_registry_fixture,  # noqa: F401 - a fixture
    churn_store_fixture,  # noqa: F401 - a fixture
)

TOKEN = "container-secret"


def container_command(context: Path, port: int) -> list[str]:
    """The Dockerfile's CMD, on ``port`` instead of the image's, with this venv's nbmlops."""
    line = [x for x in (context / "Dockerfile").read_text().splitlines() if x.startswith("CMD")]
    argv = json.loads(line[-1].removeprefix("CMD"))
    argv[argv.index("--port") + 1] = str(port)
    return [str(Path(sys.executable).with_name(argv[0])), *argv[1:]]


def wait_ready(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the container's command never became ready")


@pytest.fixture(name="context")
def context_fixture(churn_registry, tmp_path) -> Path:
    nbmlops.promote(f"{NAME}@v2")
    written = nbmlops.export(f"{NAME}@production", format="docker", output=tmp_path / "ctx")
    assert written.version == "2" and Path(written.path) == tmp_path / "ctx"
    return tmp_path / "ctx"


def test_the_context_is_a_pinned_non_root_image_that_serves_without_the_registry(
    context, churn_registry, tmp_path
):
    dockerfile = (context / "Dockerfile").read_text()
    python = "{}.{}.{}".format(*sys.version_info[:3])
    assert f"ARG PYTHON_IMAGE=python:{python}-slim" in dockerfile
    for directive in ("USER nbmlops", "EXPOSE 8000", "RUN pip install -r requirements.txt"):
        assert directive in dockerfile.splitlines()
    assert re.search(r"HEALTHCHECK .*\n.*http://127\.0\.0\.1:8000/health", dockerfile)
    assert '"--host", "0.0.0.0"' in dockerfile and "--token" not in dockerfile
    assert "__pycache__" in (context / ".dockerignore").read_text()
    assert "docker build" in (context / "README.md").read_text()

    lines = [x for x in (context / "requirements.txt").read_text().splitlines() if x[:1] != "#"]
    pins = dict(x.split("==") for x in lines if "==" in x)
    for name in ("scikit-learn", "pandas", "mlflow", "fastapi", "uvicorn", "onnxruntime"):
        assert pins[name] == importlib.metadata.version(name), name
    wheel = [x for x in lines if "==" not in x]
    assert wheel == ["./wheels/nbmlops-0.1.0-py3-none-any.whl"]
    assert (context / wheel[0]).is_file()

    registration = json.loads((context / "registration.json").read_text())
    version = Registry(churn_registry.settings).get(NAME, "2")
    assert registration["version"] == "2" and "production" in registration["aliases"]
    assert registration["artifact_sha256"] == version.tags["nbmlops.artifact_sha256"]

    shutil.rmtree(churn_registry.settings.home)  # no registry, as in the container
    state = tmp_path / "state"
    port = free_port()
    env = {**os.environ, "NBMLOPS_HOME": str(state), "NBMLOPS_TOKEN": TOKEN}
    refused = subprocess.run(
        container_command(context, port),
        cwd=context,
        env={k: v for k, v in env.items() if k != "NBMLOPS_TOKEN"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "NBMLOPS_TOKEN" in refused.stderr

    proc = subprocess.Popen(
        container_command(context, port),
        cwd=context,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        wait_ready(url, proc)
        assert httpx.get(f"{url}/health").status_code == 200
        records = json.loads(churn_registry.X_score.to_json(orient="records"))
        assert httpx.post(f"{url}/predict", json={"records": records}).status_code == 401
        reply = httpx.post(f"{url}/predict", json={"records": records}, headers=auth, timeout=30)
        assert reply.status_code == 200, reply.text
        got = reply.json()["predictions"]
        expected = churn_registry.expected["2"]
        assert [a["prediction"] for a in got] == list(expected["prediction"])
        np.testing.assert_allclose([a["proba"]["1"] for a in got], expected["proba_1"], atol=1e-9)
        bad = httpx.post(f"{url}/predict", json={"tenure_months": "ten"}, headers=auth)
        assert bad.status_code == 422 and "tenure_months" in bad.text
        meta = httpx.get(f"{url}/metadata", headers=auth).json()
        assert (meta["version"], meta["follow"]) == ("2", None)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    log = PredictionLog(str(state / "predictions.db"))
    try:
        assert log.count(NAME, "ok") == len(records)
    finally:
        log.close()


def test_a_modified_copy_or_a_second_version_is_refused(context):
    with pytest.raises(UsageError, match="--canary needs the registry"):
        nbmlops.serve(str(context), canary=f"{NAME}@v1")
    manifest = context / "model" / "manifest.json"
    manifest.write_text(manifest.read_text().replace("{", "{ ", 1))
    with pytest.raises(ArtifactModifiedError, match="manifest.json is not the one registered"):
        nbmlops.serve(str(context))


def test_a_context_is_never_written_over_an_existing_folder(churn_registry, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="is not empty"):
        nbmlops.export(f"{NAME}@v1", format="docker", output=tmp_path / "busy")
