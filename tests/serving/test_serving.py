"""The prediction service over real sockets: a real uvicorn process on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import nbmlops
from nbmlops.config import Settings
from nbmlops.datasets import make_churn
from nbmlops.errors import UsageError, ValidationError
from nbmlops.predlog.log import PredictionLog
from nbmlops.serving.process import free_port, list_servers, serve, stop_servers
from tests.served_model import server_fixture, store_fixture  # noqa: F401 - fixtures


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def rows(n: int = 5, seed: int = 11) -> pd.DataFrame:
    return make_churn(n, seed=seed).drop(columns="churned")


def records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def expected(store: Settings, frame: pd.DataFrame, **options) -> pd.DataFrame:
    model = nbmlops.load("churn@v1", settings=store)
    return model.predict(frame, **options).reset_index(drop=True)


def log_counts(store: Settings) -> dict[str, int]:
    log = PredictionLog(store.home / "predictions.db")
    try:
        return {s: log.count("churn", s) for s in ("ok", "rejected", "error")}
    finally:
        log.close()


def test_predict_answers_what_the_artifact_predicts(store, server, client):
    frame = rows(8)
    answer = client.post("/predict", json={"records": records(frame)}).json()
    assert answer["model"] == "churn" and answer["version"] == "1"
    want = expected(store, frame)
    got = [p["prediction"] for p in answer["predictions"]]
    assert got == want["prediction"].tolist()
    np.testing.assert_allclose([p["proba"]["1"] for p in answer["predictions"]], want["proba_1"])
    assert len({p["id"] for p in answer["predictions"]}) == 8

    one = client.post("/predict", json=records(frame)[0]).json()
    assert one["predictions"][0]["prediction"] == got[0]

    via_handle = server.predict(frame)
    assert via_handle["prediction"].tolist() == got
    assert list(via_handle.columns) == ["prediction", "proba_0", "proba_1", "id"]


def test_load_predict_checks_rows_as_the_server_does(store):
    model = nbmlops.load("churn@v1", settings=store)
    frame = rows(3).astype({"contract": str})
    frame.iloc[1, frame.columns.get_loc("contract")] = "lifetime"
    with pytest.raises(ValidationError, match="record 1, field 'contract'.*never seen"):
        model.predict(frame)
    assert len(model.predict(frame, unknown_categories="allow")) == 3
    with pytest.raises(UsageError, match="unknown_categories must be 'reject' or 'allow'"):
        model.predict(frame, unknown_categories="sometimes")


@pytest.mark.parametrize(
    "payload",
    [
        lambda f: {"dataframe_split": json.loads(f.to_json(orient="split", index=False))},
        lambda f: {"dataframe_records": records(f)},
        lambda f: {"instances": records(f)},
        lambda f: {"inputs": {c: [r[c] for r in records(f)] for c in f.columns}},
    ],
    ids=["dataframe_split", "dataframe_records", "instances", "inputs"],
)
def test_invocations_speaks_mlflow_scoring_formats(store, client, payload):
    frame = rows(4)
    answer = client.post("/invocations", json=payload(frame))
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [p["prediction"] for p in predictions] == expected(store, frame)["prediction"].tolist()
    assert set(predictions[0]) == {"prediction", "proba_0", "proba_1"}


def test_invocations_csv_and_missing_content_type(store, client):
    frame = rows(3)
    csv = frame.to_csv(index=False)
    answer = client.post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200, answer.text
    want = expected(store, frame)["prediction"].tolist()
    assert [p["prediction"] for p in answer.json()["predictions"]] == want
    bare = client.post(
        "/invocations", content=json.dumps({"dataframe_records": records(frame)}), headers={}
    )
    assert bare.status_code == 200, bare.text


def test_open_inference_protocol(store, client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2/models/churn").json()
    assert meta["name"] == "churn" and meta["versions"] == ["1"]
    assert {i["name"] for i in meta["inputs"]} == set(rows(1).columns)
    frame = rows(3)
    datatypes = {i["name"]: i["datatype"] for i in meta["inputs"]}
    tensors = [
        {"name": c, "shape": [3], "datatype": datatypes[c], "data": [r[c] for r in records(frame)]}
        for c in frame.columns
    ]
    answer = client.post("/v2/models/churn/infer", json={"id": "req-1", "inputs": tensors}).json()
    assert answer["model_name"] == "churn" and answer["id"] == "req-1"
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["prediction"]["data"] == expected(store, frame)["prediction"].tolist()
    assert outputs["proba"]["shape"] == [3, 2] and len(outputs["proba"]["data"]) == 6
    assert client.get("/v2/models/other").status_code == 404


BAD_INPUTS = [
    ("missing column", lambda r: r.pop("region"), 0, "region", "missing"),
    ("unknown column", lambda r: r.update(planet="mars"), 0, "planet", "unknown field"),
    ("wrong type", lambda r: r.update(monthly_charges="cheap"), 0, "monthly_charges", "number"),
    ("float for integer", lambda r: r.update(support_calls=2.5), 0, "support_calls", "integer"),
    ("integer out of range", lambda r: r.update(support_calls=2**70), 0, "support_calls", "range"),
    ("unseen category", lambda r: r.update(region="Atlantis"), 0, "region", "never seen"),
    ("null not seen in training", lambda r: r.update(region=None), 0, "region", "null"),
    ("bool column gets a string", lambda r: r.update(paperless="yes"), 0, "paperless", "true"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_records_get_422_naming_record_and_field(store, client, case):
    _, spoil, index, field, words = case
    good = records(rows(3))
    spoil(good[index])
    before = log_counts(store)
    answer = client.post("/predict", json={"records": good})
    assert answer.status_code == 422, answer.text
    problems = answer.json()["problems"]
    assert any(
        p["record"] == index and p["field"] == field and words in p["message"] for p in problems
    )
    after = log_counts(store)
    assert after["ok"] == before["ok"]
    assert after["rejected"] == before["rejected"] + 1


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b"{not json", 400, "malformed JSON"),
        (b"", 400, "empty body"),
        (b'{"records": []}', 422, "no records"),
        (b"42", 400, "expected"),
        (json.dumps({"records": [{}] * 10_001}).encode(), 413, "limit is 10000"),
        (b'{"records": [' + b'{"a": "' + b"x" * (6 * 1024 * 1024) + b'"}]}', 413, "limit"),
    ],
    ids=["malformed", "empty", "empty-records", "not-an-object", "too-many", "too-big"],
)
def test_malformed_empty_and_oversized_bodies_are_4xx(client, body, status, words):
    answer = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"] + json.dumps(answer.json()["problems"])


def test_an_oversized_body_without_length_is_413(client):
    def chunks():
        yield b'{"records": [{"a": "'
        for _ in range(7):
            yield b"x" * (1024 * 1024)
        yield b'"}]}'

    answer = client.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "the limit is" in answer.json()["error"]


def test_scoring_routes_take_post_only_and_are_documented(client):
    answer = client.get("/predict")
    assert answer.status_code == 405 and "use POST" in answer.json()["error"]
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/predict", "/invocations", "/feedback", "/v2/models/{model_name}/infer"):
        body = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body, path
    record = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "region" in record["oneOf"][1]["properties"]


def test_unknown_categories_can_be_allowed(store):
    handle = serve("churn", settings=store, unknown_categories="allow")
    try:
        frame = rows(2).assign(region="Atlantis")
        got = handle.predict(frame)
        want = expected(store, frame, unknown_categories="allow")
        assert got["prediction"].tolist() == want["prediction"].tolist()
        with pytest.raises(ValidationError, match="planet"):
            handle.predict(frame.assign(planet="mars"))
    finally:
        handle.stop()


def test_feedback_joins_by_id_and_unknown_ids_are_404(store, client):
    answer = client.post("/predict", json={"records": records(rows(2))}).json()
    first, second = (p["id"] for p in answer["predictions"])
    assert client.post("/feedback", json={"id": first, "label": 1}).json() == {"recorded": 1}
    batch = {"feedback": [{"id": second, "label": 0}]}
    assert client.post("/feedback", json=batch).json() == {"recorded": 1}
    missing = client.post("/feedback", json={"id": "no-such-id", "label": 1})
    assert missing.status_code == 404 and "no-such-id" in missing.json()["error"]
    log = PredictionLog(store.home / "predictions.db")
    frame = log.frame("churn")
    log.close()
    labels = frame.set_index("id")["feedback"]
    assert labels[first] == "1" and labels[second] == "0"


def test_metrics_count_every_request(client):
    client.post("/predict", json={"records": records(rows(3))})
    client.post("/predict", content=b"{", headers={"Content-Type": "application/json"})
    text = client.get("/metrics").text
    for status in (200, 400):
        series = f'endpoint="/predict",route="primary",status="{status}",version="1"'
        assert f"nbmlops_requests_total{{{series}}}" in text
    assert 'nbmlops_model_info{model="churn",task="classification",version="1"} 1.0' in text
    assert 'nbmlops_predictions_total{label="1",route="primary",version="1"}' in text
    assert "nbmlops_request_duration_seconds_bucket" in text and 'le="0.0005"' in text


def test_metadata_and_docs(client):
    meta = client.get("/metadata").json()
    assert meta["name"] == "churn" and meta["version"] == "1"
    assert [c["name"] for c in meta["schema"]["columns"]] == list(rows(1).columns)
    assert meta["lineage"]["data_shape"] == [600, 7]
    assert client.get("/docs").status_code == 200
    assert "/predict" in client.get("/openapi.json").json()["paths"]


def model_calls(client) -> float:
    text = client.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("nbmlops_batch_rows_count"))
    return float(line.split()[-1])


def test_every_concurrent_prediction_is_logged_once(store, server, client):
    before, calls_before = log_counts(store)["ok"], model_calls(client)
    frame = rows(1)

    def call(_):
        return len(server.predict(frame))

    with ThreadPoolExecutor(16) as pool:
        served = sum(pool.map(call, range(200)))
    assert served == 200
    assert log_counts(store)["ok"] - before == 200
    # concurrent callers were micro-batched: fewer model calls than requests
    assert model_calls(client) - calls_before < 150


def test_token_is_required_when_set_and_open_hosts_need_one(store):
    with pytest.raises(UsageError, match="--token"):
        serve("churn", settings=store, host="0.0.0.0")
    handle = serve("churn", settings=store, token="s3cret")
    try:
        assert httpx.post(f"{handle.url}/predict", json=records(rows(1))[0]).status_code == 401
        assert httpx.get(f"{handle.url}/health").status_code == 200
        assert len(handle.predict(rows(2))) == 2
    finally:
        handle.stop()


def test_list_and_stop_servers(store):
    handle = serve("churn@v1", settings=store)
    assert handle.port in {h.port for h in list_servers(store)}
    stopped = stop_servers(str(handle.port), settings=store)
    assert [h.port for h in stopped] == [handle.port]
    assert not handle.alive
    assert handle.port not in {h.port for h in list_servers(store)}
    with pytest.raises(UsageError, match="no running server"):
        stop_servers("nosuchmodel", settings=store)


def test_cli_serve_runs_in_the_foreground_and_stops_gracefully(store):
    env = {**os.environ, "NBMLOPS_HOME": str(store.home)}
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "nbmlops"), "serve", "churn", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        before = log_counts(store)["ok"]
        assert httpx.post(f"{url}/predict", json={"records": records(rows(5))}).status_code == 200
        listed = subprocess.run(
            [str(Path(sys.executable).parent / "nbmlops"), "serve", "--list"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert f"{url}" in listed.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"Serving churn v1 at {url}" in out
    assert log_counts(store)["ok"] - before == 5


def test_kill_9_loses_no_answered_prediction(store):
    handle = serve("churn", settings=store)
    answered: list[str] = []
    stop = threading.Event()

    def hammer():
        with httpx.Client(base_url=handle.url, timeout=10) as http:
            while not stop.is_set():
                try:
                    reply = http.post("/predict", json={"records": records(rows(2))})
                except httpx.TransportError:
                    return
                answered.extend(p["id"] for p in reply.json()["predictions"])

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    os.kill(handle.pid, signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert len(answered) > 50
    log = PredictionLog(store.home / "predictions.db")
    logged = set(log.frame("churn")["id"])
    log.close()
    missing = [i for i in answered if i not in logged]
    assert missing == [], f"{len(missing)} answered predictions are not in the log"


def test_two_workers_log_everything_and_metrics_add_up_across_them(store):
    handle = serve("churn", settings=store, workers=2)
    try:
        before = log_counts(store)["ok"]
        body = {"records": records(rows(2))}

        def call(_):
            # a fresh connection each time, so that both workers take requests
            with httpx.Client(base_url=handle.url, timeout=30) as http:
                return http.post("/predict", json=body).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(call, range(60)))
        assert statuses == [200] * 60
        assert log_counts(store)["ok"] - before == 120
        want = (
            'nbmlops_requests_total{endpoint="/predict",route="primary",status="200",version="1"} '
            "60.0"
        )
        for _ in range(6):  # whichever worker answers the scrape
            with httpx.Client(base_url=handle.url, timeout=30) as http:
                assert want in http.get("/metrics").text
    finally:
        handle.stop()


def test_a_model_failure_is_that_callers_500_alone(settings):
    from tests.capture_examples import fails_on_long_tenure
    from tests.served_model import NUMERIC, logistic_pipeline

    df = make_churn(300, seed=0)
    x, y = df.drop(columns="churned"), df["churned"]
    model = logistic_pipeline(NUMERIC).fit(fails_on_long_tenure(x), y)
    nbmlops.package(
        "fragile", model, x, target=y, preprocess=[fails_on_long_tenure], settings=settings
    )
    handle = serve("fragile", settings=settings)
    try:
        good = records(rows(8))
        bad = {**good[0], "tenure_months": 5000}  # passes the schema; the featurizer raises
        alone = [httpx.post(f"{handle.url}/predict", json=r).json() for r in good]
        bodies = [{"records": [r]} for r in good] + [{"records": [bad]}]
        with ThreadPoolExecutor(len(bodies)) as pool:
            for _ in range(5):  # rounds, so that the bad request shares batches
                answers = list(
                    pool.map(lambda b: httpx.post(f"{handle.url}/predict", json=b), bodies)
                )
                for response, want in zip(answers[:-1], alone, strict=True):
                    assert response.status_code == 200, response.text
                    got = response.json()["predictions"][0]
                    assert got["prediction"] == want["predictions"][0]["prediction"]
                failed = answers[-1]
                assert failed.status_code == 500
                body = failed.json()
                assert "internal detail" not in failed.text and "ValueError" not in failed.text
                assert body["request_id"] == failed.headers["x-request-id"]
        server_log = Path(handle.log_file).read_text()
        assert body["request_id"] in server_log and "internal detail" in server_log
    finally:
        handle.stop()
