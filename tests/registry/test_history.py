"""Alias history: every alias move recorded in the registry itself (SPEC section 9)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from mlflow.tracking import MlflowClient

import nbmlops
from nbmlops.cli import main
from nbmlops.config import Settings
from nbmlops.datasets import make_churn
from nbmlops.errors import RegistryError, UsageError
from nbmlops.registry.history import PREFIX, AliasEvent, history
from nbmlops.registry.registry import Registry
from tests.churn_store import (
    NAME,
    churn_registry_fixture,  # noqa: F401 - a fixture
    churn_store_fixture,  # noqa: F401 - a fixture
)
from tests.served_model import logistic_pipeline


def moves(events: list[AliasEvent]) -> list[tuple]:
    return [(e.alias, e.from_version, e.to_version, e.reason) for e in events]


@pytest.fixture(autouse=True)
def user(monkeypatch) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    return "alice"


def test_promote_rollback_and_archive_are_recorded_oldest_first(churn_registry):
    registry = Registry()
    nbmlops.promote(f"{NAME}@v1")
    nbmlops.promote(f"{NAME}@v2")
    nbmlops.promote(f"{NAME}@v2")  # not a move: nothing recorded
    nbmlops.rollback(NAME)
    registry.set_alias(f"{NAME}@v3", "staging")
    registry.archive(f"{NAME}@v3")

    events = history(NAME)
    assert moves(events) == [
        ("production", None, "1", "promote"),
        ("previous", None, "1", "promote"),
        ("production", "1", "2", "promote"),
        ("production", "2", "1", "rollback"),
        ("previous", "1", "2", "rollback"),
        ("staging", None, "3", "promote"),
        ("staging", "3", None, "archive"),
    ]
    assert {e.user for e in events} == {"alice"}
    assert [e.time for e in events] == sorted(e.time for e in events)
    assert moves(history(NAME, "production")) == [
        ("production", None, "1", "promote"),
        ("production", "1", "2", "promote"),
        ("production", "2", "1", "rollback"),
    ]
    # The events are the registered model's own tags: any client of the store reads them.
    tags = MlflowClient(tracking_uri=registry.settings.tracking_uri).get_registered_model(NAME).tags
    recorded = [json.loads(v) for k, v in sorted(tags.items()) if k.startswith(PREFIX)]
    assert [AliasEvent.from_dict(d) for d in recorded] == events
    assert all(len(v) < 5000 for v in tags.values())  # the SQL stores' column width


def test_the_login_name_is_the_user_without_a_tracking_username(churn_registry, monkeypatch):
    import getpass

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    nbmlops.promote(f"{NAME}@v1")
    assert [e.user for e in history(NAME)] == [getpass.getuser()]


def package(name: str, seed: int, **options) -> None:
    df = make_churn(200, seed=seed)
    x, y = df.drop(columns=["churned", "payment_method"]), df["churned"]
    model = logistic_pipeline(["tenure_months", "monthly_charges", "support_calls"]).fit(x, y)
    nbmlops.package(name, model, x, target=y, **options)


def test_package_with_an_alias_records_the_move_as_package(churn_registry):
    package(NAME, 1, alias="staging")
    assert moves(history(NAME)) == [("staging", None, "4", "package")]


def test_a_retraining_job_records_its_candidate_and_promotion_as_job(settings):
    from tests.jobs.test_retrain import retrain

    assert retrain("--promote", "production") == 0
    events = history("churn")
    assert moves(events) == [
        ("candidate", None, "1", "job"),
        ("production", None, "1", "job"),
    ]
    assert events[0].detail == events[1].detail and events[0].detail.startswith("job ")


def test_a_custom_reason_and_detail_are_recorded_and_a_wrong_reason_is_refused(churn_registry):
    registry = Registry()
    registry.set_alias(f"{NAME}@v1", "production")
    registry.set_alias(f"{NAME}@v2", "production", reason="progressive", detail="3 intervals")
    (event,) = history(NAME, "production")[1:]
    assert (event.reason, event.detail) == ("progressive", "3 intervals")
    with pytest.raises(UsageError, match="'later' is not one of promote, rollback"):
        registry.set_alias(f"{NAME}@v3", "production", reason="later")
    assert registry.alias_version(NAME, "production") == "2"  # refused before moving


def test_a_tag_that_is_not_an_event_is_an_error_naming_it(churn_registry):
    registry = Registry()
    nbmlops.promote(f"{NAME}@v1")
    registry.client.set_registered_model_tag(NAME, f"{PREFIX}0-bad", "not json")
    with pytest.raises(RegistryError) as info:
        history(NAME)
    assert f"{PREFIX}0-bad" in str(info.value) and "delete that tag" in str(info.value)


# -- two writers on one machine ----------------------------------------------------------------

_PROMOTER = """
import sys
from nbmlops.registry.registry import Registry, alias_lock

