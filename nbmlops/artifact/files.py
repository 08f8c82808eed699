"""The artifact directory: an MLflow pyfunc model plus nbmlops' own files, sealed by a manifest.

Layout::

    MLmodel, conda.yaml, python_env.yaml, requirements.txt   (MLflow's files)
    code/nbmlops_loader_v1.py      the pyfunc loader (shared with nbmlops itself)
    code/nbmlops_preprocess.py     the captured preprocessing source
    data/nbmlops/estimator.skops   the fitted estimator (or estimator.joblib)
    data/nbmlops/config.json       loader configuration
    schema.json profile.json lineage.json card.md
    manifest.json                  SHA-256 of every file above
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nbmlops.artifact import nbmlops_loader_v1 as loader
from nbmlops.artifact.lineage import Lineage
from nbmlops.artifact.profile import Profile
from nbmlops.artifact.schema import Schema
from nbmlops.errors import ArtifactError, ArtifactModifiedError

FORMAT_VERSION = 1
LOADER_MODULE = "nbmlops_loader_v1"
PREPROCESS_FILE = "nbmlops_preprocess.py"


@dataclass(frozen=True)
class ArtifactContents:
    """What goes into an artifact, before it is written."""

    name: str
    estimator: object
    preprocess: tuple[str, ...]  # the captured functions, applied in order
    preprocess_source: str | None  # their module's source, None without preprocessing
    schema: Schema
    profile: Profile
    lineage: Lineage
    requirements: tuple[str, ...]
    card_markdown: str
    primary_metric: str


def write_artifact(contents: ArtifactContents, dest: Path) -> Path:
    """Write the artifact to the empty or missing folder ``dest`` and seal it with a manifest."""
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix="nbmlops-stage-") as stage_dir:
        stage = Path(stage_dir)
        data_dir = stage / "nbmlops"
        data_dir.mkdir()
        estimator_format, estimator_file = _save_estimator(contents.estimator, data_dir)
        config = {
            "format_version": FORMAT_VERSION,
            "name": contents.name,
            "task": contents.schema.task,
            "estimator_format": estimator_format,
            "estimator_file": estimator_file,
            "preprocess": list(contents.preprocess),
            "preprocess_file": PREPROCESS_FILE,
            "primary_metric": contents.primary_metric,
        }
        _write_json(data_dir / "config.json", config)
        code_paths = [str(Path(loader.__file__))]
        if contents.preprocess_source is not None:
            preprocess = stage / PREPROCESS_FILE
            preprocess.write_text(contents.preprocess_source)
            code_paths.append(str(preprocess))
        mlflow.pyfunc.save_model(
            path=str(dest),
            loader_module=LOADER_MODULE,
            data_path=str(data_dir),
            code_paths=code_paths,
            pip_requirements=list(contents.requirements),
            metadata={"nbmlops_format": FORMAT_VERSION, "task": contents.schema.task},
        )
    _write_json(dest / "schema.json", contents.schema.to_dict())
    _write_json(dest / "profile.json", contents.profile.to_dict())
    _write_json(dest / "lineage.json", contents.lineage.to_dict())
    (dest / "card.md").write_text(contents.card_markdown)
    _write_manifest(dest)
    return dest


def _save_estimator(estimator, data_dir: Path) -> tuple[str, str]:
    """Save with skops when every type it needs is trusted, else joblib."""
    import skops.io

    path = data_dir / "estimator.skops"
    try:
        skops.io.dump(estimator, path)
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception:  # noqa: BLE001 - skops cannot save every object; joblib can
        untrusted = None
    if untrusted is not None:
        notebook_types = [t for t in untrusted if t.startswith("__main__.")]
        if notebook_types:
            path.unlink()
            names = ", ".join(t.removeprefix("__main__.") for t in notebook_types)
            raise ArtifactError(
                f"the model uses {names}, defined in the notebook itself; a server cannot import "
                "it. Move that code into --preprocess functions, or into an installed module."
            )
        if all(t.startswith(loader.TRUSTED_PREFIXES) for t in untrusted):
            return "skops", path.name
    path.unlink(missing_ok=True)
    import joblib

    joblib.dump(estimator, data_dir / "estimator.joblib")
    return "joblib", "estimator.joblib"


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=False, allow_nan=True) + "\n")


def _write_manifest(root: Path) -> None:
    files = {
        p.relative_to(root).as_posix(): loader.sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
    _write_json(root / loader.MANIFEST, {"format_version": FORMAT_VERSION, "files": files})


def manifest_digest(root: Path) -> str:
    """SHA-256 of ``manifest.json``: one hash that stands for the whole artifact."""
    return loader.sha256_file(Path(root) / loader.MANIFEST)


def verify(root: Path) -> None:
    """Raise :class:`ArtifactModifiedError` when any file differs from the manifest."""
    problem = loader.manifest_problem(Path(root))
    if problem is not None:
        raise ArtifactModifiedError(str(root), *problem)


@dataclass(frozen=True)
class ArtifactFiles:
    """The readable files of an artifact on disk, loaded after verifying the manifest."""

    root: Path
    schema: Schema
    profile: Profile
    lineage: Lineage
    config: dict
    card_markdown: str

    @classmethod
    def read(cls, root: Path) -> ArtifactFiles:
        root = Path(root)
        if not (root / "MLmodel").is_file():
            raise ArtifactError(f"{root} is not an nbmlops artifact (it has no MLmodel file)")
        verify(root)
        return cls(
            root=root,
            schema=Schema.from_dict(_read_json(root / "schema.json")),
            profile=Profile.from_dict(_read_json(root / "profile.json")),
            lineage=Lineage.from_dict(_read_json(root / "lineage.json")),
            config=_read_json(root / loader.CONFIG),
            card_markdown=(root / "card.md").read_text(),
        )


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())
