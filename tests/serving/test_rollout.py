"""Rollout in a real server: a canary by weight, a sticky A/B test and a shadow, under a bounded
concurrent load, with the route of every logged prediction, ``/metrics`` and the monitor."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import nbmlops
from nbmlops.arguments import serve_arguments, serve_options
from nbmlops.artifact.frames import to_records
from nbmlops.config import Settings
from nbmlops.datasets import make_churn
from nbmlops.errors import UsageError
from nbmlops.monitoring.monitor import monitor
from nbmlops.predlog.log import PredictionLog
from nbmlops.serving.client import ServerList
from nbmlops.serving.process import list_servers, serve
from tests.capture_examples import add_charge_per_call
from tests.served_model import NUMERIC, logistic_pipeline

#: support_calls at or above this make the faulty versions raise (training never goes above 10)
FAULTY_CALLS = 100


def raise_on_many_calls(frame):
    """A preprocessing step with a bug: it raises on some rows that validation accepts."""
    if (frame["support_calls"] >= 100).any():
        raise ValueError("support_calls beyond what this step handles")
    return frame


def sleep_a_while(frame):
    """A slow preprocessing step: 0.2 s a call."""
    import time

    time.sleep(0.2)
    return frame


@pytest.fixture(scope="module", name="store")
def store_fixture(tmp_path_factory) -> Settings:
    """churn v1 (the primary), v2 (other predictions), v3 (raises on some rows), v4 (slow),
    v5 (never saw region "west": it refuses records the primary accepts)."""
    home = tmp_path_factory.mktemp("rollout") / ".nbmlops"
    settings = Settings.from_env({"NBMLOPS_HOME": str(home)})
    df = make_churn(600, seed=0)
    x, y = df.drop(columns="churned"), df["churned"]
    first = logistic_pipeline(NUMERIC).fit(add_charge_per_call(x), y)
    # v2 learns the opposite labels: it disagrees with v1 on (nearly) every record
    second = logistic_pipeline(NUMERIC).fit(add_charge_per_call(x), 1 - y)
    steps = {
        "1": (first, [add_charge_per_call]),
        "2": (second, [add_charge_per_call]),
        "3": (first, [add_charge_per_call, raise_on_many_calls]),
        "4": (first, [add_charge_per_call, sleep_a_while]),
    }
    for model, preprocess in steps.values():
        nbmlops.package("churn", model, x, target=y, preprocess=preprocess, settings=settings)
    east = x["region"] != "west"
    nbmlops.package(
        "churn", first, x[east], target=y[east], preprocess=[add_charge_per_call], settings=settings
    )
    return settings


def requests_body(n: int, seed: int, faulty_every: int = 0) -> list[dict]:
    """``n`` one-record bodies; every ``faulty_every``-th one makes v3 raise."""
    frame = make_churn(n, seed=seed).drop(columns="churned")
    bodies = []
    for i, record in enumerate(to_records(frame)):
        if faulty_every and i % faulty_every == 0:
            record["support_calls"] = FAULTY_CALLS + i
        bodies.append({"records": [record]})
    return bodies


def load(handle, bodies, headers=None, threads=8) -> list[tuple[int, dict, float]]:
    """Send every body from ``threads`` threads: (status, answer, seconds) per request."""

    def send(chunk):
        out = []
        with httpx.Client(base_url=handle.url, timeout=30) as http:
            for i, body in chunk:
                started = time.perf_counter()
                response = http.post("/predict", json=body, headers=headers(i) if headers else None)
                out.append(
                    (i, response.status_code, response.json(), time.perf_counter() - started)
                )
        return out

    chunks = [list(enumerate(bodies))[k::threads] for k in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        answers = sorted(a for part in pool.map(send, chunks) for a in part)
    return [(status, answer, seconds) for _, status, answer, seconds in answers]


def logged(store, ids) -> dict:
    log = PredictionLog(store.home / "predictions.db")
    try:
        frame = log.frame("churn")
    finally:
        log.close()
    return frame.set_index("id").loc[list(ids)] if ids is not None else frame


def samples(handle, name: str) -> dict[tuple, float]:
    """One metric's samples from ``/metrics``, read with prometheus_client's parser."""
    text = httpx.get(handle.url + "/metrics", timeout=30).text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def by_route(series: dict, **fixed) -> dict[tuple[str, str], float]:
    """Sum a metric's samples by (route, version), over those matching ``fixed`` labels."""
    totals: dict[tuple[str, str], float] = {}
    for labels, value in series.items():
        labels = dict(labels)
        if all(labels.get(k) == v for k, v in fixed.items()):
            key = (labels["route"], labels["version"])
            totals[key] = totals.get(key, 0.0) + value
    return totals


