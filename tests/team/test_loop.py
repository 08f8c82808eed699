"""The team path end to end: an ``mlflow server`` on PostgreSQL as the registry, one prediction log
in PostgreSQL, two replicas on two ports writing it, a monitor that sees both, a retraining job
that promotes, replicas that follow, and a rollback."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import nbformat

import nbmlops
from nbmlops.cli import main
from nbmlops.datasets import make_churn
from nbmlops.predlog.log import PredictionLog
from nbmlops.registry.registry import Registry

TRAIN = Path(__file__).resolve().parents[2] / "notebooks" / "train.ipynb"


def training_notebook(directory: Path, name: str) -> Path:
    """notebooks/train.ipynb packaging under ``name``: the tracking server is shared by tests."""
    nb = nbformat.read(TRAIN, as_version=4)
    for cell in nb.cells:
        cell.source = cell.source.replace("%%mlops_package churn ", f"%%mlops_package {name} ")
    path = directory / "train.ipynb"
    nbformat.write(nb, path)
    return path


def wait_for_version(url: str, version: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (served := httpx.get(f"{url}/metadata").json()["version"]) != version:
        assert time.monotonic() < deadline, f"{url} still serves v{served}, not v{version}"
        time.sleep(0.2)


def test_the_whole_loop_on_a_tracking_server_and_one_postgresql_log(team, tmp_path, capsys):
    name = f"churn-{uuid.uuid4().hex[:8]}"
    notebook = training_notebook(tmp_path, name)
    job = ["retrain", str(notebook), "--model", name, "--promote", "production"]

    assert main(job) == 0
    assert Registry(team).alias_version(name, "production") == "1"

    replicas = [nbmlops.serve(f"{name}@production"), nbmlops.serve(f"{name}@production")]
    try:
        assert replicas[0].port != replicas[1].port
        records = make_churn(30, seed=5).drop(columns="churned").to_dict("records")
        ids = []
        for i, replica in enumerate(replicas * 3):  # 6 requests of 5 records, both replicas
            body = json.dumps({"records": records[i * 5 : (i + 1) * 5]}, default=str)
            answer = httpx.post(f"{replica.url}/predict", content=body, timeout=30)
            assert answer.status_code == 200, answer.text
            ids += [p["id"] for p in answer.json()["predictions"]]
        feedback = {"feedback": [{"id": i, "label": 1} for i in ids[:10]]}
        assert httpx.post(f"{replicas[1].url}/feedback", json=feedback).status_code == 200

        # a monitor anywhere sees both replicas' traffic, and the feedback given to one of them
        report = nbmlops.monitor(name)
        assert report.version == "1" and report.n_predictions == 30
        assert report.quality is not None and report.quality["n_labels"] == 10

        assert main(job) == 0  # an equal model passes the gate and is promoted
        assert Registry(team).alias_version(name, "previous") == "1"
        for replica in replicas:
            wait_for_version(replica.url, "2")

        assert main(["models", "rollback", name]) == 0
        for replica in replicas:
            wait_for_version(replica.url, "1")
    finally:
        for replica in replicas:
            replica.stop()

    log = PredictionLog(team.log_uri)
    try:
        switches = [e for e in log.events(name, "2") if e["kind"] == "switch"]
        assert len(switches) == 4, "each replica recorded its switch to v2 and back"
        assert log.count(name) == 30
    finally:
        log.close()
    assert not (team.home / "predictions.db").exists(), "nothing was logged on this machine"
