"""Automatic canary analysis in a real server: a canary that fails or is slow over an interval is
rolled back (weight 0) without a failed request, and the monitor of both versions says so; an
interval with too few canary requests, or a healthy canary, changes nothing."""

from __future__ import annotations

import argparse
import time

import httpx
import pytest

from nbmlops.arguments import serve_arguments, serve_options
from nbmlops.errors import UsageError
from nbmlops.monitoring.monitor import monitor
from nbmlops.serving.process import serve
from tests.serving.test_rollout import (  # the store: churn v1 .. v5, see there
    by_route,
    load,
    requests_body,
    samples,
    store_fixture,  # noqa: F401 - the module's ``store`` fixture
)


def large_bodies(n: int, seed: int, size: int = 50) -> list[dict]:
    """``n`` bodies of ``size`` records each: the drift test needs 1,000 predictions a side."""
    records = [b["records"][0] for b in requests_body(n * size, seed=seed)]
    return [{"records": records[i : i + size]} for i in range(0, len(records), size)]


def metadata(handle) -> dict:
    return httpx.get(handle.url + "/metadata", timeout=30).json()


def canary_weight(handle) -> float:
    return next(r["weight"] for r in metadata(handle)["routes"] if r["route"] == "canary")


def load_until_rolled_back(handle, bodies, seconds: float = 30.0) -> list:
    """Send ``bodies`` again and again until the canary's weight is 0 (or ``seconds`` pass)."""
    answers = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answers += load(handle, bodies)
        if canary_weight(handle) == 0.0:
            break
    return answers


def rollback_alerts(store, address: str) -> list[str]:
    report = monitor(address, window="1h", settings=store)
    return [a.message for a in report.alerts if a.kind == "rollback"]


def test_a_canary_that_raises_is_rolled_back_and_no_caller_sees_an_error(store):
    line = "churn@v1 --canary churn@v3 --weight 0.5 --analysis-interval 1 --min-requests 5".split()
    args = serve_arguments(argparse.ArgumentParser()).parse_args(line)
    handle = serve(args.model, settings=store, **serve_options(args))
    try:
        answers = load_until_rolled_back(handle, requests_body(60, seed=11, faulty_every=3))
        assert {status for status, _, _ in answers} == {200}
        shown = metadata(handle)
        assert [r["weight"] for r in shown["routes"]] == [1.0, 0.0]
        assert "canary v3 rolled back: error rate" in shown["analysis"]["rollback"]
        weights = by_route(samples(handle, "nbmlops_route_weight"))
        assert weights == {("primary", "1"): 1.0, ("canary", "3"): 0.0}
        # from now on the primary answers everything, the faulty records too
        after = load(handle, requests_body(30, seed=12, faulty_every=3))
        assert {(status, answer["version"]) for status, answer, _ in after} == {(200, "1")}
    finally:
        handle.stop()
    for address in ("churn@v1", "churn@v3"):
        reasons = rollback_alerts(store, address)
        assert any("canary v3 rolled back: error rate" in r for r in reasons), (address, reasons)
        report = monitor(address, window="1h", settings=store)
        assert report.status == "alert"
        assert any(
            e["kind"] == "rollback" and e["version"] == "3" for e in report.to_dict()["events"]
        )
        assert "rollback: canary v3 rolled back" in repr(report)


def test_a_canary_refusing_input_the_primary_accepts_is_rolled_back(store):
    handle = serve(
        "churn@v1",
        canary="churn@v5",  # never saw region "west": it refuses it, the primary does not
        weight=1.0,
        analysis_interval=1,
        min_requests=5,
        settings=store,
    )
    try:
        bodies = requests_body(40, seed=16)
        for body in bodies[::4]:
            body["records"][0]["region"] = "west"
        answers = load_until_rolled_back(handle, bodies)
        assert {status for status, _, _ in answers} == {200}
        assert canary_weight(handle) == 0.0
        assert "canary v5 rolled back: error rate" in metadata(handle)["analysis"]["rollback"]
    finally:
        handle.stop()
    assert any("canary v5" in r for r in rollback_alerts(store, "churn@v5"))


def test_a_slow_canary_is_rolled_back_on_latency(store):
    handle = serve(
        "churn@v1",
        canary="churn@v4",  # sleeps 0.2 s in its preprocessing
        weight=0.5,
        analysis_interval=1,
        min_requests=5,
        max_p99_ms=50,
        settings=store,
    )
    try:
        answers = load_until_rolled_back(handle, requests_body(40, seed=13))
        assert {status for status, _, _ in answers} == {200}
        assert canary_weight(handle) == 0.0
        reason = metadata(handle)["analysis"]["rollback"]
        assert "canary v4 rolled back: p99 latency" in reason and "--max-p99-ms 50" in reason
    finally:
        handle.stop()
    assert any("p99 latency" in r for r in rollback_alerts(store, "churn@v4"))
    assert any("canary v4" in r for r in rollback_alerts(store, "churn@v1"))


