"""The registry and nbmlops.load against a real MLflow sqlite registry (SPEC sections 2-3)."""

from __future__ import annotations

import ast
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd
import psycopg
import pytest

import nbmlops
from nbmlops.cli import main
from nbmlops.config import Settings
from nbmlops.datasets import make_churn
from nbmlops.errors import (
    ArtifactModifiedError,
    ModelNotFoundError,
    RegistryError,
    UsageError,
)
from nbmlops.registry.refs import parse_ref
from nbmlops.registry.registry import Registry, alias_lock
from tests.capture_examples import add_charge_per_call
from tests.churn_store import (
    NAME,
    build_pipeline,
    churn_registry_fixture,  # noqa: F401 - a fixture
    churn_store_fixture,  # noqa: F401 - a fixture
    notebook_predictions,
)


def assert_predicts_like_notebook(model: nbmlops.LoadedModel, store, version: str) -> None:
    got = model.predict(store.X_score)
    assert list(got.columns) == ["prediction", "proba_0", "proba_1"]
    pd.testing.assert_frame_equal(
        got, store.expected[version], check_exact=False, rtol=0, atol=1e-9
    )


def aliases_of(registry: Registry) -> dict[str, str]:
    return {alias: v.version for v in registry.versions(NAME) for alias in v.aliases}


def test_the_three_versions_predict_differently(churn_store):
    # Guards the address tests below: a wrong version would give different probabilities.
    probas = [churn_store.expected[v]["proba_1"].round(6).tolist() for v in ("1", "2", "3")]
    assert len({tuple(p) for p in probas}) == 3


# -- addresses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "version"),
    [
        (NAME, "2"),  # the production alias wins over the latest version
        (f"{NAME}@production", "2"),
        (f"{NAME}@staging", "1"),
        (f"{NAME}@v3", "3"),
        (f"{NAME}@v1", "1"),
        (f"models:/{NAME}/3", "3"),
        (f"models:/{NAME}/1", "1"),
        (f"models:/{NAME}@staging", "1"),
        (f"models:/{NAME}@production", "2"),
        (f"  {NAME}@v3  ", "3"),
    ],
)
def test_every_address_form_resolves_and_loads_its_version(churn_registry, address, version):
    registry = Registry()
    registry.set_alias(f"{NAME}@v2", "production")
    registry.set_alias(f"{NAME}@v1", "staging")

    resolved = registry.resolve(address)
    assert (resolved.name, resolved.version) == (NAME, version)

    model = nbmlops.load(address)
    assert model.version.version == version
    assert model.metadata["version"] == version
    assert_predicts_like_notebook(model, churn_registry, version)


def test_name_without_production_alias_is_the_latest_version(churn_registry):
    registry = Registry()
    registry.set_alias(f"{NAME}@v1", "staging")
    assert registry.resolve(NAME).version == "3"
    assert_predicts_like_notebook(nbmlops.load(NAME), churn_registry, "3")


def test_loaded_model_carries_the_version_metadata(churn_registry):
    model = nbmlops.load(f"{NAME}@v2")
    meta = model.metadata
    assert meta["name"] == NAME
    assert meta["classes"] == [0, 1]
    assert meta["task"] == "classification"
    assert meta["preprocess"] == ["add_charge_per_call"]
    assert meta["metrics"]["f1_macro"] == pytest.approx(churn_registry.f1_macro["2"])
    assert model.schema.names == list(churn_registry.X_score.columns)


def test_load_by_folder_predicts_like_load_by_address(churn_registry):
    by_address = nbmlops.load(f"{NAME}@v1")
    by_folder = nbmlops.load(by_address.path)
    assert by_folder.version is None
    pd.testing.assert_frame_equal(
        by_folder.predict(churn_registry.X_score), by_address.predict(churn_registry.X_score)
    )


def test_predict_keeps_row_order_and_index(churn_registry):
    model = nbmlops.load(f"{NAME}@v3")
    shuffled = churn_registry.X_score.sample(frac=1.0, random_state=3)
    got = model.predict(shuffled)
    assert list(got.index) == list(shuffled.index)
    pd.testing.assert_frame_equal(
        got, churn_registry.expected["3"].loc[shuffled.index], check_exact=False, atol=1e-9
    )


