"""Drift engine and monitor reports over a real prediction log and a real registry."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

import nbmlops
from nbmlops.artifact.nbmlops_loader_v1 import predict_frame
from nbmlops.artifact.profile import build_profile
from nbmlops.cli import main
from nbmlops.datasets import make_churn
from nbmlops.monitoring.drift import benjamini_hochberg, detect_drift
from nbmlops.monitoring.monitor import monitor, parse_duration
from nbmlops.predlog.log import PredictionLog
from nbmlops.predlog.records import ERROR, OK, REJECTED, LogRecord
from tests.served_model import logistic_pipeline

NUMERIC = ["tenure_months", "monthly_charges", "support_calls"]


def drifted(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Shift monthly_charges by one standard deviation, move contract shares, add a region."""
    out = frame.copy()
    out["monthly_charges"] = out["monthly_charges"] + 20
    n = len(out)
    out["contract"] = pd.Categorical(
        rng.choice(["month-to-month", "one-year", "two-year"], n, p=[0.2, 0.3, 0.5]),
        categories=out["contract"].cat.categories,
    )
    out["region"] = np.where(rng.random(n) < 0.3, "atlantis", out["region"])
    return out


@pytest.fixture(scope="module")
def reference():
    train = make_churn(20_000, seed=0).drop(columns="churned")
    outputs = pd.DataFrame({"prediction": np.zeros(len(train))})
    return build_profile(train, outputs)


@pytest.mark.parametrize("n", [200, 1_000, 5_000])
def test_same_distribution_stays_quiet(reference, n):
    current = make_churn(n, seed=n).drop(columns="churned")
    results = detect_drift(list(reference.columns), current)
    assert [r.name for r in results if r.drifted] == []


@pytest.mark.parametrize("n", [1_000, 20_000])
def test_injected_drift_is_found_and_only_there(reference, n):
    current = drifted(make_churn(n, seed=7).drop(columns="churned"), np.random.default_rng(7))
    results = {r.name: r for r in detect_drift(list(reference.columns), current)}
    assert {name for name, r in results.items() if r.drifted} == {
        "monthly_charges",
        "contract",
        "region",
    }
    assert results["monthly_charges"].test == ("ks" if n < 1000 else "wasserstein")
    assert results["contract"].test == ("chi2" if n < 1000 else "jensen_shannon")
    assert "atlantis" in results["region"].note
    assert results["monthly_charges"].psi > 0.2
    assert results["monthly_charges"].pvalue < 1e-6


def test_benjamini_hochberg_matches_the_textbook():
    adjusted = benjamini_hochberg([0.01, 0.04, 0.03, None, 0.5])
    assert adjusted[3] is None
    assert adjusted[0] == pytest.approx(0.04)
    assert adjusted[1] == pytest.approx(0.0533333333)
    assert adjusted[2] == pytest.approx(0.0533333333)
    assert adjusted[4] == pytest.approx(0.5)


@pytest.fixture(name="packaged")
def packaged_fixture(settings):
    df = make_churn(3000, seed=0)
    x, y = df.drop(columns="churned"), df["churned"]
    clf = logistic_pipeline(NUMERIC).fit(x, y)
    nbmlops.package("churn", clf, x, target=y, eval=(x, y), settings=settings)
    return clf


def as_records(frame: pd.DataFrame) -> list[dict]:
    """``frame`` as the JSON records a client sends (date-times as ISO-8601 text)."""
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def log_traffic(settings, clf, frame, *, ts=None, latency=5.0, status=OK, labels=None):
    """Write what a server would log for ``frame`` (ids returned)."""
    log = PredictionLog(settings.home / "predictions.db")
    outputs = predict_frame(clf, [], frame)
    records, ids = [], []
    now = ts or time.time()
    for i, (row, out) in enumerate(zip(as_records(frame), outputs.itertuples(), strict=True)):
        rid = f"{now}-{i}-{status}"
        ids.append(rid)
        answer = {"prediction": int(out.prediction), "proba": {"0": out.proba_0, "1": out.proba_1}}
        records.append(
            LogRecord(
                rid,
                now,
                "churn",
                "1",
                "primary",
                "/predict",
                status,
                latency,
                row,
                answer if status == OK else None,
                None if status == OK else "boom",
            )
        )
    log.write(records)
    if labels is not None:
        log.add_feedback(list(zip(ids, labels, strict=True)), now)
    log.close()
    return ids


def test_clean_traffic_is_ok_and_the_json_has_the_contract(settings, packaged):
    log_traffic(settings, packaged, make_churn(2000, seed=5).drop(columns="churned"))
    report = monitor("churn", settings=settings)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["status"] == "ok", report
    assert data["model"] == "churn" and data["version"] == "1"
    assert data["n_predictions"] == 2000
    assert set(data["window"]) == {"start", "end"}
    assert set(data["latency_ms"]) == {"p50", "p95", "p99"} and data["latency_ms"]["p50"] == 5.0
    assert data["error_rate"] == 0.0 and data["quality"] is None
    assert data["staleness_days"] < 1
    assert {f["name"] for f in data["features"]} == set(make_churn(5).columns) - {"churned"}
    for feature in data["features"]:
        assert set(feature) >= {"name", "kind", "test", "statistic", "pvalue", "psi", "drifted"}
    assert data["prediction_drift"]["drifted"] is False
    assert data["alerts"] == []
    frame = report.to_frame()
    assert "monthly_charges" in frame.index and "(prediction)" in frame.index


