"""Retraining jobs: real papermill runs of notebooks/train.ipynb, a real registry, the gate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nbmlops.cli import main
from nbmlops.datasets import make_churn
from nbmlops.registry.load import load
from nbmlops.registry.registry import Registry
from tests.monitoring.test_monitor import drifted, log_traffic

TRAIN = str(Path(__file__).resolve().parents[2] / "notebooks" / "train.ipynb")


def retrain(*args: str) -> int:
    return main(["retrain", TRAIN, "--model", "churn", *args])


def aliases(settings) -> dict[str, str]:
    return Registry(settings).list_models()[0].aliases


def test_first_job_promotes_and_attaches_its_report(settings, capsys):
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


def test_worse_model_is_rejected_and_production_stays(settings, capsys, tmp_path):
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


def test_custom_gate_rules(settings):
    assert retrain("--promote", "production") == 0
    assert retrain("--gate", "roc_auc>=0.99", "--promote", "production") == 3
    assert (
        retrain("--gate", "f1_macro>=production-0.5,accuracy>=0.5", "--promote", "production") == 0
    )
    assert aliases(settings)["production"] == "3"
    assert main(["retrain", TRAIN, "--model", "churn", "--gate", "f1 is great"]) == 2


def test_equal_model_is_promoted_with_previous_and_rollback_restores(settings):
    assert retrain("--promote", "production") == 0
    assert retrain("--promote", "production") == 0
    assert aliases(settings)["production"] == "2" and aliases(settings)["previous"] == "1"
    assert main(["models", "rollback", "churn"]) == 0
    assert aliases(settings)["production"] == "1" and aliases(settings)["previous"] == "2"


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
    assert "drift not fired (monitor status ok)" in capsys.readouterr().out
    shifted = drifted(make_churn(3000, seed=4).drop(columns="churned"), np.random.default_rng(4))
    log_traffic(settings, production, shifted)
    assert retrain("--when", "drift") == 0
    assert "drift fired (monitor status alert)" in capsys.readouterr().out


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


def test_gate_rules_parse_and_decide():
    from nbmlops.jobs.gate import decide, parse_rules

    rules = parse_rules("f1_macro>=production-0.005, roc_auc>=0.8", "f1_macro")
    assert [str(r) for r in rules] == ["f1_macro>=production-0.005", "roc_auc>=0.8"]
    production = {"f1_macro": 0.80, "roc_auc": 0.9}
    assert decide(rules, {"f1_macro": 0.796, "roc_auc": 0.85}, production).passed
    assert not decide(rules, {"f1_macro": 0.79, "roc_auc": 0.85}, production).passed
    assert not decide(rules, {"f1_macro": 0.9, "roc_auc": 0.7}, production).passed
    assert decide(rules, {"f1_macro": 0.1, "roc_auc": 0.1}, None).passed
    assert [str(r) for r in parse_rules(None, "rmse")] == ["rmse<=production"]
