"""``nbmlops retrain``: run the training notebook with papermill, gate the candidate, promote.

Exit codes: 0 promoted, passed or skipped; 1 the job failed; 2 usage error; 3 gate rejected.
A failed notebook never registers a candidate or promotes anything: a version its
``%%mlops_package`` registered before the failure gets neither ``candidate`` nor an alias.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from nbmlops.config import Settings
from nbmlops.errors import ModelNotFoundError, UsageError
from nbmlops.evaluate import evaluate
from nbmlops.gate import GateDecision, decide, parse_rules
from nbmlops.notebooks import run_notebook
from nbmlops.packaging import JOB_ENV
from nbmlops.registry import PRODUCTION, ModelVersion, Registry

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTED = 0, 1, 2, 3
CANDIDATE = "candidate"
DATA_PARAMETER = "data_path"


@dataclass(frozen=True)
class JobResult:
    """What a retraining job did, for people (``summary``) and schedulers (``exit_code``)."""

    exit_code: int
    outcome: str  # skipped | promoted | passed | rejected | failed
    fired: tuple[tuple[str, str], ...] = ()
    not_fired: tuple[tuple[str, str], ...] = ()
    notebook: str | None = None
    version: str | None = None
    gate: GateDecision | None = None
    message: str = ""

    def summary(self) -> str:
        lines = []
        if self.fired or self.not_fired:
            lines.append(
                "triggers: "
                + ", ".join(
                    [_said(t, "fired") for t in self.fired]
                    + [_said(t, "not fired") for t in self.not_fired]
                )
            )
        if self.message:
            lines.append(self.message)
        if self.gate is not None:
            lines.append("gate: " + ("passed" if self.gate.passed else "REJECTED"))
            lines.extend(f"  {line}" for line in self.gate.lines)
        if self.notebook:
            lines.append(f"executed notebook: {self.notebook}")
        return "\n".join(lines)


def _said(trigger: tuple[str, str], verdict: str) -> str:
    name, reason = trigger
    return f"{name} {verdict}" + (f" ({reason})" if reason else "")


def retrain(
    notebook: str | Path,
    model: str,
    *,
    parameters: dict | None = None,
    when: str | None = None,
    gate: str | None = None,
    promote: str | None = None,
    settings: Settings | None = None,
) -> JobResult:
    """Run one retraining job; see the module docstring for the exit codes."""
    settings = settings or Settings.from_env()
    notebook = Path(notebook)
    if not notebook.is_file():
        raise UsageError(f"notebook {notebook} does not exist")
    registry = Registry(settings)
    parameters = dict(parameters or {})
    production = _production(registry, model)
    data_sha = _data_sha(parameters)
    fired, not_fired = _triggers(when, production, registry, settings, data_sha)
    if when and not fired:
        return JobResult(EXIT_OK, "skipped", fired, not_fired, message="no trigger fired: skipped")
    job = uuid.uuid4().hex[:12]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    output = settings.runs_dir / f"{model}-{stamp}-{job}.ipynb"
    failure = _run(notebook, output, settings, parameters, job)

    def result(exit_code: int, outcome: str, **fields) -> JobResult:
        return JobResult(exit_code, outcome, fired, not_fired, str(output), **fields)

    registered = [v for v in registry.versions(model) if v.tags.get("nbmlops.job_id") == job]
    if failure is not None:
        for version in registered:
            registry.client.set_model_version_tag(
                model, version.version, "nbmlops.job_status", "failed"
            )
        return result(EXIT_FAILED, "failed", message=failure)
    if not registered:
        return result(
            EXIT_FAILED,
            "failed",
            message=f"the notebook ran but registered no version of {model}: does its training "
            f"cell use %%mlops_package {model} ...?",
        )
    candidate = registered[-1]
    registry.set_alias(candidate.ref, CANDIDATE, remember_previous=False)
    _attach_report(registry, candidate, output)
    if data_sha:
        registry.client.set_model_version_tag(
            model, candidate.version, "nbmlops.job.data_sha256", data_sha
        )
    return _gate_and_promote(registry, candidate, job, gate, promote, result)


def _gate_and_promote(registry: Registry, candidate: ModelVersion, job, gate, promote, result):
    """Score candidate and production under the alias lock; promote a passing candidate."""
    model, settings = candidate.name, registry.settings
    eval_file = settings.runs_dir / job / "eval.pkl"
    if not eval_file.is_file():
        return result(
            EXIT_FAILED,
            "failed",
            version=candidate.version,
            message="the gate needs held-out data: give the notebook's %%mlops_package --eval X y",
        )
    x_eval, y_eval = pd.read_pickle(eval_file)
    primary = candidate.tags.get("nbmlops.primary_metric", "f1_macro")
    rules = parse_rules(gate, primary)
    # One job at a time reads production, scores it and moves the aliases.
    with _alias_lock(settings, model):
        production = _production(registry, model)
        candidate_scores = _score(registry, candidate, x_eval, y_eval)
        production_scores = None
        if production is not None and production.version != candidate.version:
            production_scores = _score(registry, production, x_eval, y_eval)
        decision = decide(rules, candidate_scores, production_scores)
        tags = {
            "gate.decision": "passed" if decision.passed else "rejected",
            "gate.rules": ",".join(str(r) for r in rules),
            "gate.production_version": production.version if production_scores else "none",
            **{f"gate.candidate.{k}": f"{v:.6f}" for k, v in candidate_scores.items()},
            **{f"gate.production.{k}": f"{v:.6f}" for k, v in (production_scores or {}).items()},
        }
        for key, value in tags.items():
            registry.client.set_model_version_tag(model, candidate.version, key, value)
        judged = {"version": candidate.version, "gate": decision}
        if not decision.passed:
            message = f"{candidate.ref} was rejected; production is unchanged"
            return result(EXIT_REJECTED, "rejected", message=message, **judged)
        if promote:
            registry.set_alias(candidate.ref, promote)
            message = f"{candidate.ref} is now {model}@{promote}"
            return result(EXIT_OK, "promoted", message=message, **judged)
    message = f"{candidate.ref} passed the gate and is {model}@{CANDIDATE}"
    return result(EXIT_OK, "passed", message=message, **judged)


def _production(registry: Registry, model: str) -> ModelVersion | None:
    try:
        return registry.resolve(f"{model}@{PRODUCTION}")
    except ModelNotFoundError:
        return None


def _triggers(when, production, registry, settings, data_sha):
    if not when:
        return (), ()
    fired, not_fired = [], []
    for trigger in (t.strip() for t in when.split(",") if t.strip()):
        name, _, value = trigger.partition("=")
        if name not in ("drift", "stale", "new-data"):
            raise UsageError(f"--when {trigger!r}: triggers are drift, stale=DURATION, new-data")
        if production is None:
            fired.append((trigger, "no production version yet"))
            continue
        if name == "drift":
            from nbmlops.monitoring import ALERT, monitor

            report = monitor(production.ref, settings=settings)
            (fired if report.status == ALERT else not_fired).append(
                ("drift", f"monitor status {report.status}")
            )
        elif name == "stale":
            from nbmlops.monitoring import parse_duration

            if not value:
                raise UsageError("--when stale needs a duration, e.g. stale=7d")
            from nbmlops.model import load

            created = datetime.fromisoformat(load(production.ref, settings).lineage.created)
            age = datetime.now(UTC) - created
            (fired if age > parse_duration(value) else not_fired).append(
                (trigger, f"production is {age.total_seconds() / 86400:.1f} days old")
            )
        else:
            if data_sha is None:
                raise UsageError(f"--when new-data needs -p {DATA_PARAMETER} FILE")
            recorded = production.tags.get("nbmlops.job.data_sha256")
            reason = "production has no recorded data hash" if recorded is None else ""
            (fired if recorded != data_sha else not_fired).append(("new-data", reason))
    return tuple(fired), tuple(not_fired)


def _data_sha(parameters: dict) -> str | None:
    path = parameters.get(DATA_PARAMETER)
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(
    notebook: Path, output: Path, settings: Settings, parameters: dict, job: str
) -> str | None:
    """Execute the notebook; the failure as one message, or None."""
    from papermill.exceptions import PapermillExecutionError

    os.environ[JOB_ENV] = job
    try:
        run_notebook(notebook, output, settings, parameters)
    except PapermillExecutionError as exc:
        return (
            f"the notebook failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}; "
            f"nothing was promoted; the executed notebook is {output}"
        )
    except Exception as exc:  # noqa: BLE001 - a dead kernel or papermill error is a failed job
        return f"the notebook could not run: {type(exc).__name__}: {exc}; see {output}"
    finally:
        os.environ.pop(JOB_ENV, None)
    return None


def _score(registry: Registry, version: ModelVersion, x_eval, y_eval) -> dict[str, float]:
    from nbmlops.model import load

    model = load(version.ref, registry.settings)
    # new data may well hold categories an older model never saw: it must still be scored
    outputs = model.predict(x_eval, unknown_categories="allow")
    return evaluate(outputs, y_eval, model.schema.task, model.schema.classes)


def _attach_report(registry: Registry, version: ModelVersion, executed: Path) -> None:
    """The executed notebook and its HTML go under ``report/`` in the version's run."""
    if not version.run_id:
        return
    registry.client.log_artifact(version.run_id, str(executed), "report")
    with contextlib.suppress(ImportError):
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_filename(str(executed))
        page = executed.with_suffix(".html")
        page.write_text(body)
        registry.client.log_artifact(version.run_id, str(page), "report")


@contextlib.contextmanager
def _alias_lock(settings: Settings, model: str):
    folder = settings.home / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{model}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_parameters(pairs: list[list[str]], files: list[Path]) -> dict:
    """``-f params.yaml`` files, then ``-p KEY VALUE`` pairs typed as papermill types them."""
    import yaml
    from papermill.cli import _resolve_type  # exactly papermill's own typing of -p values

    parameters: dict = {}
    for file in files:
        data = yaml.safe_load(Path(file).read_text()) or {}
        if not isinstance(data, dict):
            raise UsageError(f"-f {file}: expected a mapping of parameter names to values")
        parameters.update(data)
    for key, value in pairs:
        parameters[key] = _resolve_type(value)
    return parameters
