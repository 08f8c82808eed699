"""Scoring one chunk of a batch: the server's checks row by row, the model on the rows that pass.

The same code runs in this process and on every Dask worker, so both engines reject the same
rows with the same reasons and predict what ``nbmlops.load(...).predict`` predicts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa

from nbmlops.artifact.files import ArtifactFiles
from nbmlops.artifact.frames import to_records
from nbmlops.artifact.schema import Schema
from nbmlops.artifact.validation import Validator
from nbmlops.batch.inputs import typed_frame
from nbmlops.batch.outputs import REASON, ROW
from nbmlops.predlog.records import OK, REJECTED, LogRecord, PredictionIds

#: The route batch predictions are logged under.
BATCH = "batch"


@dataclass(frozen=True)
class ScoredChunk:
    """One chunk's scored rows (id, ``prediction``, ``proba_<label>``), its rejected rows
    (``row``, ``reason``, the input's columns) and, when logging, its log records."""

    scored: pa.Table
    rejected: pa.Table
    log: list[LogRecord]


class ChunkScorer:
    """Checks and scores chunks of one artifact; built once per process (or Dask worker)."""

    def __init__(
        self,
        files: ArtifactFiles,
        version: str,
        unknown_categories: str,
        id_column: str | None,
        log: bool,
        text: bool,
    ) -> None:
        self.files = files
        self.schema = files.schema
        self.validator = Validator(self.schema, unknown_categories)
        self.name = files.config["name"]
        self.version = version
        self.id_column = id_column
        self.log = log
        self.text = text
        self._ids = PredictionIds()

    @cached_property
    def predictor(self):
        """The estimator and preprocessing, loaded on first use: a driver that only plans a
        Dask run never loads them."""
        return self.files.predictor()

    @property
    def read_columns(self) -> list[str]:
        """The input columns a chunk needs: the schema's, and the id column."""
        names = list(self.schema.names)
        return names + [self.id_column] if self.id_column and self.id_column not in names else names

    def output_schema(self, id_type: pa.DataType | None) -> pa.Schema:
        """The scored rows' Arrow schema, the same for every chunk, part and engine."""
        fields = [pa.field(self.id_column, id_type)] if self.id_column else []
        classes = self.schema.classes
        prediction, *probabilities = output_columns(self.schema)
        fields.append(
            pa.field(prediction, pa.array(list(classes)).type if classes else pa.float64())
        )
        fields += [pa.field(name, pa.float64()) for name in probabilities]
        return pa.schema(fields)

    def rejected_schema(self, types: dict[str, pa.DataType]) -> pa.Schema:
        fields = [pa.field(ROW, pa.int64()), pa.field(REASON, pa.string())]
        return pa.schema(fields + [pa.field(n, types[n]) for n in self.read_columns])

    def score(self, table: pa.Table, first_row: int) -> ScoredChunk:
        """Check every row of ``table`` (input rows from position ``first_row``) and score
        the rows that pass."""
        frame = typed_frame(table, self.schema, self.text)
        reasons = self.validator.rejections(frame)
        good = np.ones(len(frame), dtype=bool)
        good[list(reasons)] = False
        passed = frame if good.all() else frame.iloc[np.flatnonzero(good)]
        predictions, failures = self._predict(passed)
        if failures:
            positions = np.flatnonzero(good)
            for local, reason in failures.items():
                reasons[int(positions[local])] = reason
            good[[int(positions[i]) for i in failures]] = False
        bad = np.flatnonzero(~good)
        scored = pa.Table.from_pandas(predictions.reset_index(drop=True), preserve_index=False)
        if self.id_column:
            ids = table.column(self.id_column).filter(pa.array(good))
            scored = scored.add_column(0, self.id_column, ids)
        rejected = table.select(self.read_columns).take(pa.array(bad, pa.int64()))
        rejected = rejected.add_column(0, REASON, pa.array([reasons[r] for r in bad.tolist()]))
        rejected = rejected.add_column(0, ROW, pa.array(bad + first_row, pa.int64()))
        log = self._log_records(frame, good, predictions, reasons) if self.log else []
        return ScoredChunk(scored, rejected, log)

    def _predict(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, str]]:
        """``load().predict`` of checked rows; if the model fails on the chunk, the rows it
        fails on alone (found by halving) are left out with the model's error as reason."""
        try:
            return self._model(frame), {}
        except Exception as exc:  # noqa: BLE001 - told per row, the other rows still scored
            if len(frame) == 1:
                return self._model(frame.iloc[:0]), {0: _failure(exc)}
        half = len(frame) // 2
        left, left_failures = self._predict(frame.iloc[:half])
        right, right_failures = self._predict(frame.iloc[half:])
        failures = {**left_failures, **{half + i: r for i, r in right_failures.items()}}
        return pd.concat([left, right]), failures

    def _model(self, frame: pd.DataFrame) -> pd.DataFrame:
        if len(frame) == 0:
            columns = output_columns(self.schema)
            return pd.DataFrame({name: pd.Series([], dtype=object) for name in columns})
        return self.predictor.predict(self.validator.builder.conform(frame))

    def _log_records(self, frame, good, predictions, reasons) -> list[LogRecord]:
        now = time.time()
        records = to_records(frame)
        labels = [c[len("proba_") :] for c in predictions.columns if c.startswith("proba_")]
        outputs = predictions.to_dict("records")
        log, scored = [], iter(outputs)
        for position, record in enumerate(records):
            if not good[position]:
                log.append(self._record(now, REJECTED, record, None, reasons[position]))
                continue
            answer = next(scored)
            out = {"prediction": _plain(answer["prediction"])}
            if labels:
                out["proba"] = {k: float(answer[f"proba_{k}"]) for k in labels}
            log.append(self._record(now, OK, record, out, None))
        return log

    def _record(self, ts, status, inputs, outputs, error) -> LogRecord:
        return LogRecord(
            self._ids.next(), ts, self.name, self.version, BATCH, BATCH, status, None, inputs,
            outputs, error,
        )  # fmt: skip


def output_columns(schema: Schema) -> list[str]:
    """The columns ``load().predict`` answers with: ``prediction``, then ``proba_<label>`` for
    each class of a classifier."""
    return ["prediction", *(f"proba_{label}" for label in schema.classes or ())]


def _failure(exc: Exception) -> str:
    return f"the model failed on this row: {type(exc).__name__}: {exc}"


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
