"""Servers that follow their alias, and a progressive canary that reaches production by itself:
real servers under a continuous concurrent load, with the registry moved by the public API."""

from __future__ import annotations

import argparse
import threading
import time

import httpx
import pytest

import nbmlops
from nbmlops.arguments import serve_arguments
from nbmlops.config import Settings
from nbmlops.datasets import make_churn
from nbmlops.errors import UsageError
from nbmlops.monitoring.monitor import monitor
from nbmlops.registry.history import history
from nbmlops.registry.registry import Registry
from nbmlops.serving.client import ServerList
from nbmlops.serving.process import list_servers, serve
from tests.capture_examples import add_charge_per_call
from tests.served_model import NUMERIC, logistic_pipeline
from tests.serving.test_rollout import logged, requests_body, samples


@pytest.fixture(name="store")
def store_fixture(tmp_path) -> Settings:
    """churn v1 (production), v2 (opposite predictions: which version answered is plain) and
    v3 (v1's model again: a canary that passes every check)."""
    settings = Settings.from_env({"NBMLOPS_HOME": str(tmp_path / ".nbmlops")})
    df = make_churn(600, seed=0)
    x, y = df.drop(columns="churned"), df["churned"]
    first = logistic_pipeline(NUMERIC).fit(add_charge_per_call(x), y)
    second = logistic_pipeline(NUMERIC).fit(add_charge_per_call(x), 1 - y)
    for model in (first, second, first):
        nbmlops.package("churn", model, x, preprocess=[add_charge_per_call], settings=settings)
    Registry(settings).set_alias("churn@v1", "production")
    return settings


class Load:
    """Requests from ``threads`` threads, one after another, until stopped: every answer's
    status and version, in order of arrival."""

    def __init__(self, handle, threads: int = 4) -> None:
        self.bodies = requests_body(200, seed=3)
        self.answers: list[tuple[float, int, str | None]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._send, args=(handle.url, k)) for k in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _send(self, url: str, k: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            i = k
            while not self._stop.is_set():
                response = http.post("/predict", json=self.bodies[i % len(self.bodies)])
                version = response.json().get("version") if response.status_code == 200 else None
                with self._lock:
                    self.answers.append((time.monotonic(), response.status_code, version))
                i += len(self._threads)

    def until(self, version: str, seconds: float = 10.0) -> float:
        """Seconds until every thread's answers come from ``version``; fails after
        ``seconds``."""
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            with self._lock:
                recent = [v for ts, _, v in self.answers[-8:] if ts > started]
            if len(recent) == 8 and set(recent) == {version}:
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"v{version} did not answer within {seconds:g} s")

    def statuses(self) -> set[int]:
        with self._lock:
            return {status for _, status, _ in self.answers}


def metadata(handle) -> dict:
    return httpx.get(handle.url + "/metadata", timeout=30).json()


def test_promote_and_rollback_reach_a_server_on_the_alias_under_load(store):
    handle = serve("churn@production", settings=store)
    try:
        with Load(handle) as load:
            load.until("1")
            nbmlops.promote("churn@v2", settings=store)
            assert load.until("2") < 10
            nbmlops.rollback("churn", settings=store)
            assert load.until("1") < 10
        assert load.statuses() == {200}, "no request failed while the versions switched"
        assert {v for _, _, v in load.answers} == {"1", "2"}
        shown = metadata(handle)
        assert shown["version"] == "1" and shown["aliases"] == ["production"]
        assert [(s["from"], s["to"]) for s in shown["follow"]["switches"]] == [
            ("1", "2"),
            ("2", "1"),
        ]
        assert "churn  v1" in repr(ServerList(list_servers(store)))
        info = samples(handle, "nbmlops_model_info")
        assert {dict(k)["version"]: v for k, v in info.items()} == {"1": 1.0, "2": 0.0}
    finally:
        handle.stop()
    frame = logged(store, None)
    assert set(frame["version"]) == {"1", "2"}, "both versions' answers are in the log"
    assert set(frame["route"]) == {"primary"}


