"""A Docker build context for one registered version: the artifact and its registration copied
in, requirements pinned, and a Dockerfile whose command starts the same server as ``nbmlops
serve``, with no registry at run time.

Layout::

    Dockerfile  .dockerignore  README.md
    requirements.txt     every distribution pinned; nbmlops itself as wheels/nbmlops-*.whl
    registration.json    name, version, aliases, metrics, the registered manifest digest
    model/               the artifact, as registered
"""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from nbmlops.artifact.files import DIGEST_TAG
from nbmlops.artifact.registration import MODEL_FOLDER, Registration, read_registered_copy
from nbmlops.config import Settings
from nbmlops.errors import UsageError
from nbmlops.exports.requirements import nbmlops_requirement, pinned
from nbmlops.registry.registry import Registry

PORT = 8000
#: Where the server keeps its prediction log inside the container (a volume).
STATE_DIR = "/var/lib/nbmlops"
USER_ID = 10001


@dataclass(frozen=True)
class DockerContext:
    """A written build context: where, for which version, on which base image."""

    model: str
    version: str
    path: str
    base_image: str
    port: int
    command: tuple[str, ...]  # the container's command, run in the context's folder
    requirements: int  # pinned distributions
    overrides: tuple[str, ...]  # the artifact's pins that differ from this environment
    artifact_sha256: str | None

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        tag = f"{self.model.lower()}:{self.version}"
        lines = [
            f"{self.model} v{self.version}: Docker build context in {self.path} "
            f"({self.base_image}, {self.requirements} pinned requirements, the artifact and "
            "its registration; no registry needed at run time)",
            f"  build: docker build -t {tag} {self.path}",
            f"  run:   docker run -p {self.port}:{self.port} -e NBMLOPS_TOKEN=SECRET {tag}",
        ]
        lines += [f"  pinned as the artifact asks: {o}" for o in self.overrides]
        return "\n".join(lines)


def export_docker(ref: str, output: Path | None, settings: Settings | None = None) -> DockerContext:
    """Write a build context for ``ref`` to ``output`` (default ``./NAME-vN-docker``), which
    must be missing or empty."""
    registry = Registry(settings or Settings.from_env())
    version = registry.resolve(ref)
    folder = Path(output or f"{version.name}-v{version.version}-docker").absolute()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"{folder} is not empty: give another --output, or remove it first")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        registry.local_path(version),
        folder / MODEL_FOLDER,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    registration = Registration(
        name=version.name,
        version=version.version,
        artifact_sha256=version.tags.get(DIGEST_TAG),
        aliases=version.aliases,
        metrics=dict(version.metrics),
        exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    registration.write(folder)
    read_registered_copy(folder)  # the copy is the registered artifact
    pins, overrides = pinned(folder / MODEL_FOLDER)
    own = nbmlops_requirement(folder / "wheels")
    (folder / "wheels").mkdir(exist_ok=True)
    (folder / "requirements.txt").write_text(_requirements_text(registration, pins, own))
    context = DockerContext(
        model=version.name,
        version=version.version,
        path=str(folder),
        base_image=base_image(),
        port=PORT,
        command=("nbmlops", "serve", ".", "--host", "0.0.0.0", "--port", str(PORT)),
        requirements=len(pins) + 1,
        overrides=overrides,
        artifact_sha256=registration.artifact_sha256,
    )
    (folder / "Dockerfile").write_text(dockerfile(context))
    (folder / ".dockerignore").write_text("**/__pycache__\n**/*.pyc\nREADME.md\n.dockerignore\n")
    (folder / "README.md").write_text(readme(context))
    return context


def base_image() -> str:
    """The slim official image of this interpreter's exact Python version."""
    return "python:{}.{}.{}-slim".format(*sys.version_info[:3])


def _requirements_text(registration: Registration, pins: dict[str, str], own: str) -> str:
    header = (
        f"# {registration.name} v{registration.version}: everything the server needs, pinned "
        f"as installed where it was exported\n# (Python {sys.version.split()[0]}, nbmlops "
        f"{importlib.metadata.version('nbmlops')}), with the artifact's own pins.\n"
    )
    return header + "".join(f"{n}=={v}\n" for n, v in pins.items()) + own + "\n"


def dockerfile(context: DockerContext) -> str:
    """The Dockerfile: pinned requirements on the slim base, the artifact and its registration
    read-only, a non-root user, the prediction log on a volume, a health check."""
    command = ", ".join(f'"{part}"' for part in context.command)
    health = (
        '"python", "-c", "import urllib.request; '
        f"urllib.request.urlopen('http://127.0.0.1:{context.port}/health', timeout=4)\""
    )
    return f"""\
# {context.model} v{context.version}, exported by nbmlops (manifest sha256 \
{context.artifact_sha256 or "not recorded"}).
# Build: docker build -t {context.model.lower()}:{context.version} .
# Run:   docker run -p {context.port}:{context.port} -e NBMLOPS_TOKEN=SECRET \
{context.model.lower()}:{context.version}
ARG PYTHON_IMAGE={context.base_image}
FROM ${{PYTHON_IMAGE}}

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PIP_NO_CACHE_DIR=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    NBMLOPS_HOME={STATE_DIR}

WORKDIR /app
COPY requirements.txt ./
COPY wheels/ ./wheels/
RUN pip install -r requirements.txt

COPY registration.json ./
COPY {MODEL_FOLDER}/ ./{MODEL_FOLDER}/
RUN useradd --system --uid {USER_ID} --home-dir {STATE_DIR} nbmlops \\
    && mkdir -p {STATE_DIR} && chown nbmlops {STATE_DIR}
USER nbmlops
VOLUME {STATE_DIR}

EXPOSE {context.port}
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \\
    CMD [{health}]
# The server refuses to listen on 0.0.0.0 without a token: pass NBMLOPS_TOKEN at run time.
CMD [{command}]
"""


def readme(context: DockerContext) -> str:
    """How to build and run the context, for the platform team."""
    tag = f"{context.model.lower()}:{context.version}"
    return f"""\
# {context.model} v{context.version}: prediction service image

Written by `nbmlops export {context.model}@v{context.version} --format docker`. The image serves
this one version with no registry: the artifact in `{MODEL_FOLDER}/` is checked against the
digest in `registration.json` and every file against its manifest when the server starts.

    docker build -t {tag} .
    docker run -d -p {context.port}:{context.port} -e NBMLOPS_TOKEN=SECRET \\
        -v {context.model.lower()}-log:{STATE_DIR} {tag}
    curl -H 'Authorization: Bearer SECRET' http://127.0.0.1:{context.port}/metadata

- The server requires `NBMLOPS_TOKEN`: without it, it refuses to start on `0.0.0.0`.
- Predictions are logged to `{STATE_DIR}/predictions.db` (a volume); set
  `NBMLOPS_LOG_URI=postgresql://USER@HOST/DB` to log to the team's PostgreSQL instead, so that
  `nbmlops monitor` sees this server's traffic.
- `HEALTHCHECK` calls `/health`; a load balancer should use `/ready`.
- `--build-arg PYTHON_IMAGE=python@sha256:...` pins the base image by digest.
- It runs as user `nbmlops` (uid {USER_ID}); the artifact is read-only to it.
"""