def test_versions_are_listed_oldest_first_with_metrics(churn_registry):
    versions = Registry().versions(NAME)
    assert [v.version for v in versions] == ["1", "2", "3"]
    for v in versions:
        assert v.metrics["f1_macro"] == pytest.approx(churn_registry.f1_macro[v.version])
        assert v.tags["nbmlops.parity"] == "passed"
        assert v.description.startswith("logistic regression, C=")


# -- promote, rollback, archive ----------------------------------------------------------------


def test_promoting_sets_previous_only_when_production_moves(churn_registry):
    registry = Registry()
    registry.set_alias(f"{NAME}@v1", "production")
    assert aliases_of(registry) == {"production": "1"}

    registry.set_alias(f"{NAME}@v1", "production")  # promoting the same version again
    assert aliases_of(registry) == {"production": "1"}

    registry.set_alias(f"{NAME}@v2", "production")
    assert aliases_of(registry) == {"production": "2", "previous": "1"}

    registry.set_alias(f"{NAME}@v2", "production")
    assert aliases_of(registry) == {"production": "2", "previous": "1"}

    registry.set_alias(f"{NAME}@v3", "production")
    assert aliases_of(registry) == {"production": "3", "previous": "2"}


def test_promoting_another_alias_remembers_its_own_previous(churn_registry):
    registry = Registry()
    registry.set_alias(f"{NAME}@v3", "production")
    registry.set_alias(f"{NAME}@v1", "staging")
    registry.set_alias(f"{NAME}@v2", "staging")
    aliases = aliases_of(registry)
    assert aliases["staging"] == "2"
    assert aliases["production"] == "3"
    assert "previous" not in aliases  # production never moved


def test_rollback_swaps_production_and_previous_and_a_second_undoes_it(churn_registry):
    registry = Registry()
    registry.set_alias(f"{NAME}@v1", "production")
    registry.set_alias(f"{NAME}@v3", "production")

    current, previous = registry.rollback(NAME)
    assert (current.version, previous.version) == ("1", "3")
    assert aliases_of(registry) == {"production": "1", "previous": "3"}
    assert_predicts_like_notebook(nbmlops.load(NAME), churn_registry, "1")

    registry.rollback(NAME)
    assert aliases_of(registry) == {"production": "3", "previous": "1"}
    assert_predicts_like_notebook(nbmlops.load(NAME), churn_registry, "3")


def test_the_public_promote_and_rollback_move_aliases_in_one_step(churn_registry):
    registry = Registry()
    assert nbmlops.promote(f"{NAME}@v2").version == "2"
    nbmlops.promote(f"{NAME}@v3", to="production")
    assert aliases_of(registry) == {"production": "3", "previous": "2"}
    current, previous = nbmlops.rollback(NAME)
    assert (current.version, previous.version) == ("2", "3")
    assert_predicts_like_notebook(nbmlops.load(NAME), churn_registry, "2")


def test_rollback_without_previous_says_how_to_promote(churn_registry):
    registry = Registry()
    registry.set_alias(f"{NAME}@v2", "production")
    with pytest.raises(RegistryError) as info:
        registry.rollback(NAME)
    message = str(info.value)
    assert "v2" in message
    assert "previous" in message
    assert f"nbmlops models promote {NAME}@vN --to production" in message
    assert aliases_of(registry) == {"production": "2"}


def test_rollback_without_production_alias_is_refused(churn_registry):
    with pytest.raises(RegistryError, match="no 'production' alias"):
        Registry().rollback(NAME)


def test_archive_removes_aliases_and_name_falls_back_to_latest_live(churn_registry):
    registry = Registry()
    registry.set_alias(f"{NAME}@v2", "production")
    registry.set_alias(f"{NAME}@v3", "production")
    registry.set_alias(f"{NAME}@v3", "staging")

    archived = registry.archive(f"{NAME}@v3")
    assert archived.aliases == ()
    assert archived.tags["archived"] == "true"
    assert archived.archived
    assert aliases_of(registry) == {"previous": "2"}

    assert registry.resolve(NAME).version == "2"
    assert_predicts_like_notebook(nbmlops.load(NAME), churn_registry, "2")
    # The archived version is still there when asked for explicitly.
    assert registry.resolve(f"{NAME}@v3").archived


