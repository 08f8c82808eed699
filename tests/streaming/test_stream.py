"""``nbmlops stream`` on a real redis-server: at least once delivered, each answer written once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import numpy as np
import pandas as pd
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

import nbmlops
from nbmlops.datasets import make_churn
from nbmlops.errors import StreamError, UsageError
from nbmlops.predlog.log import PredictionLog
from nbmlops.serving.process import free_port
from nbmlops.streaming.consumer import StreamConsumer, StreamOptions
from tests.churn_store import (
    NAME,
    churn_registry_fixture,  # noqa: F401 - a fixture
    churn_store_fixture,  # noqa: F401 - a fixture
)


@pytest.fixture(name="names")
def names_fixture(redis_url):
    """This test's own source stream and group on the session's Redis."""
    stream = f"orders-{uuid.uuid4().hex[:8]}"
    return {"source": f"{redis_url}?stream={stream}", "stream": stream, "group": "scorers"}


@pytest.fixture(name="client")
def client_fixture(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def frame_of(n: int, seed: int) -> pd.DataFrame:
    return make_churn(n, seed=seed).drop(columns="churned").reset_index(drop=True)


def publish(client, stream: str, frame: pd.DataFrame) -> list[str]:
    """XADD one event per row; the event ids, in order."""
    records = json.loads(frame.to_json(orient="records"))
    pipe = client.pipeline(transaction=False)
    for record in records:
        pipe.xadd(stream, {"payload": json.dumps(record)})
    return pipe.execute()


def entries(client, stream: str) -> list[dict]:
    return [fields for _, fields in client.xrange(stream)]


def wait_for(condition, timeout: float = 60, what: str = "the stream") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def settled(client, stream: str, expected: int) -> bool:
    """Every event ended in the sink or the dead letters."""
    return client.xlen(f"{stream}-scored") + client.xlen(f"{stream}-dead") >= expected


def cli(names, *extra: str, model: str = f"{NAME}@v2") -> subprocess.Popen:
    """``nbmlops stream`` in the foreground of its own process (and process group)."""
    argv = [sys.executable, "-m", "nbmlops.cli", "stream", model, "--source", names["source"]]
    return subprocess.Popen(
        [*argv, "--group", names["group"], *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def stream_rows(settings) -> pd.DataFrame:
    log = PredictionLog(settings.log_uri)
    try:
        rows = log.frame(NAME)
    finally:
        log.close()
    return rows[rows["route"] == "stream"]


def test_ten_thousand_events_are_scored_as_the_model_scores_them_and_bad_ones_dead_lettered(
    churn_registry, names, client
):
    frame = frame_of(10_000, seed=21)
    stream = names["stream"]
    good = json.loads(frame_of(2, seed=2).to_json(orient="records"))
    bad = {
        client.xadd(stream, {"payload": "{not json"}): "not JSON",
        client.xadd(stream, {"body": "{}"}): "no 'payload' field",
        client.xadd(stream, {"payload": json.dumps([good[0]])}): "not one record",
        client.xadd(stream, {"payload": json.dumps({**good[0], "tenure_months": "ten"})}): (
            "field 'tenure_months': expected a number"
        ),
        client.xadd(stream, {"payload": json.dumps({**good[1], "contract": "lifetime"})}): (
            "field 'contract'"
        ),
    }
    handle = nbmlops.stream(f"{NAME}@v2", names["source"], names["group"], batch_size=500)
    try:
        ids = publish(client, stream, frame)
        wait_for(lambda: settled(client, stream, len(ids) + len(bad)), what="10,005 answers")
    finally:
        summary = handle.stop()
    assert "10,000 events scored, 5 dead letters" in summary
    sink = entries(client, f"{stream}-scored")
    assert [e["source_id"] for e in sink] == ids
    expected = nbmlops.load(f"{NAME}@v2").predict(frame)
    assert [int(e["prediction"]) for e in sink] == expected["prediction"].tolist()
    proba = np.array([json.loads(e["proba"])["1"] for e in sink])
    np.testing.assert_allclose(proba, expected["proba_1"], atol=1e-9)
    assert {e["version"] for e in sink} == {"2"}

    dead = {e["source_id"]: e for e in entries(client, f"{stream}-dead")}
    assert dead.keys() == bad.keys()
    for source_id, said in bad.items():
        assert said in dead[source_id]["error"], dead[source_id]
    assert "lifetime" in dead[list(bad)[-1]]["payload"]

    logged = stream_rows(churn_registry.settings)
    scored = logged[logged["status"] == "ok"]
    assert len(scored) == 10_000 and set(scored["id"]) == {e["id"] for e in sink}
    assert (logged["status"] == "rejected").sum() == len(bad)
    assert nbmlops.monitor(f"{NAME}@v2").n_predictions == 10_000
    assert client.xpending(stream, names["group"])["pending"] == 0


def test_a_crash_between_the_write_and_the_acknowledgement_duplicates_nothing(
    churn_registry, names, client
):
    """The window a kill can land in, made certain: a consumer scores, logs and writes a batch
    and dies before acknowledging it; the next one reclaims it."""
    frame = frame_of(40, seed=3)
    ids = publish(client, names["stream"], frame)
    options = StreamOptions(names["source"], names["group"], batch_size=25, claim_idle=0.2)
    first = StreamConsumer(f"{NAME}@v2", options, churn_registry.settings)
    events = first.source.read(25, 1000)
    batch = first.scorer.score(events, first.id_prefix, first.consumer)
    first.log.write(batch.log)
    assert first.sink.write(batch.entries) == 25
    first.close()  # ... and it dies here: 25 events pending, never acknowledged
    time.sleep(0.3)

    second = StreamConsumer(f"{NAME}@v2", options, churn_registry.settings)
    try:
        deadline = time.monotonic() + 30
        while not settled(client, names["stream"], len(ids)) and time.monotonic() < deadline:
            events, reclaimed = second._next_events()
            if events:
                second._handle(events, reclaimed)
    finally:
        second.close()
    assert second.counts["reclaimed"] == 25 and second.counts["scored"] == 40
    sink = entries(client, f"{names['stream']}-scored")
    assert sorted(e["source_id"] for e in sink) == sorted(ids)  # each once
    logged = stream_rows(churn_registry.settings)
    assert len(logged) == 40 and logged["id"].is_unique
    assert client.xpending(names["stream"], names["group"])["pending"] == 0


def test_a_consumer_killed_mid_run_is_replaced_without_loss_or_duplicates_and_sigterm_drains(
    churn_registry, names, client
):
    ids = publish(client, names["stream"], frame_of(6_000, seed=4))
    extra = ("--batch-size", "100", "--claim-idle", "1")
    first = cli(names, *extra, "--consumer", "first")
    try:
        wait_for(lambda: client.xlen(f"{names['stream']}-scored") >= 500, what="500 answers")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    done_before = client.xlen(f"{names['stream']}-scored")
    assert done_before < len(ids), "the first consumer finished before it was killed"
    port = free_port()
    second = cli(names, *extra, "--consumer", "second", "--metrics-port", str(port))
    try:
        wait_for(lambda: settled(client, names["stream"], len(ids)), what="every answer")
        wait_for(lambda: client.xpending(names["stream"], names["group"])["pending"] == 0)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        os.killpg(second.pid, signal.SIGTERM)  # drains: finishes its batch, acks, exits 0
        output, _ = second.communicate(timeout=30)
    assert second.returncode == 0, output
    families = {f.name: f for f in text_string_to_metric_families(metrics.decode())}
    samples = families["nbmlops_stream_events"].samples
    scored = [s.value for s in samples if s.labels == {"outcome": "scored"}]
    assert scored and scored[0] >= len(ids) - done_before  # reclaimed ones scored again
    assert "nbmlops_stream_lag" in families and "nbmlops_stream_batch_size" in families
    assert "events scored" in output and "reclaimed from stopped consumers" in output

    sink = entries(client, f"{names['stream']}-scored")
    assert len(sink) == len(ids) and sorted(e["source_id"] for e in sink) == sorted(ids)
    assert {e["consumer"] for e in sink} == {"first", "second"}
    logged = stream_rows(churn_registry.settings)
    assert len(logged) == len(ids) and logged["id"].is_unique


def test_two_consumers_share_the_work_and_one_stopped_mid_load_drains(
    churn_registry, names, client
):
    handles = [
        nbmlops.stream(f"{NAME}@v2", names["source"], names["group"], batch_size=50)
        for _ in range(2)
    ]
    try:
        ids = publish(client, names["stream"], frame_of(10_000, seed=5))
        wait_for(lambda: client.xlen(f"{names['stream']}-scored") >= 400)
        answered = client.xlen(f"{names['stream']}-scored")
        summary = handles[0].stop()  # SIGTERM under load: it finishes its batch and acks it
        assert answered < len(ids), "the stream was answered before the SIGTERM"
        consumers = client.xinfo_consumers(names["stream"], names["group"])
        assert {c["name"]: c["pending"] for c in consumers}[handles[0].consumer] == 0
        assert "events scored" in summary
        wait_for(lambda: settled(client, names["stream"], len(ids)))
    finally:
        for handle in handles:
            handle.stop()
    sink = entries(client, f"{names['stream']}-scored")
    assert sorted(e["source_id"] for e in sink) == sorted(ids)
    by_consumer = pd.Series([e["consumer"] for e in sink]).value_counts()
    assert set(by_consumer.index) == {h.consumer for h in handles}
    assert by_consumer.min() >= 100, by_consumer.to_dict()


def test_a_consumer_on_an_alias_follows_it(churn_registry, names, client):
    nbmlops.promote(f"{NAME}@v1")
    handle = nbmlops.stream(f"{NAME}@production", names["source"], names["group"])
    try:
        first = publish(client, names["stream"], frame_of(20, seed=7))
        wait_for(lambda: settled(client, names["stream"], 20))
        nbmlops.promote(f"{NAME}@v2")
        probe = frame_of(1, seed=8)

        def follows() -> bool:  # one event at a time until one is answered by v2
            publish(client, names["stream"], probe)
            wait_for(lambda: settled(client, names["stream"], client.xlen(names["stream"])))
            return entries(client, f"{names['stream']}-scored")[-1]["version"] == "2"

        wait_for(follows, timeout=30, what="the consumer to follow the alias")
        after = publish(client, names["stream"], frame_of(20, seed=10))
        wait_for(lambda: settled(client, names["stream"], client.xlen(names["stream"])))
    finally:
        handle.stop()
    sink = entries(client, f"{names['stream']}-scored")
    version_of = {e["source_id"]: e["version"] for e in sink}
    assert [version_of[i] for i in first] == ["1"] * 20
    assert [version_of[i] for i in after] == ["2"] * 20


def test_bad_addresses_are_refused_with_what_to_do(churn_registry, names):
    with pytest.raises(UsageError, match=r"redis://HOST:PORT/DB\?stream=NAME"):
        nbmlops.stream(NAME + "@v2", "redis://127.0.0.1:6379/0", "scorers")
    port = free_port()  # nothing listens there
    with pytest.raises(StreamError, match=f"cannot reach Redis at redis://127.0.0.1:{port}"):
        nbmlops.stream(NAME + "@v2", f"redis://127.0.0.1:{port}/0?stream=x", "scorers")


def test_mlops_stream_runs_in_the_background_of_a_kernel(churn_registry, names, client, run_cells):
    ids = publish(client, names["stream"], frame_of(300, seed=9))
    sink = f"{names['stream']}-scored"
    nb, error = run_cells(
        "%load_ext nbmlops",
        f"handle = %mlops_stream {NAME}@v2 --source {names['source']} --group {names['group']}\n"
        "handle",
        "import redis, time\n"
        f"client = redis.Redis.from_url({names['source'].split('?')[0]!r})\n"
        f"while client.xlen({sink!r}) < {len(ids)}:\n"
        "    time.sleep(0.1)",
        "%mlops_stream --list",
        f"%mlops_stream --stop {NAME}",
        f"%mlops_stream {NAME}@v2 --source redis://127.0.0.1:1/0 --group g",
        expect_error=True,
    )
    shown = [cell.get("outputs", []) for cell in nb.cells]
    assert shown[1][0]["data"]["text/plain"].startswith(f"Streaming {NAME}@v2 (consuming)")
    assert "<b>Streaming" in shown[1][0]["data"]["text/html"]
    assert f"group {names['group']}" in shown[3][0]["text"]
    assert "stopped: churn v2" in shown[4][0]["text"] and "300 events scored" in shown[4][0]["text"]
    assert "redis://HOST:PORT/DB?stream=NAME" in str(error)
    assert len(entries(client, sink)) == len(ids)
