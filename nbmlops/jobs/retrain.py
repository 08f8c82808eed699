"""``nbmlops retrain``: run the training notebook with papermill, gate the candidate, promote.

Exit codes: 0 promoted, passed or skipped; 1 the job failed; 2 usage error; 3 gate rejected.
A failed notebook never registers a candidate or promotes anything: a version its
``%%mlops_package`` registered before the failure gets neither ``candidate`` nor an alias.
Options are checked before the notebook runs, ``--gate`` metrics against the task of the
model's registered versions; a new model's task is known only after the run, which then ends
as a usage error too, with nothing promoted.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from nbmlops.config import Settings
from nbmlops.errors import ModelNotFoundError, UsageError
from nbmlops.jobs.gate import GateDecision, check_metrics, decide, parse_rules
from nbmlops.jobs.notebooks import html_copy, run_notebook
from nbmlops.jobs.triggers import DRIFT_WINDOW, data_sha256, fired_triggers
from nbmlops.monitoring.monitor import parse_duration
from nbmlops.packaging.evaluate import evaluate
from nbmlops.packaging.package import JOB_ENV
from nbmlops.registry.registry import PRODUCTION, ModelVersion, Registry, alias_lock

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTED = 0, 1, 2, 3
CANDIDATE = "candidate"


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
    drift_window: str = DRIFT_WINDOW,
    settings: Settings | None = None,
) -> JobResult:
    """Run one retraining job; see the module docstring for the exit codes.

    ``drift_window``: the ``drift`` trigger judges production's traffic over this duration
    ending now, or since the last retraining job when that is later.
    """
    settings = settings or Settings.from_env()
    notebook = Path(notebook)
    if not notebook.is_file():
        raise UsageError(f"notebook {notebook} does not exist")
    parse_duration(drift_window, "--drift-window")
    registry = Registry(settings)
    parameters = dict(parameters or {})
    production = _production(registry, model)
    if gate:
        check_metrics(parse_rules(gate, ""), _known_task(registry, model, production))
    data_sha = data_sha256(parameters)
    fired, not_fired = fired_triggers(when, production, registry, settings, data_sha, drift_window)
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
    rules = _rules(registry, candidate, gate, output)
    registry.set_alias(
        candidate.ref, CANDIDATE, remember_previous=False, reason="job", detail=f"job {job}"
    )
    _attach_report(registry, candidate, output)
    if data_sha:
        registry.client.set_model_version_tag(
            model, candidate.version, "nbmlops.job.data_sha256", data_sha
        )
    return _gate_and_promote(registry, candidate, job, rules, promote, result)


def _known_task(registry: Registry, model: str, production: ModelVersion | None) -> str | None:
    """The task of production, else of the latest version; None for a new model."""
    versions = [production] if production else registry.versions(model)[-1:]
    return versions[0].tags.get("nbmlops.task") if versions else None


def _rules(registry: Registry, candidate: ModelVersion, gate: str | None, output: Path):
    """The gate's rules for the candidate's task; a metric it cannot score is a usage error
    that leaves the candidate without alias, tagged failed."""
    rules = parse_rules(gate, candidate.tags.get("nbmlops.primary_metric", "f1_macro"))
    try:
        check_metrics(rules, candidate.tags.get("nbmlops.task"))
    except UsageError as exc:
        registry.client.set_model_version_tag(
            candidate.name, candidate.version, "nbmlops.job_status", "failed"
        )
        raise UsageError(
            f"{exc}; the notebook registered {candidate.ref}, which is not {CANDIDATE} and "
            f"was not promoted; the executed notebook is {output}"
        ) from None
    return rules


def _gate_and_promote(registry: Registry, candidate: ModelVersion, job, rules, promote, result):
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
    # One job at a time reads production, scores it and moves the aliases.
    with alias_lock(settings, model):
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
            registry.set_alias(candidate.ref, promote, reason="job", detail=f"job {job}")
            message = f"{candidate.ref} is now {model}@{promote}"
            return result(EXIT_OK, "promoted", message=message, **judged)
    message = f"{candidate.ref} passed the gate and is {model}@{CANDIDATE}"
    return result(EXIT_OK, "passed", message=message, **judged)


def _production(registry: Registry, model: str) -> ModelVersion | None:
    try:
        return registry.resolve(f"{model}@{PRODUCTION}")
    except ModelNotFoundError:
        return None


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
    from nbmlops.registry.load import load

    model = load(version.ref, registry.settings)
    # new data may well hold categories an older model never saw: it must still be scored
    outputs = model.predict(x_eval, unknown_categories="allow")
    return evaluate(outputs, y_eval, model.schema.task, model.schema.classes)


def _attach_report(registry: Registry, version: ModelVersion, executed: Path) -> None:
    """The executed notebook and its HTML go under ``report/`` in the version's run."""
    if not version.run_id:
        return
    registry.client.log_artifact(version.run_id, str(executed), "report")
    registry.client.log_artifact(version.run_id, str(html_copy(executed)), "report")


def load_parameters(pairs: list[list[str]], files: list[Path]) -> dict:
    """``-f params.yaml`` files, then ``-p KEY VALUE`` pairs typed as papermill types them."""
    import yaml

    parameters: dict = {}
    for file in files:
        data = yaml.safe_load(Path(file).read_text()) or {}
        if not isinstance(data, dict):
            raise UsageError(f"-f {file}: expected a mapping of parameter names to values")
        parameters.update(data)
    for key, value in pairs:
        parameters[key] = typed(value)
    return parameters


def typed(value: str):
    """A ``-p`` value as papermill's command line types it: ``True``, ``False`` and ``None``,
    then anything ``int()`` reads, then anything ``float()`` reads, else the text itself."""
    if value in _CONSTANTS:
        return _CONSTANTS[value]
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


_CONSTANTS = {"True": True, "False": False, "None": None}
