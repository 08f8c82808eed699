"""Team members at the same moment, on a tracking server over PostgreSQL and one PostgreSQL log:
no lost version, no crossed alias, no lost request or log row."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

import nbmlops
from nbmlops.datasets import make_churn
from nbmlops.predlog.log import PredictionLog
from nbmlops.registry.registry import Registry
from tests.team.test_loop import training_notebook

#: One team member packaging ``name`` (argv 1) from data drawn with a seed (argv 2).
_PACKAGER = """
import sys
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
import nbmlops
from nbmlops.datasets import make_churn

name, seed = sys.argv[1], int(sys.argv[2])
df = make_churn(300, seed=seed)
x, y = df.drop(columns=["churned", "payment_method"]), df["churned"]
clf = make_pipeline(
    make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), ["contract", "region"]),
        (SimpleImputer(), ["tenure_months", "monthly_charges", "support_calls"]),
    ),
    LogisticRegression(max_iter=500),
).fit(x, y)
print(nbmlops.package(name, clf, x, target=y).version)
"""


def package_at_once(name: str, seeds: list[int]) -> list[str]:
    """Package ``name`` from one process per seed, all started together; their versions."""
    members = [
        subprocess.Popen(
            [sys.executable, "-c", _PACKAGER, name, str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in seeds
    ]
    results = [member.communicate(timeout=300) for member in members]
    assert [m.returncode for m in members] == [0] * len(seeds), [e[-2000:] for _, e in results]
    return [out.strip().splitlines()[-1] for out, _ in results]


def test_three_members_packaging_one_name_at_once_get_three_versions(team):
    name = f"churn-{uuid.uuid4().hex[:8]}"
    versions = package_at_once(name, [1, 2, 3])
    assert sorted(versions, key=int) == ["1", "2", "3"]
    registered = Registry(team).versions(name)
    assert sorted(v.version for v in registered) == ["1", "2", "3"]
    assert len({v.run_id for v in registered}) == 3, "each version holds its own run"


def test_two_retraining_jobs_at_once_promote_in_turn(team, tmp_path):
    name = f"churn-{uuid.uuid4().hex[:8]}"
    notebook = training_notebook(tmp_path, name)
    command = [
        str(Path(sys.executable).parent / "nbmlops"),
        "retrain",
        str(notebook),
        "--model",
        name,
        "--promote",
        "production",
    ]
    jobs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in "ab"
    ]
    results = [job.communicate(timeout=600) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], [err[-2000:] for _, err in results]
    registry = Registry(team)
    # the second job to reach the gate judged against the first one's promotion
    assert {registry.alias_version(name, a) for a in ("production", "previous")} == {"1", "2"}


def test_an_alias_move_under_serving_load_loses_no_request_and_no_log_row(team):
    name = f"churn-{uuid.uuid4().hex[:8]}"
    package_at_once(name, [1, 2])
    nbmlops.promote(f"{name}@v1")
    server = nbmlops.serve(f"{name}@production")
    records = make_churn(4, seed=9).drop(columns=["churned", "payment_method"])
    body = json.dumps({"records": records.to_dict("records")}, default=str)
    answered, failures, versions = [], [], set()
    stop = threading.Event()

    def caller():
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                reply = client.post("/predict", content=body)
                if reply.status_code != 200:
                    failures.append(reply.text)
                    continue
                versions.add(reply.json()["version"])
                answered.extend(p["id"] for p in reply.json()["predictions"])

    callers = [threading.Thread(target=caller) for _ in range(4)]
    try:
        for thread in callers:
            thread.start()
        time.sleep(1.0)
        nbmlops.promote(f"{name}@v2")
        deadline = time.monotonic() + 30
        while "2" not in versions:
            assert time.monotonic() < deadline, "the server never followed the promotion"
            time.sleep(0.1)
        nbmlops.rollback(name)
        time.sleep(3.0)
    finally:
        stop.set()
        for thread in callers:
            thread.join(timeout=60)
        server.stop()
    assert failures == []
    assert versions == {"1", "2"} and len(answered) > 100
    assert Registry(team).alias_version(name, "production") == "1"
    log = PredictionLog(team.log_uri)
    try:
        logged = set(log.frame(name)["id"])
    finally:
        log.close()
    assert logged == set(answered), "every answered prediction is in the log, and only those"
