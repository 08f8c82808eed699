"""Retraining jobs: real papermill runs of notebooks/train.ipynb, a real registry, the gate."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

from nbmlops.cli import main
from nbmlops.datasets import make_churn
from nbmlops.packaging.package import package
from nbmlops.registry.load import load
from nbmlops.registry.registry import Registry
from tests.conftest import make_notebook
from tests.monitoring.test_monitor import NUMERIC, drifted, log_traffic
from tests.served_model import logistic_pipeline

TRAIN = str(Path(__file__).resolve().parents[2] / "notebooks" / "train.ipynb")


def retrain(*args: str) -> int:
    return main(["retrain", TRAIN, "--model", "churn", *args])


def aliases(settings) -> dict[str, str]:
    return Registry(settings).list_models()[0].aliases


def test_first_job_promotes_then_an_equal_model_replaces_it_and_rollback_restores(settings, capsys):
    assert retrain("--promote", "production") == 0
    out = capsys.readouterr().out
    assert "no production version: the first model passes" in out
    assert aliases(settings) == {"candidate": "1", "production": "1"}
    registry = Registry(settings)
    version = registry.get("churn", "1")
    assert version.tags["gate.decision"] == "passed"
    reports = {
        Path(a.path).suffix for a in registry.client.list_artifacts(version.run_id, "report")
    }
    assert reports == {".ipynb", ".html"}
    assert load("churn@production").lineage.notebook_path == TRAIN

    assert retrain("--promote", "production") == 0  # the same training: an equal model
    assert aliases(settings)["production"] == "2" and aliases(settings)["previous"] == "1"
    assert main(["models", "rollback", "churn"]) == 0
    assert aliases(settings)["production"] == "1" and aliases(settings)["previous"] == "2"


def test_worse_model_and_custom_gate_rules_are_rejected_and_production_stays(
    settings, capsys, tmp_path
):
    assert retrain("--promote", "production") == 0
    params = tmp_path / "params.yaml"
    params.write_text("C: 0.0001\n")
    assert retrain("-f", str(params), "--promote", "production") == 3
    out = capsys.readouterr().out
    assert "REJECTED" in out and "f1_macro" in out
    assert aliases(settings)["production"] == "1"
    tags = Registry(settings).get("churn", "2").tags
    assert tags["gate.decision"] == "rejected"
    assert float(tags["gate.candidate.f1_macro"]) < float(tags["gate.production.f1_macro"])
    assert tags["gate.production_version"] == "1"

    assert retrain("--gate", "roc_auc>=0.99", "--promote", "production") == 3
    assert aliases(settings)["production"] == "1"
    assert (
        retrain("--gate", "f1_macro>=production-0.5,accuracy>=0.5", "--promote", "production") == 0
    )
    assert aliases(settings)["production"] == "4"
    assert main(["retrain", TRAIN, "--model", "churn", "--gate", "f1 is great"]) == 2


def test_without_promote_a_passing_candidate_only_becomes_candidate(settings):
    assert retrain() == 0
    assert aliases(settings) == {"candidate": "1"}


@pytest.mark.parametrize(
    "params, words, registered",
    [
        (["-p", "fail_after_package", "True"], "the evaluation report could not be written", 1),
        (["-p", "data_path", "no-such-file.csv"], "FileNotFoundError", 0),
    ],
    ids=["after-package", "before-package"],
)
def test_failing_notebook_promotes_nothing(settings, capsys, params, words, registered):
    assert retrain(*params, "--promote", "production") == 1
    err = capsys.readouterr().err
    assert words in err and "nothing was promoted" in err
    executed = Path(err.split("executed notebook: ")[-1].strip())
    assert executed.is_file() and words in executed.read_text()
    versions = Registry(settings).versions("churn") if registered else []
    assert len(versions) == registered
    for version in versions:
        assert version.aliases == ()
        assert version.tags["nbmlops.job_status"] == "failed"


def test_stale_trigger(settings, capsys):
    assert retrain("--promote", "production") == 0
    assert retrain("--when", "stale=7d", "--promote", "production") == 0
    assert "stale=7d not fired" in capsys.readouterr().out
    assert len(Registry(settings).versions("churn")) == 1
    assert retrain("--when", "stale=0s", "--promote", "production") == 0
    assert len(Registry(settings).versions("churn")) == 2


def test_new_data_trigger(settings, tmp_path, capsys):
    data = tmp_path / "churn.csv"
    make_churn(2000, seed=1).to_csv(data, index=False)
    assert retrain("-p", "data_path", str(data), "--promote", "production") == 0
    assert retrain("-p", "data_path", str(data), "--when", "new-data") == 0
    assert "new-data not fired" in capsys.readouterr().out
    make_churn(2000, seed=2).to_csv(data, index=False)
    assert retrain("-p", "data_path", str(data), "--when", "new-data", "--gate", "f1_macro>=0") == 0
    assert "new-data fired" in capsys.readouterr().out
    assert len(Registry(settings).versions("churn")) == 2


def test_drift_trigger(settings, capsys):
    assert retrain("--promote", "production") == 0
    production = load("churn@production").predictor.estimator
    log_traffic(settings, production, make_churn(800, seed=3).drop(columns="churned"))
    assert retrain("--when", "drift") == 0
    out = capsys.readouterr().out
    assert "drift not fired (monitor status ok on 800 predictions since" in out
    assert "the last retraining job (churn@v1)" in out
    shifted = drifted(make_churn(3000, seed=4).drop(columns="churned"), np.random.default_rng(4))
    log_traffic(settings, production, shifted)
    assert retrain("--when", "drift") == 0
    assert "drift fired (monitor status alert on 3800 predictions" in capsys.readouterr().out
    # that job answered the drift: the next one judges only what production saw since
    assert aliases(settings) == {"production": "1", "candidate": "2"}
    assert retrain("--when", "drift") == 0
    out = capsys.readouterr().out
    assert "drift not fired (monitor status warning on 0 predictions since" in out
    assert "the last retraining job (churn@v2)" in out
    assert len(Registry(settings).versions("churn")) == 2


def test_drift_trigger_judges_the_drift_window_not_old_traffic(settings, capsys):
    df = make_churn(3000, seed=0)
    x, y = df.drop(columns="churned"), df["churned"]
    clf = logistic_pipeline(NUMERIC).fit(x, y)
    package("churn", clf, x, target=y, eval=(x, y), alias="production", settings=settings)
    old = time.time() - 10 * 86400
    shifted = drifted(make_churn(3000, seed=5).drop(columns="churned"), np.random.default_rng(5))
    log_traffic(settings, clf, shifted, ts=old)
    log_traffic(settings, clf, make_churn(400, seed=6).drop(columns="churned"))
    assert retrain("--when", "drift") == 0
    out = capsys.readouterr().out
    assert "drift not fired (monitor status ok on 400 predictions since" in out
    assert "--drift-window 7d" in out and "skipped" in out
    assert retrain("--when", "drift", "--drift-window", "soon") == 2
    assert "--drift-window 'soon' is not a duration" in capsys.readouterr().err
    assert len(Registry(settings).versions("churn")) == 1

    # a window long enough to reach the old traffic sees its drift
    assert retrain("--when", "drift", "--drift-window", "30d", "--gate", "f1_macro>=0") == 0
    assert "drift fired (monitor status alert on 3400 predictions" in capsys.readouterr().out
    assert len(Registry(settings).versions("churn")) == 2

    # drift after that job fires (the job's version sets the start: later than 7 days ago)
    log_traffic(settings, clf, shifted)
    assert retrain("--when", "drift", "--gate", "f1_macro>=0") == 0
    out = capsys.readouterr().out
    assert "drift fired (monitor status alert on 3000 predictions" in out
    assert "the last retraining job (churn@v2)" in out


def test_two_concurrent_jobs_do_not_cross_their_alias_updates(settings):
    assert retrain("--promote", "production") == 0
    command = [
        str(Path(sys.executable).parent / "nbmlops"),
        "retrain",
        TRAIN,
        "--model",
        "churn",
        "--promote",
        "production",
    ]
    jobs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in "ab"]
    codes = [job.wait(timeout=300) for job in jobs]
    assert codes == [0, 0], [job.stderr.read() for job in jobs]
    final = aliases(settings)
    assert {final["production"], final["previous"]} == {"2", "3"}


def test_parameters_are_typed_as_papermill_types_them(tmp_path):
    from nbmlops.jobs.retrain import load_parameters

    params = tmp_path / "params.yaml"
    params.write_text("C: 0.5\ndata_path: a.csv\n")
    pairs = [["n", "1"], ["C", "1.5"], ["flag", "True"], ["name", "x"], ["none", "None"]]
    assert load_parameters(pairs, [params]) == {
        "C": 1.5,
        "data_path": "a.csv",
        "n": 1,
        "flag": True,
        "name": "x",
        "none": None,
    }
    # papermill's rules exactly: int() first, then float(), else the text as given
    texts = ["-3", " 7 ", "1_000", "1e3", ".5", "inf", "False", "true", "none", "", "0x10"]
    typed = [load_parameters([["k", text]], [])["k"] for text in texts]
    assert typed == [-3, 7, 1000, 1000.0, 0.5, float("inf"), False, "true", "none", "", "0x10"]
    assert [type(v) for v in typed[:5]] == [int, int, int, float, float]


def test_gate_rules_parse_and_decide():
    from nbmlops.jobs.gate import decide, parse_rules

    rules = parse_rules("f1_macro>=production-0.005, roc_auc>=0.8", "f1_macro")
    assert [str(r) for r in rules] == ["f1_macro>=production-0.005", "roc_auc>=0.8"]
    production = {"f1_macro": 0.80, "roc_auc": 0.9}
    assert decide(rules, {"f1_macro": 0.796, "roc_auc": 0.85}, production).passed
    assert not decide(rules, {"f1_macro": 0.79, "roc_auc": 0.85}, production).passed
    assert not decide(rules, {"f1_macro": 0.9, "roc_auc": 0.7}, production).passed
    # without production the relative rule does not apply, the absolute one does
    first = decide(rules, {"f1_macro": 0.1, "roc_auc": 0.85}, None)
    assert first.passed
    assert (
        first.lines[1] == "f1_macro>=production-0.005: not applied, there is no production version"
    )
    assert not decide(rules, {"f1_macro": 0.9, "roc_auc": 0.1}, None).passed
    assert decide(parse_rules(None, "f1_macro"), {"f1_macro": 0.1}, None).passed
    # a rule that cannot be judged rejects
    no_score = decide(parse_rules("roc_auc>=production", ""), {"roc_auc": 0.9}, {"f1_macro": 0.8})
    assert not no_score.passed and "production has no roc_auc" in no_score.lines[0]
    assert [str(r) for r in parse_rules(None, "rmse")] == ["rmse<=production"]


# -- the gate never guesses --------------------------------------------------------------------


def test_a_first_model_must_hold_every_absolute_rule(settings, capsys):
    rules = "f1_macro>=production,roc_auc>=0.99"
    assert retrain("--gate", rules, "--promote", "production") == 3
    out = capsys.readouterr().out
    assert "no production version, and the first model fails a rule" in out
    assert "f1_macro>=production: not applied, there is no production version" in out
    assert "roc_auc 0." in out and ">= 0.9900: fails" in out
    assert aliases(settings) == {"candidate": "1"}
    assert Registry(settings).get("churn", "1").tags["gate.decision"] == "rejected"

    assert retrain("--gate", "f1_macro>=production,roc_auc>=0.6", "--promote", "production") == 0
    out = capsys.readouterr().out
    assert "no production version: the first model passes (every absolute rule holds)" in out
    assert aliases(settings) == {"candidate": "2", "production": "2"}


def test_a_misspelled_metric_is_a_usage_error_listing_the_metrics(settings, capsys):
    def executed() -> list[Path]:
        return sorted(settings.runs_dir.glob("churn-*.ipynb"))

    # a name no model is scored on: refused before the notebook runs, even for a new model
    assert retrain("--gate", "f1_makro>=0.8", "--promote", "production") == 2
    err = capsys.readouterr().err
    assert "--gate rule 'f1_makro>=0.8': no metric 'f1_makro'" in err
    assert "accuracy, f1_macro, roc_auc, log_loss" in err and "rmse, mae, r2" in err
    assert executed() == [] and Registry(settings).list_models() == []

    # a regression metric for a new model: its task is known once the notebook ran
    assert retrain("--gate", "rmse<=0.5", "--promote", "production") == 2
    err = capsys.readouterr().err
    assert "the gate scores a classification model on accuracy, f1_macro, roc_auc, log_loss" in err
    assert "the notebook registered churn@v1, which is not candidate and was not promoted" in err
    assert str(executed()[0]) in err
    version = Registry(settings).get("churn", "1")
    assert version.aliases == () and version.tags["nbmlops.job_status"] == "failed"

    # now the registry knows the task: refused before the run
    assert retrain("--gate", "rmse<=0.5,f1_macro>=0.5") == 2
    assert "no metric 'rmse'; the gate scores a classification model" in capsys.readouterr().err
    assert len(executed()) == 1 and len(Registry(settings).versions("churn")) == 1


#: A training notebook whose model may have no probabilities (``kind = "ridge"``).
KINDS_NOTEBOOK = [
    'kind = "logistic"',
    "%load_ext nbmlops\n"
    "from nbmlops.datasets import make_churn\n"
    'df = make_churn(2000, seed=0).drop(columns=["contract", "payment_method", "region"])\n'
    'X, y = df.drop(columns="churned"), df["churned"]\n'
    "X_train, X_test, y_train, y_test = X.iloc[:1500], X.iloc[1500:], y.iloc[:1500], y.iloc[1500:]",
    "%%mlops_package churn --model clf --data X_train --target y_train --eval X_test y_test\n"
    "from sklearn.impute import SimpleImputer\n"
    "from sklearn.linear_model import LogisticRegression, RidgeClassifier\n"
    "from sklearn.pipeline import make_pipeline\n"
    'last = RidgeClassifier() if kind == "ridge" else LogisticRegression(max_iter=1000)\n'
    "clf = make_pipeline(SimpleImputer(), last).fit(X_train, y_train)",
]


def test_a_rule_that_cannot_be_judged_rejects(settings, tmp_path, capsys):
    notebook = tmp_path / "kinds.ipynb"
    nb = make_notebook(*KINDS_NOTEBOOK)
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Py"}
    nbformat.write(nb, notebook)

    def job(kind: str, *args: str) -> int:
        return main(["retrain", str(notebook), "--model", "churn", "-p", "kind", kind, *args])

    assert job("ridge", "--promote", "production") == 0  # production: no probabilities
    capsys.readouterr()
    assert job("logistic", "--gate", "roc_auc>=production", "--promote", "production") == 3
    out = capsys.readouterr().out
    assert "roc_auc>=production: fails, production has no roc_auc to compare with" in out
    assert "need class probabilities" in out
    assert aliases(settings)["production"] == "1"
    # and a candidate without the score is rejected too, production or not
    assert job("ridge", "--gate", "roc_auc>=0.5", "--promote", "production") == 3
    assert "roc_auc>=0.5: fails, the candidate has no roc_auc" in capsys.readouterr().out
    assert aliases(settings)["production"] == "1"
