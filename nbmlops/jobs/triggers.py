"""When a retraining job runs: ``--when drift,stale=7d,new-data`` judged against production.

``drift`` judges production's recent traffic only: the ``--drift-window`` (default 7 days)
ending now, or the traffic since the last retraining job of the model when that started
later (the later start wins), so drift a job already answered, or long diluted by clean
traffic, does not decide.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from nbmlops.errors import UsageError

DATA_PARAMETER = "data_path"
DRIFT_WINDOW = "7d"


def fired_triggers(when, production, registry, settings, data_sha, drift_window=DRIFT_WINDOW):
    """The triggers of ``when`` that fired and those that did not, each ``(name, reason)``;
    with no production version yet every trigger fires."""
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
            from nbmlops.monitoring.report import ALERT

            report, basis = _recent_monitor(production, registry, settings, drift_window)
            reason = (
                f"monitor status {report.status} on {report.n_predictions} predictions since "
                f"{report.window_start}, {basis}"
            )
            (fired if report.status == ALERT else not_fired).append(("drift", reason))
        elif name == "stale":
            from nbmlops.monitoring.monitor import parse_duration

            if not value:
                raise UsageError("--when stale needs a duration, e.g. stale=7d")
            from nbmlops.registry.load import load

            created = datetime.fromisoformat(load(production.ref, settings).lineage.created)
            age = datetime.now(UTC) - created
            (fired if age > parse_duration(value, "--when stale") else not_fired).append(
                (trigger, f"production is {age.total_seconds() / 86400:.1f} days old")
            )
        else:
            if data_sha is None:
                raise UsageError(f"--when new-data needs -p {DATA_PARAMETER} FILE")
            recorded = production.tags.get("nbmlops.job.data_sha256")
            reason = "production has no recorded data hash" if recorded is None else ""
            (fired if recorded != data_sha else not_fired).append(("new-data", reason))
    return tuple(fired), tuple(not_fired)


def _recent_monitor(production, registry, settings, drift_window: str):
    """Production's monitor report over the drift window, or since the last retraining job
    when that is later; and which of the two set the start."""
    from nbmlops.monitoring.monitor import monitor, parse_duration, parse_time

    now = datetime.now(UTC)
    starts = [
        (now - parse_duration(drift_window, "--drift-window"), f"--drift-window {drift_window}")
    ]
    jobs = [
        v
        for v in registry.versions(production.name)
        if v.tags.get("nbmlops.job_id") and v.tags.get("nbmlops.job_status") != "failed"
    ]
    if jobs:  # the version the last job registered: created when the job packaged it
        starts.append((parse_time(jobs[-1].created), f"the last retraining job ({jobs[-1].ref})"))
    start, basis = max(starts, key=lambda s: s[0])
    report = monitor(production.ref, since=start.isoformat(), settings=settings, now=now)
    return report, basis


def data_sha256(parameters: dict) -> str | None:
    """SHA-256 of the job's ``data_path`` file, or None when it names no file."""
    path = parameters.get(DATA_PARAMETER)
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