def test_a_ten_percent_canary_answers_about_a_tenth_and_each_answer_is_logged_by_route(store):
    handle = serve("churn@v1", canary="churn@v2", weight=0.1, settings=store)
    try:
        n = 400
        answers = load(handle, requests_body(n, seed=1))
        assert [status for status, _, _ in answers] == [200] * n
        versions = [answer["version"] for _, answer, _ in answers]
        canary = versions.count("2")
        # binomial(400, 0.1): mean 40, sd 6; these bounds fail once in ~10^5 runs
        assert 13 <= canary <= 67, canary
        assert versions.count("1") == n - canary
        ids = [answer["predictions"][0]["id"] for _, answer, _ in answers]
        rows = logged(store, ids)
        expected_route = ["canary" if v == "2" else "primary" for v in versions]
        assert list(rows["route"]) == expected_route
        assert list(rows["version"]) == versions
        requests = by_route(samples(handle, "nbmlops_requests_total"), endpoint="/predict")
        assert requests == {("primary", "1"): n - canary, ("canary", "2"): canary}
        weights = by_route(samples(handle, "nbmlops_route_weight"))
        assert weights == {("primary", "1"): pytest.approx(0.9), ("canary", "2"): 0.1}
        metadata = httpx.get(handle.url + "/metadata", timeout=30).json()
        assert [(r["route"], r["version"]) for r in metadata["routes"]] == [
            ("primary", "1"),
            ("canary", "2"),
        ]
        assert "routes: primary v1 90% · canary v2 10%" in repr(handle)
        listed = repr(ServerList(list_servers(store)))
        assert "primary v1 90%" in listed and "canary v2 10%" in listed
    finally:
        handle.stop()


def test_sticky_ab_sends_each_key_to_one_version_every_time(store):
    # the options as %mlops_serve and nbmlops serve parse them
    line = "churn@v1 --canary churn@v2 --weight 0.5 --sticky X-User-Id".split()
    args = serve_arguments(argparse.ArgumentParser()).parse_args(line)
    handle = serve(args.model, settings=store, **serve_options(args))
    try:
        bodies = requests_body(200, seed=2)
        answers = load(handle, bodies, headers=lambda i: {"X-User-Id": f"user-{i % 25}"})
        assert {status for status, _, _ in answers} == {200}
        seen: dict[str, set] = {}
        for i, (_, answer, _) in enumerate(answers):
            seen.setdefault(f"user-{i % 25}", set()).add(answer["version"])
        assert all(len(versions) == 1 for versions in seen.values()), seen
        # 25 keys at 0.5: both versions get some (all on one side: once in 2^24 runs)
        assert set.union(*seen.values()) == {"1", "2"}
        # without the header, each request is assigned on its own: both versions answer
        unkeyed = load(handle, bodies[:60])
        assert {answer["version"] for _, answer, _ in unkeyed} == {"1", "2"}
    finally:
        handle.stop()


def test_a_canary_that_raises_never_fails_a_caller_and_its_failures_are_counted(store):
    handle = serve("churn@v1", canary="churn@v3", weight=0.5, settings=store)
    try:
        n = 300
        bodies = requests_body(n, seed=3, faulty_every=3)
        answers = load(handle, bodies)
        assert [status for status, _, _ in answers] == [200] * n
        faulty = [i for i in range(n) if i % 3 == 0]
        # v3 raises on every faulty record: those are all answered by the primary
        assert {answers[i][1]["version"] for i in faulty} == {"1"}
        log = logged(store, None)
        failed = log[(log["route"] == "canary") & (log["status"] == "error")]
        assert len(failed) > 0 and set(failed["version"]) == {"3"}
        counted = by_route(samples(handle, "nbmlops_route_failures_total"), reason="model")
        assert counted == {("canary", "3"): len(failed)}
        # the rest of the canary's share is still its own
        assert {a["version"] for i, (_, a, _) in enumerate(answers) if i % 3} == {"1", "3"}
    finally:
        handle.stop()
    report = monitor("churn@v1", window="1h", settings=store)
    canary = next(r for r in report.to_dict()["routes"] if r["version"] == "3")
    v3 = log[(log["route"] == "canary") & (log["version"] == "3")]
    assert canary["requests"] == len(v3)
    assert canary["error_rate"] == pytest.approx(len(failed) / len(v3))
    assert "canary v3" in repr(report) and "canary v3" in report.to_html()


def median_latency(answers) -> float:
    return statistics.median(seconds for _, _, seconds in answers)


