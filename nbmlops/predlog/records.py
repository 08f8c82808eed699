"""What the prediction log holds: records, their ids and statuses, and a read window."""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass, field

import pandas as pd

from nbmlops import jsoncodec

OK = "ok"
REJECTED = "rejected"
ERROR = "error"

#: The columns of a logged record, in the table's order.
PREDICTION_FIELDS = (
    "id", "ts", "model", "version", "route", "endpoint", "status", "latency_ms", "inputs",
    "outputs", "error",
)  # fmt: skip
#: The columns of a batch run, in the table's order.
BATCH_RUN_FIELDS = (
    "ts", "model", "version", "engine", "input", "input_sha256", "output", "rows_in",
    "rows_scored", "rows_rejected", "seconds",
)  # fmt: skip
#: The columns of a rollout event, in the table's order.
EVENT_FIELDS = ("ts", "model", "kind", "version", "primary_version", "reason")


class PredictionIds:
    """Prediction ids: unique across processes (a random prefix), increasing within one (cheap
    to index)."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:8]
        self._counter = itertools.count(int(time.time() * 1000) << 16)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):012x}"


@dataclass(slots=True)
class LogRecord:
    """One row of the log: a scored record (``ok``), a rejected request or a failure."""

    id: str
    ts: float
    model: str
    version: str
    route: str
    endpoint: str
    status: str
    latency_ms: float | None
    inputs: dict | str | None
    outputs: dict | None = None
    error: str | None = None

    def row(self) -> tuple:
        inputs = (
            self.inputs
            if isinstance(self.inputs, str) or self.inputs is None
            else dumps(self.inputs)
        )
        outputs = None if self.outputs is None else dumps(self.outputs)
        return (
            self.id,
            self.ts,
            self.model,
            self.version,
            self.route,
            self.endpoint,
            self.status,
            self.latency_ms,
            inputs,
            outputs,
            self.error,
        )


@dataclass(frozen=True)
class Window:
    """The log of one model version over a time range: rows by status, and for the scored
    records their time, latency, feedback label (JSON text or None), inputs and outputs.

    ``inputs`` and ``outputs`` are indexed by the position of their record in ``scored``; a
    record whose logged text is not a JSON object has no row there. ``skipped`` counts those
    (``inputs``, ``outputs``) and the latencies that are not numbers (``latency``), when any.
    """

    statuses: dict[str, int]
    scored: pd.DataFrame
    inputs: pd.DataFrame
    outputs: pd.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)


def dumps(value) -> str:
    return jsoncodec.dumps(value).decode()