def test_drifted_traffic_alerts_with_reasons_and_cli_exits_1(settings, packaged, capsys):
    current = drifted(make_churn(3000, seed=9).drop(columns="churned"), np.random.default_rng(9))
    log_traffic(settings, packaged, current)
    report = monitor("churn", settings=settings)
    assert report.status == "alert"
    assert {a.feature for a in report.alerts if a.kind == "drift"} == {
        "monthly_charges",
        "contract",
        "region",
    }
    assert [f.name for f in report.features[:3]] and all(f.drifted for f in report.features[:3])
    assert main(["monitor", "churn", "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "alert" and printed["alerts"]
    html_file = settings.home.parent / "report.html"
    assert main(["monitor", "churn", "--html", str(html_file)]) == 1
    page = html_file.read_text()
    assert "ALERT" in page and "monthly_charges" in page and "data:image/png;base64," in page


def test_window_and_since_select_what_is_judged(settings, packaged):
    old = time.time() - 3 * 86400
    current = drifted(make_churn(2000, seed=3).drop(columns="churned"), np.random.default_rng(3))
    log_traffic(settings, packaged, current, ts=old)
    log_traffic(settings, packaged, make_churn(1500, seed=4).drop(columns="churned"))
    assert monitor("churn", settings=settings).n_predictions == 3500
    recent = monitor("churn", window="24h", settings=settings)
    assert recent.n_predictions == 1500 and recent.status == "ok"
    since = (datetime.now(UTC) - timedelta(days=4)).isoformat()
    both = monitor("churn", window="1h", since=since, settings=settings)
    assert both.n_predictions == 1500, "the later start wins"
    assert monitor("churn", since=since, settings=settings).status == "alert"
    assert parse_duration("30m") == timedelta(minutes=30)
    with pytest.raises(nbmlops.UsageError, match="--window"):
        monitor("churn", window="soon", settings=settings)


def test_errors_latency_and_feedback_quality(settings, packaged):
    frame = make_churn(400, seed=6)
    x, y = frame.drop(columns="churned"), frame["churned"]
    log_traffic(settings, packaged, x, latency=900.0, labels=list(1 - y))
    log_traffic(settings, packaged, x.head(20), status=ERROR)
    log_traffic(settings, packaged, x.head(3), status=REJECTED)
    report = monitor("churn", settings=settings)
    kinds = {a.kind for a in report.alerts}
    assert {"error_rate", "latency", "quality"} <= kinds
    assert report.error_rate == pytest.approx(20 / 420)
    assert report.rejected_rate == pytest.approx(3 / 423)
    assert report.quality["n_labels"] == 400
    assert report.quality["metrics"]["accuracy"] < 0.5 < report.quality["packaged"]["accuracy"]


def test_too_few_predictions_is_a_warning(settings, packaged):
    log_traffic(settings, packaged, make_churn(20, seed=8).drop(columns="churned"))
    report = monitor("churn", settings=settings)
    assert report.status == "warning"
    assert any(w.kind == "volume" for w in report.warnings)


def test_below_min_predictions_drift_is_not_judged(settings, packaged, capsys):
    few = drifted(make_churn(60, seed=13).drop(columns="churned"), np.random.default_rng(13))
    log_traffic(settings, packaged, few)
    report = monitor("churn", settings=settings)
    assert report.status == "warning", report
    assert report.alerts == ()
    assert [w.kind for w in report.warnings] == ["volume"]
    assert "needs at least 100 to be judged" in report.warnings[0].message
    assert main(["monitor", "churn", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    charges = next(f for f in data["features"] if f["name"] == "monthly_charges")
    assert charges["drifted"] is None and charges["significant"] is None
    assert charges["pvalue"] < 0.05 and charges["psi"] > 0.2, "the statistics are still shown"
    assert data["prediction_drift"]["drifted"] is None
    assert "drifted features: not judged" in repr(report)
    assert "not judged" in report.to_html() and "DRIFTED" not in report.to_html()
    assert report.to_frame()["drifted"].isna().all()

    # the same drift with enough traffic to judge it alerts
    more = drifted(make_churn(200, seed=14).drop(columns="churned"), np.random.default_rng(14))
    log_traffic(settings, packaged, more)
    judged = monitor("churn", settings=settings)
    assert judged.status == "alert"
    assert {a.feature for a in judged.alerts if a.kind == "drift"} >= {"monthly_charges"}


def test_odd_log_content_is_skipped_and_counted_never_fatal(settings, packaged, capsys):
    frame = make_churn(300, seed=11)
    x, y = frame.drop(columns="churned"), frame["churned"]
    ids = log_traffic(settings, packaged, x, labels=list(y))
    row = as_records(x.head(1))[0]
    answer = {"prediction": 0, "proba": {"0": 0.6, "1": 0.4}}
    cases = [(text, answer) for text in ("null", "[1, 2]", '"text"', "{not json")]
    cases += [({**row, "tenure_months": v}, answer) for v in ("n/a", [1, 2], {"a": 1}, True)]
    cases += [({**row, "region": [1, 2]}, answer)]
    cases += [(row, out) for out in ({"proba": {}}, {"prediction": "yes"}, {"prediction": [1]})]
    cases += [(row, [0, 1])]
    early = time.time() - 60  # before the traffic: a bare null is the first line read
    records = [
        LogRecord(f"odd{i}", early + i, "churn", "1", "primary", "/predict", OK, 5.0, *case)
        for i, case in enumerate(cases)
    ]
    path = settings.home / "predictions.db"
    log = PredictionLog(path)
    log.write(records)
    bad_labels = ["yes", [1, 2], {"a": 1}, 1.5, True, "unreadable"]
    feedback = [*zip(ids[:6], bad_labels, strict=True), (ids[6], 1.0)]
    assert log.add_feedback(feedback, time.time()) == []
    log.close()
    odd_outputs = {
        ids[7]: '{"prediction": 1, "proba": [0.5, 0.5]}',
        ids[8]: '{"prediction": 1, "proba": {"0": "x"}}',
        ids[9]: '{"proba": {"0": 0.5, "1": 0.5}}',
    }
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE feedback SET label = 'not json' WHERE id = ?", (ids[5],))
        db.executemany(
            "UPDATE predictions SET outputs = ? WHERE id = ?",
            [(text, rid) for rid, text in odd_outputs.items()],
        )
    db.close()

    report = monitor("churn", settings=settings)
    skipped = {(s.what, s.feature): s.count for s in report.skipped}
    assert skipped == {
        ("inputs", None): 4,
        ("values", "region"): 1,
        ("values", "tenure_months"): 4,
        ("outputs", None): 5,
        ("feedback", None): 6,
        ("proba", None): 2,
    }
    assert report.n_predictions == 313
    assert report.prediction_drift.n == 308
    assert report.quality["n_labels"] == 300 - 6 - 1 - 2
    tenure = next(f for f in report.features if f.name == "tenure_months")
    assert tenure.skipped == 4 and report.to_frame().loc["tenure_months", "skipped"] == 4
    text = repr(report)
    assert (
        "6 feedback labels skipped: not one of the model's classes (0, 1); left out of quality"
        in text
    )
    assert "4 values of tenure_months skipped: not a number" in text
    assert "1 value of region skipped: an array or an object" in text
    assert "skipped from the log" in report.to_html() and "4 logged inputs skipped" in text

    assert main(["monitor", "churn", "--json"]) in (0, 1)
    printed = json.loads(capsys.readouterr().out)
    assert printed["skipped"] == [s.to_dict() for s in report.skipped]
    assert printed["quality"]["n_labels"] == 291


@pytest.fixture(name="packaged_with_signup")
def packaged_with_signup_fixture(settings):
    df = with_signup(make_churn(3000, seed=0), seed=0)
    x, y = df.drop(columns="churned"), df["churned"]
    clf = logistic_pipeline(NUMERIC).fit(x, y)
    nbmlops.package("churn", clf, x, target=y, eval=(x, y), settings=settings)
    return clf


def with_signup(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``frame`` with a ``signup`` date-time during 2025 (the model does not use it)."""
    seconds = np.random.default_rng(seed).integers(0, 365 * 86400, len(frame))
    return frame.assign(signup=pd.Timestamp("2025-01-01") + pd.to_timedelta(seconds, unit="s"))


def test_date_times_in_mixed_iso_spellings_are_read_one_by_one(settings, packaged_with_signup):
    current = with_signup(make_churn(400, seed=12).drop(columns="churned"), seed=12)
    spellings = (
        lambda t: t.strftime("%Y-%m-%dT%H:%M:%S"),
        lambda t: t.strftime("%Y-%m-%d %H:%M:%S.000"),
        lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        lambda t: (t + pd.Timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00"),
    )
    spelled = [spellings[i % 4](t) for i, t in enumerate(current["signup"])]
    spelled[:3] = ["yesterday", 5, None]
    current["signup"] = pd.Series(spelled, dtype=object)
    log_traffic(settings, packaged_with_signup, current)

    report = monitor("churn", settings=settings)
    signup = next(f for f in report.features if f.name == "signup")
    assert signup.kind == "datetime" and signup.n == 397 and signup.skipped == 2
    assert not signup.drifted and signup.pvalue > 0.05
    assert signup.null_rate == pytest.approx(1 / 400)
    assert [(s.what, s.feature, s.count) for s in report.skipped] == [("values", "signup", 2)]
    assert report.skipped[0].reason.startswith("not an ISO-8601 date-time")
    assert report.status == "ok", report
