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

import contextlib
import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from nbmlops.artifact import nbmlops_loader_v1 as loader
from nbmlops.artifact.lineage import Lineage
from nbmlops.artifact.profile import Profile
from nbmlops.artifact.schema import Schema
from nbmlops.errors import ArtifactError, ArtifactModifiedError

FORMAT_VERSION = 1
LOADER_MODULE = "nbmlops_loader_v1"
PREPROCESS_FILE = "nbmlops_preprocess.py"
#: The registry tag holding the SHA-256 of a version's manifest.json, written at packaging.
DIGEST_TAG = "nbmlops.artifact_sha256"


@dataclass(frozen=True)
class SavedEstimator:
    """A fitted estimator serialized for an artifact: with skops where it can be, else with
    joblib, and then ``fallback`` says why (the types skops does not trust, or its error)."""

    format: str  # "skops" or "joblib"
    data: bytes
    fallback: str | None = None

    @property
    def file(self) -> str:
        return f"estimator.{self.format}"


@dataclass(frozen=True)
class ArtifactContents:
    """What goes into an artifact, before it is written."""

    name: str
    estimator: SavedEstimator
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
        estimator = contents.estimator
        (data_dir / estimator.file).write_bytes(estimator.data)
        config = {
            "format_version": FORMAT_VERSION,
            "name": contents.name,
            "task": contents.schema.task,
            "estimator_format": estimator.format,
            "estimator_file": estimator.file,
            "preprocess": list(contents.preprocess),
            "preprocess_file": PREPROCESS_FILE,
            "primary_metric": contents.primary_metric,
        }
        if estimator.fallback is not None:
            config["estimator_fallback"] = estimator.fallback
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


def save_estimator(estimator) -> SavedEstimator:
    """Serialize with skops when every type it needs is trusted, else with joblib (saying why)."""
    import skops.io

    try:
        data = skops.io.dumps(estimator)
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:  # noqa: BLE001 - skops cannot save every object; joblib can
        untrusted = None
        message = " ".join(str(exc).split())[:300]
        fallback = f"skops could not save it ({type(exc).__name__}: {message})"
    if untrusted is not None:
        notebook_types = [t for t in untrusted if t.startswith("__main__.")]
        if notebook_types:
            names = ", ".join(t.removeprefix("__main__.") for t in notebook_types)
            raise ArtifactError(
                f"the model uses {names}, defined in the notebook itself; a server cannot import "
                "it. Move that code into --preprocess functions, or into an installed module."
            )
        refused = [t for t in untrusted if not t.startswith(loader.TRUSTED_PREFIXES)]
        if not refused:
            return SavedEstimator("skops", data)
        fallback = f"skops does not trust {', '.join(refused)}"
    import joblib

    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    return SavedEstimator("joblib", buffer.getvalue(), fallback)


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


@dataclass(frozen=True)
class ArtifactFiles:
    """The readable files of an artifact on disk, each parsed from the bytes checked against
    the manifest; ``digest`` is the manifest's SHA-256."""

    root: Path
    schema: Schema
    profile: Profile
    lineage: Lineage
    config: dict
    card_markdown: str
    manifest: loader.Manifest = field(repr=False, compare=False)

    @property
    def digest(self) -> str:
        return self.manifest.sha256

    @classmethod
    def read(
        cls,
        root: Path,
        registered_sha256: str | None = None,
        version: str | None = None,
        keep_model: bool = False,
    ) -> ArtifactFiles:
        """Read the artifact at ``root``, checking every file against its manifest first.

        Parameters
        ----------
        registered_sha256 : the manifest digest the registry recorded for ``version`` (e.g.
            ``churn v3``, tag ``nbmlops.artifact_sha256``); another manifest is refused.
        keep_model : keep the checked bytes of the estimator and the preprocessing for
            :meth:`predictor`, which then reads nothing again (the server loads at once;
            ``nbmlops.load`` loads on first predict and reads them then, checked again).
        """
        root = Path(root)
        if not (root / "MLmodel").is_file():
            raise ArtifactError(f"{root} is not an nbmlops artifact (it has no MLmodel file)")
        with _refusals(root):
            manifest = loader.Manifest(root)
            if registered_sha256 is not None and manifest.sha256 != registered_sha256:
                raise ArtifactModifiedError(
                    str(root),
                    loader.MANIFEST,
                    f"is not the one registered for {version}: its SHA-256 is {manifest.sha256}, "
                    f"the registry recorded {registered_sha256} (tag {DIGEST_TAG})",
                )
            config = json.loads(manifest.read(loader.CONFIG))
            model_files = [f for f in manifest.model_files(config) if f]  # names confined
            texts = {name: manifest.read(name) for name in _READ}
            manifest.check(keep=model_files if keep_model else ())
        return cls(
            root=root,
            schema=Schema.from_dict(json.loads(texts["schema.json"])),
            profile=Profile.from_dict(json.loads(texts["profile.json"])),
            lineage=Lineage.from_dict(json.loads(texts["lineage.json"])),
            config=config,
            card_markdown=texts["card.md"].decode(),
            manifest=manifest,
        )

    def predictor(self) -> loader.ArtifactPredictor:
        """The estimator and preprocessing, loaded from bytes checked against the manifest."""
        with _refusals(self.root):
            return loader.ArtifactPredictor(self.root, self.manifest, self.config)


_READ = ("schema.json", "profile.json", "lineage.json", "card.md")


@contextlib.contextmanager
def _refusals(root: Path):
    """The loader's refusals as nbmlops errors (the loader cannot import nbmlops)."""
    try:
        yield
    except loader.ArtifactCheckError as exc:
        if exc.modified:
            raise ArtifactModifiedError(str(root), exc.file, exc.reason) from None
        raise ArtifactError(str(exc)) from None
