"""The ``nbmlops`` command, run in-process: output, exit codes and one-line errors (SPEC 5)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbmlops.cli import EXIT_FAILED, EXIT_USAGE, build_parser, main
from nbmlops.registry.registry import ModelVersion, Registry
from tests.churn_store import (
    NAME,
    churn_registry_fixture,  # noqa: F401 - a fixture
    churn_store_fixture,  # noqa: F401 - a fixture
)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def aliases_of(name: str = NAME) -> dict[str, str]:
    return {alias: v.version for v in Registry().versions(name) for alias in v.aliases}


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert err.startswith("nbmlops: ")
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err


# -- models list / show ------------------------------------------------------------------------


def test_list_prints_a_table_of_models_versions_and_aliases(churn_registry, capsys):
    Registry().set_alias(f"{NAME}@v2", "production")
    Registry().set_alias(f"{NAME}@v1", "staging")
    code, out, err = run(capsys, "models", "list")
    assert code == 0
    assert err == ""
    header, *rows = out.splitlines()
    assert header.split() == ["name", "versions", "latest", "aliases"]
    assert len(rows) == 1
    assert rows[0].split(maxsplit=3) == [NAME, "3", "v3", "production=v2, staging=v1"]


def test_list_json_is_machine_readable(churn_registry, capsys):
    Registry().set_alias(f"{NAME}@v2", "production")
    code, out, _ = run(capsys, "models", "list", "--json")
    assert code == 0
    (model,) = json.loads(out)
    assert model["name"] == NAME
    assert model["n_versions"] == 3
    assert model["latest_version"] == "3"
    assert model["aliases"] == {"production": "2"}


def test_list_of_an_empty_store_says_so(capsys):
    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    assert out.startswith("no models registered in sqlite:///")

    code, out, _ = run(capsys, "models", "list", "--json")
    assert code == 0
    assert json.loads(out) == []


def test_list_shows_a_model_without_versions_sensibly(capsys):
    # A team's MLflow server can hold a registered model with no versions yet.
    Registry().client.create_registered_model("fraud")
    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    (row,) = out.splitlines()[1:]
    assert row.split()[:2] == ["fraud", "0"]
    assert "None" not in row


def test_show_prints_the_card_with_metrics(churn_registry, capsys):
    code, out, err = run(capsys, "models", "show", f"{NAME}@v1")
    assert code == 0
    assert err == ""
    assert out.splitlines()[0] == f"Model card: {NAME} v1"
    metric_lines = {line.split()[0]: line.split()[-1] for line in out.splitlines()[1:]}
    assert metric_lines["f1_macro"] == f"{churn_registry.f1_macro['1']:.4f}"
    assert {"accuracy", "roc_auc", "log_loss"} <= set(metric_lines)
    assert "inputs: tenure_months, monthly_charges, contract" in out


def test_show_of_a_name_shows_the_production_version(churn_registry, capsys):
    Registry().set_alias(f"{NAME}@v2", "production")
    code, out, _ = run(capsys, "models", "show", NAME)
    assert code == 0
    assert out.splitlines()[0] == f"Model card: {NAME} v2 (production)"
    assert f"{churn_registry.f1_macro['2']:.4f}" in out


def test_show_json_carries_version_metrics_and_lineage(churn_registry, capsys):
    code, out, _ = run(capsys, "models", "show", f"models:/{NAME}/3", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["name"] == NAME
    assert shown["version"] == "3"
    assert shown["metrics"]["f1_macro"] == pytest.approx(churn_registry.f1_macro["3"])
    assert shown["lineage"]["data_shape"] == [300, 7]


# -- models promote / rollback / archive -------------------------------------------------------


def test_promote_then_promote_again_prints_previous(churn_registry, capsys):
    code, out, err = run(capsys, "models", "promote", f"{NAME}@v1", "--to", "production")
    assert code == 0
    assert err == ""
    assert out == f"{NAME}@production -> v1\n"
    assert aliases_of() == {"production": "1"}

    code, out, _ = run(capsys, "models", "promote", f"{NAME}@v2", "--to", "production")
    assert code == 0
    assert out == f"{NAME}@production -> v2 (previous: v1)\n"
    assert aliases_of() == {"production": "2", "previous": "1"}


def test_promote_to_staging_does_not_touch_production(churn_registry, capsys):
    run(capsys, "models", "promote", f"{NAME}@v3", "--to", "production")
    code, out, _ = run(capsys, "models", "promote", f"{NAME}@v1", "--to", "staging")
    assert code == 0
    assert out == f"{NAME}@staging -> v1\n"
    assert aliases_of() == {"production": "3", "staging": "1"}


def test_rollback_swaps_and_a_second_rollback_undoes_it(churn_registry, capsys):
    run(capsys, "models", "promote", f"{NAME}@v1", "--to", "production")
    run(capsys, "models", "promote", f"{NAME}@v3", "--to", "production")

    code, out, err = run(capsys, "models", "rollback", NAME)
    assert code == 0
    assert err == ""
    assert out == f"{NAME}@production -> v1; v3 is now previous\n"
    assert aliases_of() == {"production": "1", "previous": "3"}

    code, out, _ = run(capsys, "models", "rollback", NAME)
    assert code == 0
    assert out == f"{NAME}@production -> v3; v1 is now previous\n"
    assert aliases_of() == {"production": "3", "previous": "1"}


def test_archive_removes_aliases(churn_registry, capsys):
    run(capsys, "models", "promote", f"{NAME}@v1", "--to", "production")
    code, out, err = run(capsys, "models", "archive", f"{NAME}@v1")
    assert code == 0
    assert err == ""
    assert out == f"{NAME}@v1 archived; its aliases were removed\n"
    assert aliases_of() == {}
    assert Registry().get(NAME, "1").tags["archived"] == "true"

    code, out, _ = run(capsys, "models", "show", NAME)
    assert out.splitlines()[0] == f"Model card: {NAME} v3"


# -- errors: one line on stderr, non-zero exit -------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("models", "show", "churm"),
        ("models", "show", "churm@v1"),
        ("models", "promote", "churm@v1", "--to", "production"),
        ("models", "archive", "churm@v2"),
    ],
)
def test_unknown_model_exits_1_naming_it(churn_registry, capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == EXIT_FAILED == 1
    assert out == ""
    assert_one_line_error(err, "'churm'")


def test_unknown_version_exits_1_naming_the_versions(churn_registry, capsys):
    code, out, err = run(capsys, "models", "show", f"{NAME}@v8")
    assert code == 1
    assert out == ""
    assert_one_line_error(err, "no version 8", "1, 2, 3")


def test_rollback_without_previous_exits_1_saying_what_to_do(churn_registry, capsys):
    run(capsys, "models", "promote", f"{NAME}@v2", "--to", "production")
    code, out, err = run(capsys, "models", "rollback", NAME)
    assert code == 1
    assert out == ""
    assert_one_line_error(err, "previous", f"nbmlops models promote {NAME}@vN --to production")
    assert aliases_of() == {"production": "2"}


def test_promoting_an_archived_version_exits_1(churn_registry, capsys):
    run(capsys, "models", "archive", f"{NAME}@v1")
    code, _, err = run(capsys, "models", "promote", f"{NAME}@v1", "--to", "production")
    assert code == 1
    assert_one_line_error(err, "archived")
    assert aliases_of() == {}


def broken_store(kind: str, home: Path) -> dict[str, str]:
    """The environment of a store MLflow cannot use."""
    if kind == "a database file that is not one":
        home.mkdir(parents=True, exist_ok=True)
        (home / "mlflow.db").write_text("not a database\n")
        return {}
    if kind == "a URI MLflow has no store for":
        return {"MLFLOW_TRACKING_URI": "nosuch://store"}
    return {  # a tracking server that is not running, asked once, quickly
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }


STORES = ["a database file that is not one", "a URI MLflow has no store for", "a dead server"]


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize(
    "argv",
    [
        ("models", "list"),
        ("models", "show", NAME),
        ("models", "promote", f"{NAME}@v1", "--to", "production"),
    ],
)
def test_a_broken_store_is_one_line_not_a_traceback(settings, monkeypatch, capsys, kind, argv):
    for name, value in broken_store(kind, settings.home).items():
        monkeypatch.setenv(name, value)
    code, out, err = run(capsys, *argv)
    assert code == EXIT_FAILED
    assert out == ""
    assert_one_line_error(err)
    assert "Traceback" not in err


def test_a_broken_store_in_a_real_process_prints_one_line(settings):
    env = {**os.environ, **broken_store(STORES[0], settings.home)}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "nbmlops"), "models", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == EXIT_FAILED
    assert done.stdout == ""
    assert_one_line_error(done.stderr, str(settings.home / "mlflow.db"), "not a database")


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (("models", "promote", f"{NAME}@v1", "--to", "latest"), "'latest'"),
        (("models", "promote", f"{NAME}@v1", "--to", "v2"), "'v2'"),
        (("models", "show", "bad name!"), "'bad name!'"),
        (("models", "show", "models:/churn"), "'models:/churn'"),
        (("models", "rollback", "no such"), "'no such'"),
        (("models", "rollback", NAME, "--alias", "9lives"), "'9lives'"),
    ],
)
def test_bad_values_exit_2_naming_them(churn_registry, capsys, argv, named):
    code, out, err = run(capsys, *argv)
    assert code == EXIT_USAGE == 2
    assert out == ""
    assert_one_line_error(err, named)
    assert aliases_of() == {}


@pytest.mark.parametrize(
    "argv",
    [
        (),
        ("models",),
        ("models", "promote", f"{NAME}@v1"),  # --to is required
        ("models", "frobnicate"),
        ("models", "list", "--yaml"),
    ],
)
def test_bad_usage_exits_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    _, err = capsys.readouterr()
    assert "usage: nbmlops" in err


# -- the CLI is a thin face: it passes what it parsed to the library ----------------------------


def version(name: str, number: str) -> ModelVersion:
    return ModelVersion(name=name, version=number, run_id=None, source="")


def test_rollback_passes_name_and_alias_to_the_library(monkeypatch, capsys):
    calls = []

    def rollback(name, alias="production", settings=None):
        calls.append((name, alias))
        return version(name, "4"), version(name, "5")

    monkeypatch.setattr("nbmlops.registry.registry.rollback", rollback)
    code, out, _ = run(capsys, "models", "rollback", "fraud", "--alias", "staging")
    assert code == 0
    assert calls == [("fraud", "staging")]
    assert out == "fraud@staging -> v4; v5 is now previous-staging\n"


def test_predict_passes_every_option_to_the_library_and_exits_with_its_code(monkeypatch, capsys):
    from nbmlops.batch.run import BatchResult

    calls = []

    def predict(model, input, output, **options):  # noqa: A002
        calls.append((model, input, output, options))
        return BatchResult(
            "churn", "3", "dask", input, "ab" * 32, output, "s.rejected.csv", 10, 9, 1, 2.0,
            (("age: expected a number, got a string 'x'", 1),),
        )  # fmt: skip

    monkeypatch.setattr("nbmlops.batch.run.predict", predict)
    code, out, _ = run(
        capsys, "predict", "churn@production", "in.parquet", "s.csv", "--chunk-rows", "500",
        "--id-column", "key", "--engine", "dask", "--workers", "3", "--log",
        "--unknown-categories", "allow",
    )  # fmt: skip
    assert code == 4
    assert calls == [
        (
            "churn@production",
            "in.parquet",
            "s.csv",
            {
                "chunk_rows": 500,
                "id_column": "key",
                "engine": "dask",
                "scheduler": None,
                "workers": 3,
                "log": True,
                "unknown_categories": "allow",
            },
        )
    ]
    assert "scored 9 of 10 rows of in.parquet with churn v3 (dask)" in out
    assert "1 x age: expected a number, got a string 'x'" in out


# -- --help --------------------------------------------------------------------------------------

HELP_PATHS = [
    (),
    ("models",),
    ("models", "list"),
    ("models", "show"),
    ("models", "promote"),
    ("models", "rollback"),
    ("models", "archive"),
    ("models", "history"),
    ("serve",),
    ("monitor",),
    ("predict",),
    ("stream",),
    ("export",),
    ("plan",),
    ("retrain",),
    ("demo",),
]


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set:
    """Every command path of a parser, found by walking its subparsers."""
    paths = {prefix}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths |= command_paths(sub, (*prefix, name))
    return paths


def test_help_paths_cover_every_command():
    assert set(HELP_PATHS) == command_paths(build_parser())


@pytest.mark.parametrize("path", HELP_PATHS, ids=lambda p: " ".join(p) or "nbmlops")
def test_every_command_has_help(capsys, path):
    with pytest.raises(SystemExit) as info:
        main([*path, "--help"])
    assert info.value.code == 0
    out, _ = capsys.readouterr()
    assert out.startswith(f"usage: {' '.join(('nbmlops', *path))}")