def test_a_version_that_fails_its_check_is_not_served_and_the_old_one_answers(store):
    handle = serve("churn@production", settings=store)
    try:
        registry = Registry(store)
        schema = registry.local_path(registry.get("churn", "2")) / "schema.json"
        schema.write_text(schema.read_text() + " ")  # one byte more than was registered
        nbmlops.promote("churn@v2", settings=store)
        with Load(handle) as load:
            deadline = time.monotonic() + 15
            while not metadata(handle)["follow"]["error"]:
                assert time.monotonic() < deadline, metadata(handle)["follow"]
                time.sleep(0.2)
        assert load.statuses() == {200}
        assert {v for _, _, v in load.answers} == {"1"}
        shown = metadata(handle)
        assert shown["version"] == "1"
        assert "v2" in shown["follow"]["error"] and "schema.json" in shown["follow"]["error"]
        listed = repr(ServerList(list_servers(store)))
        assert "churn  v1" in listed
    finally:
        handle.stop()


def test_a_server_on_a_version_stays_on_it(store):
    handle = serve("churn@v1", settings=store)
    try:
        nbmlops.promote("churn@v2", settings=store)
        time.sleep(3)  # beyond the follow interval
        shown = metadata(handle)
        assert shown["version"] == "1" and shown["follow"] is None
    finally:
        handle.stop()


def test_a_progressive_canary_reaches_production_by_itself(store):
    handle = serve(
        "churn@production",
        canary="churn@v3",
        step_weight=0.2,
        max_weight=0.6,
        promote_after=2,
        analysis_interval=1,
        min_requests=5,
        settings=store,
    )
    weights = []
    try:
        with Load(handle) as load:
            deadline = time.monotonic() + 60
            while metadata(handle)["version"] != "3":
                assert time.monotonic() < deadline, metadata(handle)["analysis"]
                routes = metadata(handle)["routes"]
                weights += [r["weight"] for r in routes if r["route"] == "canary"]
                time.sleep(0.2)
            load.until("3")
        assert load.statuses() == {200}
        assert "churn  v3" in repr(ServerList(list_servers(store)))
        shown = metadata(handle)
        assert [r["route"] for r in shown["routes"]] == ["primary"]
        assert shown["analysis"]["progressive"]["intervals_at_max"] == 2
    finally:
        handle.stop()
    assert weights == sorted(weights) and {0.2, 0.4, 0.6} <= set(weights)
    registry = Registry(store)
    assert registry.alias_version("churn", "production") == "3"
    assert registry.alias_version("churn", "previous") == "1"
    move = [e for e in history("churn", "production", registry) if e.to_version == "3"][-1]
    assert move.reason == "progressive" and "passed 2 intervals" in move.detail
    kinds = [e["kind"] for e in monitor("churn@v3", window="1h", settings=store).events]
    assert kinds.count("step") == 2 and "promote" in kinds and "switch" in kinds


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"step_weight": 0.1}, "--step-weight needs --canary"),
        ({"canary": "churn@v3", "max_weight": 0.5}, "--max-weight needs --step-weight"),
        ({"canary": "churn@v3", "step_weight": 0}, "--step-weight 0 adds nothing"),
        ({"canary": "churn@v3", "step_weight": 1.5}, "--step-weight 1.5 is not a share"),
        ({"canary": "churn@v3", "weight": 0.5, "step_weight": 0.1, "max_weight": 0.3}, "below"),
        ({"canary": "churn@v3", "promote_after": 0}, "--promote-after 0"),
        ({"canary": "churn@v3", "promote_after": 2.5}, "--promote-after 2.5"),
    ],
)
def test_progressive_options_are_checked_before_a_server_starts(store, options, message):
    with pytest.raises(UsageError, match=message):
        serve("churn@production", settings=store, **options)


def test_promote_after_needs_an_alias_to_move(store):
    with pytest.raises(UsageError, match="names no alias"):
        serve("churn@v1", canary="churn@v3", promote_after=2, settings=store)


def test_serve_help_documents_progressive_delivery_and_following():
    text = serve_arguments(argparse.ArgumentParser()).format_help()
    for option in ("--step-weight", "--max-weight", "--promote-after"):
        assert option in text
    assert "follows it" in text
