"""Scoring one batch of stream events: each event's payload checked as the server checks a
record, the valid ones scored together, every event ending as a sink entry or a dead letter,
and every one logged (route ``stream``) under an id derived from its source id, so that an
event delivered twice is logged once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from nbmlops.artifact.files import DIGEST_TAG, ArtifactFiles
from nbmlops.artifact.validation import Validator
from nbmlops.errors import ValidationError
from nbmlops.jsoncodec import plain
from nbmlops.predlog.records import ERROR, OK, REJECTED, LogRecord
from nbmlops.registry.registry import ModelVersion, Registry
from nbmlops.streaming.adapters import Entry, Event

#: The route and endpoint streamed predictions are logged under.
STREAM = "stream"


@dataclass
class ScoredBatch:
    """What one batch of events became: sink entries, dead letters and log rows."""

    entries: list[Entry] = field(default_factory=list)
    dead: list[Entry] = field(default_factory=list)
    log: list[LogRecord] = field(default_factory=list)
    model_seconds: float = 0.0


class EventScorer:
    """One loaded version: checks and scores events of one stream for one group."""

    def __init__(self, registry: Registry, version: ModelVersion, unknown_categories: str):
        self.name, self.version = version.name, version.version
        self.files = ArtifactFiles.read(
            Path(registry.local_path(version)),
            version.tags.get(DIGEST_TAG),
            f"{version.name} v{version.version}",
            keep_model=True,
        )
        self.predictor = self.files.predictor()
        self.validator = Validator(self.files.schema, unknown_categories)
        classes = self.files.schema.classes
        self.labels = None if classes is None else [str(c) for c in classes]

    def score(self, events: list[Event], id_prefix: str, consumer: str) -> ScoredBatch:
        """Check, score and log ``events``; prediction ids are ``id_prefix`` + the event id."""
        started = time.perf_counter()
        batch = ScoredBatch()
        records, kept = [], []
        for event in events:
            record, error = _record(event.payload)
            if error is None:
                records.append(record)
                kept.append(event)
            else:
                self._dead(batch, event, id_prefix, error)
        reasons = self._reasons(records)
        valid = list(zip(kept, records, strict=True))
        for i in sorted(reasons, reverse=True):
            event, _ = valid.pop(i)
            self._dead(batch, event, id_prefix, reasons[i])
        if valid:
            self._score_valid(batch, valid, id_prefix, consumer, started)
        return batch

    def _reasons(self, records: list[dict]) -> dict[int, str]:
        """Each invalid record's problems, by its position."""
        try:
            self.validator.check(records)
        except ValidationError as exc:
            reasons: dict[int, list[str]] = {}
            for problem in exc.problems:
                index = problem.record if problem.record is not None else 0
                said = f"field '{problem.field}': " if problem.field else ""
                reasons.setdefault(index, []).append(said + problem.message)
            return {i: "; ".join(found) for i, found in reasons.items()}
        return {}

    def _score_valid(self, batch, valid, id_prefix, consumer, started) -> None:
        """Score the valid events together; if the model fails on the batch, each alone, so
        that only an event that fails by itself is a dead letter."""
        records = [r for _, r in valid]
        model_start = time.perf_counter()
        try:
            outcomes = [self._answers(records)]
            groups = [valid]
        except Exception:  # noqa: BLE001 - retried one by one below
            outcomes, groups = [], []
            for pair in valid:
                try:
                    outcomes.append(self._answers([pair[1]]))
                except Exception as exc:  # noqa: BLE001 - this event's failure alone
                    message = f"the model failed: {type(exc).__name__}: {exc}"
                    self._dead(batch, pair[0], id_prefix, message, status=ERROR)
                    continue
                groups.append([pair])
        batch.model_seconds = time.perf_counter() - model_start
        latency = (time.perf_counter() - started) * 1000
        for group, answers in zip(groups, outcomes, strict=True):
            for (event, record), (prediction, proba) in zip(group, answers, strict=True):
                pid = id_prefix + event.id
                fields = {"source_id": event.id, "id": pid, "prediction": str(prediction)}
                outputs = {"prediction": prediction}
                if proba is not None:
                    fields["proba"] = json.dumps(proba)
                    outputs["proba"] = proba
                fields |= {"model": self.name, "version": self.version, "consumer": consumer}
                batch.entries.append(Entry(event.id, fields))
                batch.log.append(self._row(pid, OK, latency, record, outputs=outputs))

    def _answers(self, records: list[dict]) -> list[tuple]:
        frame = self.validator.builder.frame([self.validator.builder.columns(records)])
        predictions, proba = self.predictor.score(frame)
        values = [plain(v) for v in predictions.tolist()]
        if self.labels is None or proba is None:
            return [(v, None) for v in values]
        rows = [dict(zip(self.labels, p, strict=True)) for p in proba.round(12).tolist()]
        return list(zip(values, rows, strict=True))

    def _dead(self, batch, event: Event, id_prefix: str, error: str, status=REJECTED) -> None:
        payload = event.payload if event.payload is not None else ""
        fields = {"source_id": event.id, "error": error, "payload": payload}
        batch.dead.append(Entry(event.id, fields))
        row = self._row(id_prefix + event.id, status, None, payload[:4096], error=error)
        batch.log.append(row)

    def _row(self, pid, status, latency, inputs, outputs=None, error=None) -> LogRecord:
        return LogRecord(
            pid, time.time(), self.name, self.version, STREAM, STREAM, status, latency,
            inputs, outputs, error,
        )  # fmt: skip


def _record(payload: str | None) -> tuple[dict | None, str | None]:
    """The event's record, or why it has none."""
    if payload is None:
        return None, "the event has no 'payload' field: XADD STREAM * payload '{...}'"
    try:
        record = json.loads(payload)
    except ValueError as exc:
        return None, f"the payload is not JSON ({exc})"
    if not isinstance(record, dict):
        return None, f"the payload is a JSON {type(record).__name__}, not one record (an object)"
    return record, None