def test_an_interval_with_too_few_canary_requests_changes_nothing(store):
    # v3 fails a third of the records: with enough requests it would be rolled back
    handle = serve(
        "churn@v1",
        canary="churn@v3",
        weight=0.5,
        analysis_interval=1,
        min_requests=10_000,
        settings=store,
    )
    try:
        answers = load(handle, requests_body(40, seed=14, faulty_every=3))
        assert {status for status, _, _ in answers} == {200}
        deadline = time.monotonic() + 20
        while metadata(handle)["analysis"]["intervals"]["inconclusive"] < 2:
            assert time.monotonic() < deadline, metadata(handle)["analysis"]
            time.sleep(0.2)
        analysis = metadata(handle)["analysis"]
        assert analysis["intervals"]["breached"] == 0 and analysis["rollback"] is None
        assert analysis["last"]["outcome"] == "inconclusive"
        assert "fewer than --min-requests 10000" in analysis["last"]["reason"]
        assert canary_weight(handle) == 0.5
        assert by_route(samples(handle, "nbmlops_route_weight"))[("canary", "3")] == 0.5
    finally:
        handle.stop()


def test_a_canary_whose_predictions_drift_from_the_primarys_is_rolled_back(store):
    handle = serve(
        "churn@v1",
        canary="churn@v2",  # learnt the opposite labels
        weight=0.5,
        analysis_interval=2,
        min_requests=5,
        settings=store,
    )
    try:
        answers = load_until_rolled_back(handle, large_bodies(60, seed=17))
        assert {status for status, _, _ in answers} == {200}
        assert canary_weight(handle) == 0.0
        reason = metadata(handle)["analysis"]["rollback"]
        assert "canary v2 rolled back: prediction drift against the primary" in reason
    finally:
        handle.stop()
    assert any("prediction drift" in r for r in rollback_alerts(store, "churn@v1"))


def test_a_healthy_canary_keeps_its_weight(store):
    rollbacks_before = len(rollback_alerts(store, "churn@v3"))
    handle = serve(
        "churn@v1",
        canary="churn@v3",  # the primary's model; it raises only on records not sent here
        weight=0.5,
        analysis_interval=2,
        min_requests=5,
        settings=store,
    )
    try:
        judged = []  # the intervals whose predictions were tested for drift
        deadline = time.monotonic() + 60
        while metadata(handle)["analysis"]["intervals"]["passed"] < 2 or not judged:
            assert time.monotonic() < deadline, metadata(handle)["analysis"]
            answers = load(handle, large_bodies(60, seed=15))
            assert {status for status, _, _ in answers} == {200}
            last = metadata(handle)["analysis"]["last"]
            if last and "prediction_drift" in last["canary"]:
                judged.append(last["canary"]["prediction_drift"])
        analysis = metadata(handle)["analysis"]
        assert analysis["intervals"]["breached"] == 0 and analysis["rollback"] is None
        assert not any(d["drifted"] for d in judged)
        assert canary_weight(handle) == 0.5
    finally:
        handle.stop()
    assert len(rollback_alerts(store, "churn@v3")) == rollbacks_before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"canary": "churn@v2", "analysis_interval": 0}, "--analysis-interval 0"),
        ({"canary": "churn@v2", "max_error_rate": 1.5}, "--max-error-rate 1.5"),
        ({"canary": "churn@v2", "max_p99_ms": -5}, "--max-p99-ms -5"),
        ({"canary": "churn@v2", "min_requests": 0}, "--min-requests 0"),
        ({"canary": "churn@v2", "max_prediction_drift": 0}, "--max-prediction-drift 0"),
        ({"max_p99_ms": 50}, "--max-p99-ms needs --canary"),
    ],
)
def test_analysis_options_are_checked_before_a_server_starts(store, options, message):
    with pytest.raises(UsageError, match=message):
        serve("churn@v1", settings=store, **options)


def test_serve_help_documents_every_analysis_option():
    text = serve_arguments(argparse.ArgumentParser()).format_help()
    options = ("--analysis-interval", "--max-error-rate", "--max-p99-ms", "--min-requests")
    for option in (*options, "--max-prediction-drift"):
        assert option in text