def test_a_failing_or_slow_shadow_never_touches_responses(store):
    bodies = requests_body(120, seed=4, faulty_every=2)
    plain = serve("churn@v1", settings=store)
    try:
        load(plain, bodies[:20])  # warm up
        baseline = median_latency(load(plain, bodies, threads=4))
    finally:
        plain.stop()
    for shadow in ("churn@v3", "churn@v4"):  # raises on half the records / sleeps 0.2 s a call
        handle = serve("churn@v1", shadow=shadow, settings=store)
        try:
            load(handle, bodies[:20])
            answers = load(handle, bodies, threads=4)
            assert [status for status, _, _ in answers] == [200] * len(bodies)
            assert {answer["version"] for _, answer, _ in answers} == {"1"}
            # a shadow on the response path would add 0.2 s (v4) to every answer
            assert median_latency(answers) < 3 * baseline + 0.05, (shadow, baseline)
            # the shadow scores after the answers went: wait for it to catch up
            faulty = sum(b["records"][0]["support_calls"] >= FAULTY_CALLS for b in bodies) + sum(
                b["records"][0]["support_calls"] >= FAULTY_CALLS for b in bodies[:20]
            )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                failures = by_route(samples(handle, "nbmlops_route_failures_total"))
                if shadow != "churn@v3" or failures.get(("shadow", "3")) == faulty:
                    break
                time.sleep(0.1)
        finally:
            handle.stop()
        rows = logged(store, None)
        rows = rows[(rows["route"] == "shadow") & (rows["version"] == shadow[-1])]
        if shadow == "churn@v3":  # it did fail, on the shadow's side only
            assert (rows["status"] == "error").sum() > 0
            assert failures[("shadow", "3")] == (rows["status"] == "error").sum() == faulty
        else:  # it was slow, on the shadow's side only
            assert rows["latency_ms"].median() >= 200


def test_the_monitor_shows_primary_and_shadow_side_by_side_with_their_disagreement(store):
    before = time.time()
    handle = serve("churn@v1", shadow="churn@v2", shadow_fraction=1.0, settings=store)
    try:
        answers = load(handle, requests_body(100, seed=5))
        assert {answer["version"] for _, answer, _ in answers} == {"1"}
        requests = by_route(samples(handle, "nbmlops_requests_total"), endpoint="/predict")
        assert requests[("primary", "1")] == 100
    finally:
        handle.stop()  # stopping lets the shadow finish what it is scoring
    log = logged(store, None)
    log = log[log["ts"] >= before]
    shadow = log[log["route"] == "shadow"]
    assert len(shadow) == 100 and set(shadow["version"]) == {"2"}
    primary_ids = {a["predictions"][0]["id"] for _, a, _ in answers}
    linked = {json.loads(o)["primary_id"] for o in shadow["outputs"]}
    assert linked == primary_ids
    report = monitor("churn@v1", window="1h", settings=store).to_dict()
    routes = {(r["route"], r["version"]): r for r in report["routes"]}
    assert routes[("shadow", "2")]["requests"] == 100
    assert routes[("primary", "1")]["requests"] >= 100
    expected = {a["predictions"][0]["id"]: a["predictions"][0]["prediction"] for _, a, _ in answers}
    shadow_predictions = [json.loads(o) for o in shadow["outputs"]]
    differ = sum(o["prediction"] != expected[o["primary_id"]] for o in shadow_predictions)
    disagreement = routes[("shadow", "2")]["disagreement"]
    assert disagreement == {"rate": round(differ / 100, 4), "compared": 100}
    assert disagreement["rate"] > 0.5  # v2 learnt the opposite labels
    text = repr(monitor("churn@v1", window="1h", settings=store))
    assert "shadow v2" in text and "disagreement with primary" in text


def test_a_canary_refusing_input_the_primary_accepts_is_answered_by_the_primary(store):
    handle = serve("churn@v1", canary="churn@v5", weight=1.0, settings=store)
    try:
        bodies = requests_body(40, seed=6)
        for body in bodies[::2]:
            body["records"][0]["region"] = "west"
        answers = load(handle, bodies)
        assert [status for status, _, _ in answers] == [200] * 40
        west = [b["records"][0]["region"] == "west" for b in bodies]
        assert [a["version"] for _, a, _ in answers] == ["1" if w else "5" for w in west]
        counted = by_route(samples(handle, "nbmlops_route_failures_total"), reason="rejected")
        assert counted == {("canary", "5"): sum(west)}
        # a record both refuse is the caller's error, as without a canary
        bodies[0]["records"][0]["region"] = "nowhere"
        refused = httpx.post(handle.url + "/predict", json=bodies[0], timeout=30)
        assert refused.status_code == 422
        counted = by_route(samples(handle, "nbmlops_route_failures_total"), reason="rejected")
        assert counted == {("canary", "5"): sum(west)}
    finally:
        handle.stop()
    log = logged(store, None)
    refusals = log[(log["route"] == "canary") & (log["status"] == "rejected")]
    assert len(refusals) == sum(west) and set(refusals["version"]) == {"5"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"canary": "churn@v2", "weight": 1.5}, "--weight 1.5"),
        ({"shadow": "churn@v2", "shadow_fraction": -0.1}, "--shadow-fraction -0.1"),
        ({"weight": 0.2}, "--weight needs --canary"),
        ({"canary": "churn@v2", "shadow": "churn@v3"}, "one at a time"),
        ({"canary": "churn@v1"}, "the version being served"),
    ],
)
def test_rollout_options_are_checked_before_a_server_starts(store, options, message):
    with pytest.raises(UsageError, match=message):
        serve("churn@v1", settings=store, **options)


def test_serve_help_documents_every_rollout_option():
    text = serve_arguments(argparse.ArgumentParser()).format_help()
    for option in ("--canary", "--weight", "--sticky", "--shadow", "--shadow-fraction"):
        assert option in text