def test_archived_version_cannot_be_promoted(churn_registry):
    registry = Registry()
    registry.archive(f"{NAME}@v1")
    with pytest.raises(RegistryError, match=f"{NAME}@v1 is archived"):
        registry.set_alias(f"{NAME}@v1", "production")
    assert aliases_of(registry) == {}


def test_archiving_every_version_leaves_nothing_to_resolve(churn_registry):
    registry = Registry()
    for version in ("1", "2", "3"):
        registry.archive(f"{NAME}@v{version}")
    with pytest.raises(ModelNotFoundError, match=NAME):
        registry.resolve(NAME)


# -- addresses that answer nothing -------------------------------------------------------------


def test_unknown_version_names_the_versions_that_exist(churn_registry):
    with pytest.raises(ModelNotFoundError) as info:
        nbmlops.load(f"{NAME}@v9")
    message = str(info.value)
    assert "version 9" in message
    assert "1, 2, 3" in message


def test_unknown_version_uri_names_the_versions_that_exist(churn_registry):
    with pytest.raises(ModelNotFoundError, match="1, 2, 3"):
        Registry().resolve(f"models:/{NAME}/7")


def test_unknown_alias_names_the_aliases_that_exist(churn_registry):
    Registry().set_alias(f"{NAME}@v2", "production")
    with pytest.raises(ModelNotFoundError) as info:
        nbmlops.load(f"{NAME}@canary")
    message = str(info.value)
    assert "'canary'" in message
    assert "production=v2" in message


@pytest.mark.parametrize("address", ["churm", "churm@v1"])
def test_unknown_model_names_it_and_the_models_that_exist(churn_registry, address):
    with pytest.raises(ModelNotFoundError) as info:
        nbmlops.load(address)
    message = str(info.value)
    assert "'churm'" in message
    # A typo should be easy to spot: the message names the model that is registered
    # (as a word of its own, not inside the store's path).
    assert re.search(r"(?<![\w/.-])churn(?![\w-])", message), message


def test_unknown_model_in_an_empty_store_says_how_to_register_one():
    with pytest.raises(ModelNotFoundError) as info:
        nbmlops.load("fraud")
    assert "'fraud'" in str(info.value)
    assert "%%mlops_package fraud" in str(info.value)


@pytest.mark.parametrize(
    ("address", "named"),
    [
        ("", "address is required"),
        ("   ", "address is required"),
        ("bad name!", "'bad name!'"),
        ("-churn", "'-churn'"),
        ("@production", "''"),
        ("churn/../x@v1", "'churn/../x'"),
        ("models:/churn", "'models:/churn'"),
        ("models:/churn/latest", "'models:/churn/latest'"),
        ("models:/bad name/1", "'bad name'"),
    ],
)
def test_invalid_addresses_are_usage_errors_naming_the_value(address, named):
    with pytest.raises(UsageError) as info:
        parse_ref(address)
    assert named in str(info.value)


@pytest.mark.parametrize("address", ["models:/churn/latest", "bad name!", "@v1"])
def test_load_refuses_invalid_addresses(churn_registry, address):
    with pytest.raises(UsageError):
        nbmlops.load(address)


@pytest.mark.parametrize("alias", ["latest", "v2", "2x", "", "has space", "prod@1"])
def test_invalid_aliases_are_usage_errors(churn_registry, alias):
    registry = Registry()
    with pytest.raises(UsageError) as info:
        registry.set_alias(f"{NAME}@v1", alias)
    assert repr(alias) in str(info.value)
    assert aliases_of(registry) == {}


def test_rollback_with_an_invalid_name_is_a_usage_error(churn_registry):
    with pytest.raises(UsageError, match="not valid"):
        Registry().rollback("no such name")


