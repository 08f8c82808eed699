"""Integrity, not only consistency: the manifest is bound to the registry, file names stay in the
artifact's folder, what is loaded is what was checked, a joblib fallback says why (SPEC 3, 12)."""

from __future__ import annotations

import json
import operator
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pytest
import skops.io
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import nbmlops
from nbmlops.artifact import nbmlops_loader_v1 as loader
from nbmlops.artifact.files import ArtifactFiles
from nbmlops.config import Settings
from nbmlops.datasets import make_churn
from nbmlops.errors import ArtifactError, ArtifactModifiedError, NbmlopsError
from nbmlops.registry.registry import Registry
from nbmlops.serving.process import serve
from tests.capture_examples import add_charge_per_call
from tests.churn_store import build_pipeline, notebook_predictions

OLD = Path(__file__).resolve().parent.parent / "fixtures" / "churn-bbeeb50"
ESTIMATOR = "data/nbmlops/estimator.skops"
PREPROCESS = "code/nbmlops_preprocess.py"


@dataclass(frozen=True)
class Guarded:
    settings: Settings
    path: Path
    X: pd.DataFrame
    expected: pd.DataFrame
    impostor: bytes  # a valid skops estimator of another model, predicting the opposite


@pytest.fixture(scope="module", name="packaged")
def packaged_fixture(tmp_path_factory):
    """Version 1 of ``guarded`` in a store of its own, and a pristine copy of its artifact."""
    home = tmp_path_factory.mktemp("guarded-store") / ".nbmlops"
    settings = Settings.from_env({"NBMLOPS_HOME": str(home)})
    df = make_churn(400, seed=2)
    X, y = df.drop(columns="churned"), df["churned"]
    model = build_pipeline(1.0).fit(add_charge_per_call(X), y)
    nbmlops.package("guarded", model, X, preprocess=[add_charge_per_call], settings=settings)
    path = nbmlops.load("guarded", settings).path
    pristine = home.parent / "pristine"
    shutil.copytree(path, pristine)
    impostor = skops.io.dumps(build_pipeline(1.0).fit(add_charge_per_call(X), 1 - y))
    rows = X.head(20)
    return Guarded(settings, path, rows, notebook_predictions(model, rows), impostor), pristine


@pytest.fixture
def guarded(packaged, monkeypatch):
    """The ``guarded`` artifact, which the test may modify; restored afterwards."""
    artifact, pristine = packaged
    monkeypatch.setenv("NBMLOPS_HOME", str(artifact.settings.home))
    yield artifact
    shutil.rmtree(artifact.path)
    shutil.copytree(pristine, artifact.path)


def reseal(root: Path, extra: dict[str, str] | None = None) -> None:
    """Rewrite manifest.json to match the files as they are now: a consistent forgery."""
    files = {
        p.relative_to(root).as_posix(): loader.sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != loader.MANIFEST
    }
    files.update(extra or {})
    (root / loader.MANIFEST).write_text(json.dumps({"format_version": 1, "files": files}))


def assert_predicts(model, artifact: Guarded) -> None:
    pd.testing.assert_frame_equal(
        model.predict(artifact.X), artifact.expected, check_exact=False, atol=1e-9
    )


# -- the manifest is bound to the registry ------------------------------------------------------


def test_a_rewritten_manifest_is_refused_for_the_registered_version(guarded):
    (guarded.path / ESTIMATOR).write_bytes(guarded.impostor)
    reseal(guarded.path)

    for attempt in (
        lambda: nbmlops.load("guarded"),
        lambda: nbmlops.load("guarded@v1"),
        lambda: nbmlops.monitor("guarded"),
    ):
        with pytest.raises(ArtifactModifiedError) as info:
            attempt()
        message = str(info.value)
        assert info.value.file == "manifest.json"
        assert "not the one registered for guarded v1" in message
        assert "nbmlops.artifact_sha256" in message
        assert "package the model again or restore the original file" in message

    with pytest.raises(ArtifactModifiedError, match="not the one registered for guarded v1"):
        serve("guarded", settings=guarded.settings, timeout=60)

    # The folder alone is only consistent: without the registry, the forgery would pass.
    forged = nbmlops.load(guarded.path).predict(guarded.X)
    assert (forged["prediction"] != guarded.expected["prediction"]).all()


def test_a_version_registered_without_the_digest_tag_loads_as_before(settings):
    Registry(settings).register(
        "old",
        OLD / "artifact",
        metrics={},
        params={},
        run_tags={},
        version_tags={},
        description=None,
    )
    rows = pd.DataFrame(json.loads((OLD / "rows.json").read_text()))
    predicted = pd.read_csv(OLD / "predictions.csv")
    got = nbmlops.load("old", settings).predict(rows).reset_index(drop=True)
    assert got["prediction"].tolist() == predicted["prediction"].tolist()


# -- file names stay in the artifact's folder ---------------------------------------------------


def set_config(root: Path, **changes) -> None:
    config_path = root / loader.CONFIG
    config = json.loads(config_path.read_text())
    config.update(changes)
    config_path.write_text(json.dumps(config))


