"""The public surface of nbmlops, and where lineage finds the notebook's path."""

from __future__ import annotations

import types

import pytest

import nbmlops
from nbmlops import errors
from nbmlops.artifact.lineage import notebook_path

EXPECTED_EXPORTS = {
    "AliasEvent",
    "ArtifactError",
    "ArtifactModifiedError",
    "BatchError",
    "BatchResult",
    "CaptureError",
    "DeploymentPlan",
    "DockerContext",
    "LogError",
    "JobResult",
    "LoadedModel",
    "ModelNotFoundError",
    "MonitorReport",
    "NbmlopsError",
    "OnnxExport",
    "PackagedVersion",
    "ParityError",
    "RegistryError",
    "ServerHandle",
    "ServingError",
    "StreamError",
    "StreamHandle",
    "UsageError",
    "ValidationError",
    "export",
    "history",
    "load",
    "load_ipython_extension",
    "monitor",
    "package",
    "plan",
    "predict",
    "promote",
    "retrain",
    "rollback",
    "serve",
    "stream",
}


def test_all_is_exactly_the_public_api():
    assert set(nbmlops.__all__) == EXPECTED_EXPORTS
    assert len(nbmlops.__all__) == len(set(nbmlops.__all__)), "duplicates in __all__"


@pytest.mark.parametrize("name", sorted(EXPECTED_EXPORTS))
def test_every_exported_name_exists(name):
    assert getattr(nbmlops, name, None) is not None


def test_every_public_attribute_is_exported():
    # Like httpx's test_exported_members: a public name is either in __all__ or a submodule.
    public = {
        name
        for name in dir(nbmlops)
        if not name.startswith("_") and not isinstance(getattr(nbmlops, name), types.ModuleType)
    }
    assert public == set(nbmlops.__all__)


def test_exported_errors_are_the_hierarchy_of_errors_py():
    for name in EXPECTED_EXPORTS:
        value = getattr(nbmlops, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert value is getattr(errors, name)
            assert issubclass(value, nbmlops.NbmlopsError)
    assert issubclass(nbmlops.ModelNotFoundError, nbmlops.RegistryError)
    assert issubclass(nbmlops.ArtifactModifiedError, nbmlops.ArtifactError)
    assert issubclass(nbmlops.ParityError, nbmlops.ArtifactError)


def test_version_is_a_string():
    assert isinstance(nbmlops.__version__, str)
    assert nbmlops.__version__.count(".") >= 1


# -- notebook_path -------------------------------------------------------------------------------

SOURCES = [
    # (where the path comes from, how it is given)
    ("explicit", "explicit/a.ipynb"),
    ("NBMLOPS_NOTEBOOK_PATH", "env/b.ipynb"),
    ("__vsc_ipynb_file__", "/vscode/c.ipynb"),
    ("__session__", "lab/d.ipynb"),
    ("JPY_SESSION_NAME", "/jpy/e.ipynb"),
    ("PAPERMILL_INPUT_PATH", "runs/f.ipynb"),
]
ENV_KEYS = {"NBMLOPS_NOTEBOOK_PATH", "JPY_SESSION_NAME", "PAPERMILL_INPUT_PATH"}
NS_KEYS = {"__vsc_ipynb_file__", "__session__"}


def lookup(values: dict[str, object]):
    """Call notebook_path with each value placed where its front end puts it."""
    env = {k: v for k, v in values.items() if k in ENV_KEYS}
    user_ns = {k: v for k, v in values.items() if k in NS_KEYS}
    return notebook_path(user_ns, env=env, explicit=values.get("explicit"))


@pytest.mark.parametrize(("source", "path"), SOURCES)
def test_each_source_alone_is_found(source, path):
    assert lookup({source: path}) == path


@pytest.mark.parametrize("index", range(len(SOURCES)))
def test_sources_are_tried_in_the_documented_order(index):
    # All the sources from ``index`` on are set; the first of them wins.
    values = dict(SOURCES[index:])
    assert lookup(values) == SOURCES[index][1]


@pytest.mark.parametrize("index", range(len(SOURCES) - 1))
def test_a_value_that_is_not_a_notebook_path_is_skipped(index):
    # A console session, a script or a folder is not the notebook: fall through to the next.
    values = dict(SOURCES[index:])
    values[SOURCES[index][0]] = "console-1f2e"
    assert lookup(values) == SOURCES[index + 1][1]


@pytest.mark.parametrize(
    "value", ["", "train.py", "notebooks/", "Untitled.ipynb.bak", "a.ipynb/", "console-1"]
)
def test_nothing_known_gives_none_never_a_wrong_path(value):
    assert lookup({source: value for source, _ in SOURCES}) is None


def test_non_string_values_are_ignored():
    assert notebook_path({"__session__": None, "__vsc_ipynb_file__": 3}, env={}) is None


def test_nothing_at_all_gives_none():
    assert notebook_path({}, env={}) is None


def test_environment_defaults_to_os_environ(monkeypatch):
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    assert notebook_path({}) is None
    monkeypatch.setenv("PAPERMILL_INPUT_PATH", "/jobs/train.ipynb")
    assert notebook_path({}) == "/jobs/train.ipynb"
    monkeypatch.setenv("NBMLOPS_NOTEBOOK_PATH", "/work/explore.ipynb")
    assert notebook_path({}) == "/work/explore.ipynb"
    assert notebook_path({}, explicit="given.ipynb") == "given.ipynb"