# -- MLflow's own loader -----------------------------------------------------------------------


@pytest.fixture
def mlflow_tracking(churn_registry, monkeypatch):
    """Point MLflow's global tracking URI at this test's store, and restore it afterwards."""
    from mlflow.tracking._tracking_service import utils

    # set_tracking_uri writes MLFLOW_TRACKING_URI too: monkeypatch restores the variable,
    # set_tracking_uri(before) the global (None unsets both).
    before = utils._tracking_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", churn_registry.settings.tracking_uri)
    mlflow.set_tracking_uri(churn_registry.settings.tracking_uri)
    yield churn_registry
    mlflow.set_tracking_uri(before)


def test_mlflow_pyfunc_loads_registered_version_and_predicts_the_same(mlflow_tracking):
    ours = nbmlops.load(f"{NAME}@v1").predict(mlflow_tracking.X_score)
    theirs = mlflow.pyfunc.load_model(f"models:/{NAME}/1").predict(mlflow_tracking.X_score)
    assert isinstance(theirs, pd.DataFrame)
    pd.testing.assert_frame_equal(theirs, ours)
    pd.testing.assert_frame_equal(
        theirs, mlflow_tracking.expected["1"], check_exact=False, atol=1e-9
    )


def test_mlflow_pyfunc_resolves_our_aliases(mlflow_tracking):
    Registry().set_alias(f"{NAME}@v3", "production")
    theirs = mlflow.pyfunc.load_model(f"models:/{NAME}@production").predict(mlflow_tracking.X_score)
    pd.testing.assert_frame_equal(
        theirs, mlflow_tracking.expected["3"], check_exact=False, atol=1e-9
    )


# -- a tampered artifact -----------------------------------------------------------------------


@dataclass(frozen=True)
class Tampered:
    path: Path
    X: pd.DataFrame
    expected: pd.DataFrame


@pytest.fixture(scope="module", name="packaged_tamper")
def packaged_tamper_fixture(tmp_path_factory):
    """Version 1 of ``tamper`` in a store of its own, plus a pristine copy of its artifact."""
    home = tmp_path_factory.mktemp("tamper-store") / ".nbmlops"
    settings = Settings.from_env({"NBMLOPS_HOME": str(home)})
    df = make_churn(400, seed=2)
    X, y = df.drop(columns="churned"), df["churned"]
    model = build_pipeline(1.0).fit(add_charge_per_call(X), y)
    nbmlops.package("tamper", model, X, preprocess=[add_charge_per_call], settings=settings)
    path = nbmlops.load("tamper", settings).path
    pristine = home.parent / "pristine"
    shutil.copytree(path, pristine)
    return settings, Tampered(path, X.head(20), notebook_predictions(model, X.head(20))), pristine


@pytest.fixture
def tamper_model(packaged_tamper, monkeypatch):
    """The ``tamper`` artifact, which the test may modify; restored afterwards."""
    settings, tampered, pristine = packaged_tamper
    monkeypatch.setenv("NBMLOPS_HOME", str(settings.home))
    yield tampered
    shutil.rmtree(tampered.path)
    shutil.copytree(pristine, tampered.path)


@pytest.mark.parametrize(
    "file",
    [
        "code/nbmlops_preprocess.py",
        "data/nbmlops/config.json",
        "schema.json",
        "MLmodel",
    ],
)
def test_a_changed_file_is_refused_naming_it(tamper_model, file):
    path, X, expected = tamper_model.path, tamper_model.X, tamper_model.expected
    target = path / file
    original = target.read_bytes()
    target.write_bytes(original + b" ")

    for ref in ("tamper", path):
        with pytest.raises(ArtifactModifiedError) as info:
            nbmlops.load(ref)
        assert file in str(info.value)
        assert info.value.file == file
        assert "changed" in str(info.value)

    target.write_bytes(original)
    pd.testing.assert_frame_equal(
        nbmlops.load("tamper").predict(X), expected, check_exact=False, atol=1e-9
    )