def outside_file(root: Path) -> Path:
    outside = root.parent.parent / "outside" / "helper.py"
    outside.parent.mkdir(exist_ok=True)
    outside.write_text("SECRET = 1\n")
    return outside


def estimator_outside(root: Path) -> tuple[str, str]:
    set_config(root, estimator_file="../../../outside.skops")
    reseal(root)
    return loader.CONFIG, "'../../../outside.skops' as its estimator_file"


def preprocess_absolute(root: Path) -> tuple[str, str]:
    set_config(root, preprocess_file="/etc/passwd")
    reseal(root)
    return loader.CONFIG, "'/etc/passwd' as its preprocess_file"


def manifest_lists_outside(root: Path) -> tuple[str, str]:
    outside = outside_file(root)
    reseal(root, {"../../outside/helper.py": loader.sha256_file(outside)})
    return "../../outside/helper.py", "leads outside the artifact folder"


def listed_link_outside(root: Path) -> tuple[str, str]:
    outside = outside_file(root)
    (root / "code" / "helper.py").symlink_to(outside)
    reseal(root, {"code/helper.py": loader.sha256_file(outside)})
    return "code/helper.py", "leads outside the artifact folder"


def unlisted_link_outside(root: Path) -> tuple[str, str]:
    (root / "code" / "lib").symlink_to(outside_file(root).parent, target_is_directory=True)
    return "code/lib", "outside the artifact folder"


@pytest.mark.parametrize(
    "forge",
    [
        estimator_outside,
        preprocess_absolute,
        manifest_lists_outside,
        listed_link_outside,
        unlisted_link_outside,
    ],
)
def test_a_file_name_leading_outside_the_folder_is_refused(guarded, forge):
    file, words = forge(guarded.path)
    with pytest.raises(ArtifactModifiedError) as info:
        nbmlops.load(guarded.path)
    assert info.value.file == file
    assert words in str(info.value)
    with pytest.raises(Exception, match="Refusing to load it") as info:
        mlflow.pyfunc.load_model(str(guarded.path))
    assert file in str(info.value) and words in str(info.value)


# -- what is loaded is what was checked ---------------------------------------------------------


def test_the_server_loads_the_bytes_it_checked_not_what_is_on_disk_later(guarded):
    files = ArtifactFiles.read(guarded.path, keep_model=True)
    (guarded.path / ESTIMATOR).write_bytes(guarded.impostor)
    preprocess = guarded.path / PREPROCESS
    preprocess.write_text(preprocess.read_text().replace("/", "*"))
    assert_predicts(files.predictor(), guarded)


def test_nbmlops_load_checks_the_estimator_again_when_it_reads_it(guarded):
    model = nbmlops.load(guarded.path)  # checked; the estimator is read on first predict
    (guarded.path / ESTIMATOR).write_bytes(guarded.impostor)
    with pytest.raises(ArtifactModifiedError) as info:
        model.predict(guarded.X)
    assert info.value.file == ESTIMATOR
    assert "has changed" in str(info.value)


def test_untrusted_types_in_a_skops_file_are_an_nbmlops_error(guarded):
    """The loader's own error (it cannot import nbmlops) reaches users in nbmlops' tree."""
    numeric = ["tenure_months", "monthly_charges"]
    untrusted = make_pipeline(FunctionTransformer(operator.pos), LogisticRegression())
    untrusted.fit(guarded.X[numeric].fillna(0), guarded.expected["prediction"])
    (guarded.path / ESTIMATOR).write_bytes(skops.io.dumps(untrusted))
    reseal(guarded.path)
    model = nbmlops.load(guarded.path)
    with pytest.raises(ArtifactError) as info:
        model.predict(guarded.X)
    assert isinstance(info.value, NbmlopsError)
    assert "needs types outside the trusted set: _operator.pos" in str(info.value)
    assert ESTIMATOR in str(info.value)


# -- a joblib fallback says why -----------------------------------------------------------------


def test_a_joblib_fallback_names_the_types_that_forced_it(settings):
    df = make_churn(200, seed=1)
    X, y = df[["tenure_months", "monthly_charges", "support_calls"]], df["churned"]
    model = make_pipeline(FunctionTransformer(operator.pos), SimpleImputer(), LogisticRegression())
    model.fit(X, y)
    packaged = nbmlops.package("fallback", model, X, settings=settings)
    why = "skops does not trust _operator.pos"

    loaded = nbmlops.load("fallback", settings)
    assert loaded.files.config["estimator_format"] == "joblib"
    assert loaded.files.config["estimator_fallback"] == why
    for shown in (
        repr(packaged),  # what %%mlops_package and nbmlops.package show
        packaged._repr_html_(),
        loaded.files.card_markdown,  # card.md in the artifact
        loaded.card.to_text(),  # nbmlops models show
    ):
        assert "joblib, not skops" in shown and why in shown
    assert (loaded.predict(X)["prediction"].to_numpy() == model.predict(X)).all()


def test_a_skops_artifact_mentions_no_fallback(guarded):
    model = nbmlops.load("guarded")
    assert "estimator_fallback" not in model.files.config
    assert "joblib" not in model.card.to_text()
    assert not any(os.sep + "estimator.joblib" in str(p) for p in guarded.path.rglob("*"))
