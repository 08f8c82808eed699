"""Pinned requirements for a build context: every distribution nbmlops needs, transitively, at
the version installed here, with the artifact's own pins winning where they differ, and
nbmlops itself as a wheel built from the source it was installed from (or from the index)."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from nbmlops.errors import ArtifactError

ROOT = "nbmlops"


def installed_closure(root: str = ROOT) -> dict[str, str]:
    """Every distribution ``root`` requires here, transitively (markers evaluated for this
    interpreter, extras followed), mapped to its installed version; ``root`` excluded."""
    pins: dict[str, str] = {}
    visited: set[tuple[str, frozenset]] = set()
    todo: list[tuple[str, frozenset]] = [(root, frozenset())]
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in visited:
            continue
        visited.add((canonicalize_name(name), extras))
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement this environment never installed
        if canonicalize_name(name) != canonicalize_name(root):
            pins[canonicalize_name(dist.metadata["Name"])] = dist.version
        environments = [{"extra": extra} for extra in extras or {""}]
        for text in dist.requires or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate(env) for env in environments):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return dict(sorted(pins.items()))


def artifact_pins(artifact: Path) -> dict[str, str]:
    """The ``NAME==VERSION`` lines of the artifact's ``requirements.txt``."""
    pins = {}
    path = Path(artifact) / "requirements.txt"
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            requirement = Requirement(line.split("#", 1)[0].strip())
        except InvalidRequirement:
            continue
        exact = [s.version for s in requirement.specifier if s.operator == "=="]
        if exact:
            pins[canonicalize_name(requirement.name)] = exact[0]
    return pins


def pinned(artifact: Path) -> tuple[dict[str, str], tuple[str, ...]]:
    """The installed closure with the artifact's pins applied, and the pins that differed from
    what is installed here (the model needs them, so they win; a conflict shows at build)."""
    pins = installed_closure()
    overrides = []
    for name, version in artifact_pins(artifact).items():
        if pins.get(name, version) != version:
            overrides.append(f"{name}=={version} (installed here: {pins[name]})")
        pins[name] = version
    return dict(sorted(pins.items())), tuple(overrides)


def nbmlops_requirement(wheels: Path) -> str:
    """How the context installs nbmlops: a wheel built into ``wheels`` from the local source it
    was installed from (the line is relative to the context), else ``nbmlops==VERSION``."""
    version = importlib.metadata.version(ROOT)
    sources = (_local_source(d) for d in importlib.metadata.distributions(name=ROOT))
    source = next((s for s in sources if s is not None), None)
    if source is None:
        return f"{ROOT}=={version}"
    wheels.mkdir(parents=True, exist_ok=True)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q"]
        + ["--wheel-dir", str(wheels), str(source)],
        capture_output=True,
        text=True,
    )
    found = sorted(wheels.glob(f"{ROOT}-*.whl"))
    if built.returncode != 0 or not found:
        tail = "\n".join(built.stderr.strip().splitlines()[-5:])
        raise ArtifactError(
            f"could not build the nbmlops wheel from {source} for the context:\n{tail}\n"
            "Check that pip can reach a package index (it builds in isolation), or install "
            "nbmlops from a package index."
        )
    return f"./{wheels.name}/{found[-1].name}"


def _local_source(dist) -> Path | None:
    """The source folder ``dist`` was installed from (``pip install [-e] PATH``), if it exists
    (an ``egg-info`` beside the source, found first on ``sys.path``, does not say)."""
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    url = json.loads(text)
    parsed = urlparse(url.get("url", ""))
    if "dir_info" not in url or parsed.scheme != "file":
        return None
    path = Path(unquote(parsed.path))
    return path if (path / "pyproject.toml").is_file() else None