def test_the_estimator_is_verified_before_it_is_unpickled(tamper_model):
    path = tamper_model.path
    estimator = next((path / "data" / "nbmlops").glob("estimator.*"))
    estimator.write_bytes(b"not a pickle, and loading it would fail differently")
    with pytest.raises(ArtifactModifiedError) as info:
        nbmlops.load("tamper")
    assert info.value.file == f"data/nbmlops/{estimator.name}"


def test_an_added_file_is_refused_naming_it(tamper_model):
    path = tamper_model.path
    (path / "code" / "sitecustomize.py").write_text("print('injected')\n")
    with pytest.raises(ArtifactModifiedError) as info:
        nbmlops.load("tamper")
    assert "code/sitecustomize.py" in str(info.value)
    assert "added" in str(info.value)


def test_a_deleted_file_is_refused_naming_it(tamper_model):
    path = tamper_model.path
    (path / "profile.json").unlink()
    with pytest.raises(ArtifactModifiedError, match="profile.json is missing"):
        nbmlops.load("tamper")


@pytest.mark.parametrize("change", ["append", "add"])
def test_mlflow_pyfunc_refuses_a_tampered_folder(tamper_model, change):
    path, X, expected = tamper_model.path, tamper_model.X, tamper_model.expected
    pd.testing.assert_frame_equal(
        mlflow.pyfunc.load_model(str(path)).predict(X), expected, check_exact=False, atol=1e-9
    )
    if change == "append":
        with open(path / "lineage.json", "ab") as handle:
            handle.write(b"\n")
        named = "lineage.json"
    else:
        (path / "extra.txt").write_text("x")
        named = "extra.txt"
    with pytest.raises(Exception, match="modified after packaging") as info:
        mlflow.pyfunc.load_model(str(path))
    assert named in str(info.value)


# -- a store that fails is not a store that says "no" ------------------------------------------


def test_a_missing_alias_is_none_but_a_failing_store_is_an_error_naming_it(churn_registry):
    registry = Registry()
    registry.set_alias(f"{NAME}@v1", "production")
    assert registry.alias_version(NAME, "staging") is None
    assert registry.alias_version("no-such-model", "production") is None

    # The aliases table becomes unreadable: the store fails, it does not answer "no alias".
    db = sqlite3.connect(churn_registry.settings.home / "mlflow.db")
    with db:
        db.execute("ALTER TABLE registered_model_aliases RENAME TO aliases_elsewhere")
    db.close()
    for call in (
        lambda: registry.alias_version(NAME, "production"),
        lambda: registry.resolve(NAME),
        lambda: nbmlops.load(NAME),
        lambda: registry.set_alias(f"{NAME}@v3", "production"),
    ):
        with pytest.raises(RegistryError) as info:
            call()
        assert type(info.value) is RegistryError  # not ModelNotFoundError: nothing is missing
        message = str(info.value)
        assert churn_registry.settings.tracking_uri in message
        assert "no such table" in message and "retry" in message
        assert "\n" not in message


