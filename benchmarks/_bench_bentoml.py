"""BentoML 1.4 for bench_serving.py: its own virtualenvs, the pipeline file, the command.

BentoML runs from virtualenvs of its own, outside the repository (``~/.cache/nbmlops-bench`` by
default, ``--bentoml-cache`` to move them), never the project's: one with BentoML and the very
versions of scikit-learn, pandas, numpy, scipy and joblib that the project's venv has (the
fitted pipeline is handed over as a joblib pickle, which must load there), and a tuned one with
uvloop and httptools added (uvicorn, under BentoML, picks them up when they are installed: its
``loop`` and ``http`` are ``auto``). Each is made with ``python -m venv`` (the benchmark's own
Python) and ``pip install`` once, then reused while its requirements stay the same (they are
written in the venv as ``nbmlops-bench-requirements.txt`` after a successful install).

The service itself is ``_bench_bentoml_service.py``; the server is ``bentoml serve
_bench_bentoml_service:ChurnService`` from benchmarks/, with its ``BENTOML_HOME`` in the
benchmark's temporary directory and BentoML's usage tracking off.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = Path.home() / ".cache" / "nbmlops-bench"
REQUIREMENT = "bentoml>=1.4,<1.5"
#: installed in BentoML's venvs at the project venv's versions: the pickle must load there
SAME_AS_PROJECT = ("scikit-learn", "pandas", "numpy", "scipy", "joblib", "threadpoolctl")
#: the tuned venv's additions, at the project venv's versions (its uvicorn uses them too)
TUNED_EXTRAS = ("uvloop", "httptools")
#: the api's ``max_batch_size`` in the tuned server (BentoML's default: 100)
TUNED_MAX_BATCH_SIZE = 2000
SERVICE = "_bench_bentoml_service:ChurnService"
MARKER = "nbmlops-bench-requirements.txt"
INSTALL_TIMEOUT = 900


@dataclass(frozen=True)
class Flavour:
    """One way of running BentoML: its venv and its api options."""

    name: str  # the server's name in the results
    venv: str  # the venv's folder under the cache
    extras: tuple[str, ...]
    max_batch_size: int | None  # None: BentoML's default

    def describe(self) -> str:
        if not self.extras and self.max_batch_size is None:
            return "BentoML's defaults"
        return f"`max_batch_size={self.max_batch_size}`, {' + '.join(self.extras)} installed"


DEFAULT = Flavour("BentoML", "bentoml-venv", (), None)
TUNED = Flavour("BentoML+tuned", "bentoml-tuned-venv", TUNED_EXTRAS, TUNED_MAX_BATCH_SIZE)
FLAVOURS = (DEFAULT, TUNED)


def pinned(names) -> list[str]:
    """``name==version`` for each of ``names`` as installed in this (the project's) venv."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


def requirements(flavour: Flavour) -> list[str]:
    return [REQUIREMENT, *pinned(SAME_AS_PROJECT), *pinned(flavour.extras)]


def ensure_venv(flavour: Flavour, cache: Path = CACHE) -> Path:
    """The venv of ``flavour`` under ``cache``, made (or remade) when its requirements changed;
    pip's output goes to ``install.log`` in it."""
    venv = cache / flavour.venv
    wanted = "\n".join(requirements(flavour)) + "\n"
    marker = venv / MARKER
    if marker.is_file() and marker.read_text() == wanted and (venv / "bin" / "bentoml").exists():
        return venv
    print(f"{flavour.name}: installing {', '.join(requirements(flavour))} in {venv}", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    log = venv / "install.log"
    with open(log, "wb") as out:
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", *requirements(flavour)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=INSTALL_TIMEOUT,
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"pip install in {venv} failed ({done.returncode}):\n{tail}")
    marker.write_text(wanted)
    return venv


def write_pipeline(clf, folder: Path) -> Path:
    """The fitted pipeline as a joblib file the service loads."""
    import joblib

    path = folder / "churn-pipeline.joblib"
    joblib.dump(clf, path)
    return path


def command(venv: Path, port: int | str, host: str) -> list[str]:
    return [
        *(str(venv / "bin" / "bentoml"), "serve", SERVICE),
        *("--host", host, "--port", str(port), "--working-dir", str(HERE)),
    ]


def environment(flavour: Flavour, venv: Path, pipeline: Path, home: Path) -> dict[str, str]:
    """The server's environment: BentoML's venv first on PATH, the project's venv and store
    variables gone, benchmarks/ and the repository root importable (``featurize``)."""
    dropped = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "NBMLOPS_HOME", "NBMLOPS_LOG_URI")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    project_bin = str(Path(sys.executable).parent)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != project_bin]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    env["VIRTUAL_ENV"] = str(venv)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT)])
    env["PYTHONUNBUFFERED"] = "1"
    env["BENTOML_HOME"] = str(home)
    env["BENTOML_DO_NOT_TRACK"] = "True"
    env["NBMLOPS_BENCH_PIPELINE"] = str(pipeline)
    env.pop("NBMLOPS_BENCH_MAX_BATCH_SIZE", None)
    if flavour.max_batch_size is not None:
        env["NBMLOPS_BENCH_MAX_BATCH_SIZE"] = str(flavour.max_batch_size)
    return env


def versions(venv: Path, names=("bentoml", "uvicorn", "starlette", *TUNED_EXTRAS)) -> str:
    """``name version`` of ``names`` installed in ``venv`` (those that are)."""
    code = (
        "import importlib.metadata as m, sys\n"
        "for n in sys.argv[1:]:\n"
        "    try: print(n, m.version(n))\n"
        "    except m.PackageNotFoundError: pass\n"
    )
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code, *names],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return ", ".join(done.stdout.split("\n")[:-1]) if done.returncode == 0 else "unknown"
