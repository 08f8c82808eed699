"""When a retraining job runs: ``--when drift,stale=7d,new-data`` judged against production."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from nbmlops.errors import UsageError

DATA_PARAMETER = "data_path"


def fired_triggers(when, production, registry, settings, data_sha):
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
            from nbmlops.monitoring.monitor import monitor
            from nbmlops.monitoring.report import ALERT

            report = monitor(production.ref, settings=settings)
            (fired if report.status == ALERT else not_fired).append(
                ("drift", f"monitor status {report.status}")
            )
        elif name == "stale":
            from nbmlops.monitoring.monitor import parse_duration

            if not value:
                raise UsageError("--when stale needs a duration, e.g. stale=7d")
            from nbmlops.registry.load import load

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