def test_an_unreachable_tracking_server_is_one_line_naming_it(churn_registry, monkeypatch, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens on it once the socket is closed
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(RegistryError) as info:
        Registry().resolve(NAME)
    assert type(info.value) is RegistryError
    assert url in str(info.value) and "MLFLOW_TRACKING_URI" in str(info.value)

    assert main(["models", "promote", f"{NAME}@v2", "--to", "production"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and url in err and "retry" in err


# -- one lock for every alias write ------------------------------------------------------------

#: Swaps production and previous N times, either by rollback or by promoting the previous
#: version (reading it under the lock, so set_alias takes the lock a second time).
_SWAPPER = """
import sys
from nbmlops.registry.registry import Registry, alias_lock

name, how, times = sys.argv[1], sys.argv[2], int(sys.argv[3])
registry = Registry()
for _ in range(times):
    if how == "rollback":
        registry.rollback(name)
    else:
        with alias_lock(registry.settings, name):
            previous = registry.alias_version(name, "previous")
            registry.set_alias(f"{name}@v{previous}", "production")
"""


@pytest.fixture(params=["file", "postgresql"])
def lock_kind(request, monkeypatch) -> str:
    """The alias lock as a file under the store, or as an advisory lock in the PostgreSQL log's
    database (``NBMLOPS_LOG_URI``), which holds across machines."""
    if request.param == "postgresql":
        monkeypatch.setenv("NBMLOPS_LOG_URI", request.getfixturevalue("postgres_log_uri"))
    return request.param


def test_two_processes_swapping_aliases_never_lose_previous(churn_registry, lock_kind):
    registry = Registry(Settings.from_env())
    assert (registry.settings.lock_uri is None) == (lock_kind == "file")
    registry.set_alias(f"{NAME}@v1", "production")
    registry.set_alias(f"{NAME}@v2", "production")
    assert aliases_of(registry) == {"production": "2", "previous": "1"}
    swaps = 15  # each process: an odd number, so together they swap an even number of times
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", _SWAPPER, NAME, how, str(swaps)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for how in ("rollback", "promote")
    ]
    results = [job.communicate(timeout=300) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], [err[-2000:] for _, err in results]
    # Every swap read the aliases the previous one wrote: 30 swaps bring back the start.
    assert aliases_of(registry) == {"production": "2", "previous": "1"}


def test_the_lock_is_reentrant_in_a_thread_and_exclusive_across_threads(lock_kind):
    settings = Settings.from_env()
    order = []

    def nested():  # the job holds the lock while it scores, then promotes under it again
        with alias_lock(settings, NAME):
            with alias_lock(settings, NAME):
                other.start()
                other.join(timeout=0.5)
                order.append("nested")
            order.append("outer")

    def another_writer():
        with alias_lock(settings, NAME):
            order.append("other")

    first = threading.Thread(target=nested, daemon=True)
    other = threading.Thread(target=another_writer, daemon=True)
    first.start()
    first.join(timeout=30)
    assert not first.is_alive(), "taking the lock a second time in one thread deadlocked"
    other.join(timeout=30)
    assert order == ["nested", "outer", "other"]


def test_every_alias_write_in_nbmlops_is_under_the_alias_lock():
    """MLflow's alias-writing calls appear only in the registry, inside ``with alias_lock``."""
    writes = {"set_registered_model_alias", "delete_registered_model_alias"}
    package = Path(nbmlops.__file__).parent
    registry_module = package / "registry" / "registry.py"
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.With):
                if any(_calls(item.context_expr, "alias_lock") for item in node.items):
                    for inner in ast.walk(node):
                        inner.locked = True
        calls = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in writes
        ]
        if path != registry_module:
            assert not calls, f"{path} writes aliases itself: use Registry.set_alias"
        unlocked = [node.lineno for node in calls if not getattr(node, "locked", False)]
        assert not unlocked, f"alias writes outside `with alias_lock` at lines {unlocked}"
    assert "set_registered_model_alias" in registry_module.read_text()


def _calls(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Call) and getattr(node.func, "id", None) == name


def test_the_postgresql_lock_is_held_in_the_database_and_dropped_with_its_process(
    postgres_log_uri, monkeypatch
):
    monkeypatch.setenv("NBMLOPS_LOG_URI", postgres_log_uri)
    settings = Settings.from_env()

    def advisory_locks() -> int:
        with psycopg.connect(postgres_log_uri) as db:
            query = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            return db.execute(query).fetchone()[0]

    with alias_lock(settings, NAME):
        assert advisory_locks() == 1, "another machine sees the lock in the database"
    assert advisory_locks() == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, NAME], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    taken = threading.Event()

    def take():
        with alias_lock(settings, NAME):
            taken.set()

    threading.Thread(target=take, daemon=True).start()
    assert not taken.wait(timeout=1.5), "the lock was taken while another process held it"
    holder.kill()  # a crashed process never leaves the model locked
    holder.wait()
    assert taken.wait(timeout=30), "the lock of a killed process was never released"


#: Takes the model's lock, says so, and waits to be killed.
_HOLDER = """
import sys, time
from nbmlops.config import Settings
from nbmlops.registry.registry import alias_lock

with alias_lock(Settings.from_env(), sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""
