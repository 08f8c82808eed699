"""What the code imports is what pyproject.toml declares: nothing arrives only through MLflow."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OWN = {"nbmlops", "tests"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(requirements: list[str]) -> set[str]:
    return {_canonical(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in requirements}


def third_party_imports(folder: str) -> dict[str, str]:
    """Top-level modules imported anywhere under ``folder`` (lazy imports too), each with one
    file that imports it."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        if "fixtures" in path.relative_to(ROOT).parts:
            continue  # old artifacts, copied as they were written
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in OWN and top != "__future__":
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def undeclared(folder: str, declared: set[str]) -> list[str]:
    distributions = packages_distributions()
    problems = []
    for module, path in third_party_imports(folder).items():
        names = {_canonical(d) for d in distributions.get(module, [])}
        if not names:
            problems.append(f"{module} (imported by {path}) is not installed")
        elif not names & declared:
            problems.append(f"{module} (imported by {path}) comes from {sorted(names)}")
    return problems


def test_the_package_declares_every_distribution_it_imports():
    assert undeclared("nbmlops", _declared(PROJECT["dependencies"])) == [], (
        "add these to [project] dependencies in pyproject.toml"
    )


def test_the_tests_import_only_core_and_dev_distributions():
    declared = _declared(PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"])
    assert undeclared("tests", declared) == [], (
        "add these to [project.optional-dependencies] dev in pyproject.toml"
    )


def test_the_import_scan_sees_lazy_imports():
    # these are imported inside functions only: the scan must find them all the same
    assert {"matplotlib", "pyarrow", "yaml", "IPython"} <= set(third_party_imports("nbmlops"))