name, times = sys.argv[1], int(sys.argv[2])
registry = Registry()
for _ in range(times):
    with alias_lock(registry.settings, name):
        previous = registry.alias_version(name, "previous")
        registry.set_alias(f"{name}@v{previous}", "production")
"""


def test_two_processes_moving_aliases_leave_one_unbroken_chain(churn_registry):
    nbmlops.promote(f"{NAME}@v1")
    nbmlops.promote(f"{NAME}@v2")
    times = 6
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROMOTER, NAME, str(times)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    results = [job.communicate(timeout=300) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], [err[-2000:] for _, err in results]
    production = history(NAME, "production")
    assert len(production) == 2 + 2 * times  # no event lost or overwritten
    for before, after in zip(production, production[1:], strict=False):
        assert after.from_version == before.to_version  # each move starts where the last ended
    assert production[-1].to_version == Registry().alias_version(NAME, "production")


# -- the command -------------------------------------------------------------------------------


def test_history_command_prints_a_table_and_json(churn_registry, capsys):
    nbmlops.promote(f"{NAME}@v1")
    nbmlops.promote(f"{NAME}@v2")
    assert main(["models", "rollback", NAME]) == 0
    capsys.readouterr()

    assert main(["models", "history", NAME, "--alias", "production"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["time", "alias", "from", "->", "to", "user", "reason"]
    assert [row.split()[1:] for row in rows] == [
        ["production", "-", "->", "v1", "alice", "promote"],
        ["production", "v1", "->", "v2", "alice", "promote"],
        ["production", "v2", "->", "v1", "alice", "rollback"],
    ]

    assert main(["models", "history", NAME, "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert len(events) == 5
    assert events[-1] == {
        "format": 1,
        "time": events[-1]["time"],
        "alias": "previous",
        "from": "1",
        "to": "2",
        "user": "alice",
        "reason": "rollback",
        "detail": "",
    }


def test_history_command_without_moves_and_for_an_unknown_model(churn_registry, capsys):
    assert main(["models", "history", NAME]) == 0
    assert capsys.readouterr().out == f"no alias moves recorded for {NAME}\n"
    assert main(["models", "history", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nbmlops: no model named 'nosuch'") and err.count("\n") == 1


# -- a shared tracking server ------------------------------------------------------------------


def test_history_is_shared_through_a_tracking_server(team_tracking_uri, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_tracking_uri)
    name = f"churn-{uuid.uuid4().hex[:8]}"  # the server is shared by the session's tests
    package(name, 1)
    package(name, 2)
    nbmlops.promote(f"{name}@v1")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    nbmlops.promote(f"{name}@v2")
    # Another machine: its own NBMLOPS_HOME, the same server.
    env = {"MLFLOW_TRACKING_URI": team_tracking_uri, "NBMLOPS_HOME": str(tmp_path / "other")}
    other = Registry(Settings.from_env(env))
    assert [(e.user, e.move) for e in history(name, "production", other)] == [
        ("alice", "- -> v1"),
        ("bob", "v1 -> v2"),
    ]


# -- the monitor names who was production ------------------------------------------------------


def test_the_monitor_report_names_the_versions_that_held_production(churn_registry):
    from datetime import UTC, datetime, timedelta

    nbmlops.promote(f"{NAME}@v1")
    nbmlops.promote(f"{NAME}@v2")
    first, second = (e.time for e in history(NAME, "production"))
    moved = datetime.fromisoformat(second.replace("Z", "+00:00"))

    report = nbmlops.monitor(NAME)
    assert report.to_dict()["production_versions"] == [
        {"version": "1", "from": first[:19] + "+00:00", "until": second[:19] + "+00:00"},
        {"version": "2", "from": second[:19] + "+00:00", "until": None},
    ]
    assert f"production over the window: v1 ({first[:19]}+00:00 .. " in repr(report)
    assert "production over the window" in report.to_html()

    # A window that starts after the move: only v2, from the window's start.
    since = (moved + timedelta(seconds=1)).isoformat(timespec="seconds")
    later = nbmlops.monitor(NAME, since=since, now=moved + timedelta(seconds=5))
    assert later.to_dict()["production_versions"] == [
        {"version": "2", "from": since, "until": None}
    ]
    # A window that ended before the first promotion: nobody held production in it.
    before = nbmlops.monitor(NAME, now=datetime(2020, 1, 1, tzinfo=UTC))
    assert before.production_versions == ()


def test_a_model_loaded_from_a_folder_is_monitored_without_the_registry(churn_store, settings):
    store = Registry(churn_store.settings)
    folder = store.local_path(store.get(NAME, "1"))
    report = nbmlops.monitor(nbmlops.load(folder))  # this test's store has no model at all
    assert report.model == NAME and report.production_versions == ()
    assert "production over the window" not in repr(report)
