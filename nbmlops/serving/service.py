"""The loaded model with its checks, batcher, prediction log, metrics and prediction ids."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from nbmlops.artifact.files import ArtifactFiles
from nbmlops.artifact.validation import Validator
from nbmlops.errors import LogError, ValidationError
from nbmlops.jsoncodec import plain
from nbmlops.predlog.log import PredictionLog
from nbmlops.predlog.records import ERROR, OK, REJECTED, LogRecord, PredictionIds
from nbmlops.serving.batcher import Job, MicroBatcher
from nbmlops.serving.config import PRIMARY, SHADOW, ServerConfig
from nbmlops.serving.metrics import ServerMetrics
from nbmlops.serving.responses import INVALID_INPUT, MODEL_FAILED, HTTPProblem, logger

__all__ = ["PRIMARY", "ModelFailure", "Service"]


class Service:
    """One loaded version with its validator and batcher, on one route (``primary``,
    ``canary`` or ``shadow``); the versions of one server share its log and metrics."""

    def __init__(
        self,
        config: ServerConfig,
        files: ArtifactFiles,
        *,
        route: str = PRIMARY,
        version: str | None = None,
        log: PredictionLog | None = None,
        metrics: ServerMetrics | None = None,
        onnx: Path | None = None,
    ) -> None:
        self.config = config
        self.files = files
        self.route = route
        self.version = version or config.version
        self.predictor = files.predictor()
        self.runtime = "sklearn"
        if onnx is not None:  # the same preprocessing, then the graph instead of scikit-learn
            from nbmlops.exports.onnx_runtime import OnnxPredictor

            self.predictor = OnnxPredictor(onnx, self.predictor.steps, files.schema.classes)
            self.runtime = "onnx"
        self.schema = self.files.schema
        self.validator = Validator(self.schema, config.unknown_categories)
        self.log = log or PredictionLog(config.log_uri, checkpoint_every=1.0)
        self.metrics = metrics or ServerMetrics(
            config.name, config.version, self.schema, self.files.profile
        )
        self.metrics.add_route(route, self.version, self.schema.classes)
        self.batcher = MicroBatcher(
            self._score,
            config.max_batch_rows,
            config.max_batch_wait_ms / 1000,
            inline=route != SHADOW,
        )
        self.classes = list(self.schema.classes) if self.schema.classes is not None else None
        self._ids = PredictionIds()

    def _score(self, jobs: list[Job]) -> list:
        """Run one batch through the model and log it (see :class:`MicroBatcher` for where):
        each job's answers, or the :class:`ModelFailure` it alone gets.

        Each request was checked and converted on its own; if the model still fails on the
        merged batch, every request is scored alone, so only a request that fails by itself
        gets an error. The log is committed before any answer is released: an answered
        prediction is logged.
        """
        start = time.perf_counter()
        try:
            scored = self.predictor.score(self.validator.builder.frame([j.columns for j in jobs]))
            outcomes = self._split(jobs, *scored)
        except Exception as exc:
            if len(jobs) == 1:
                outcomes = [exc]
            else:
                outcomes = [self._alone(job) for job in jobs]
        model_seconds = time.perf_counter() - start
        done = time.perf_counter()
        log, results, predictions = [], [], []
        for job, outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, Exception):
                log += self._failure_rows(job, outcome)
                results.append(ModelFailure(MODEL_FAILED))
                continue
            latency = (done - job.started) * 1000
            links = job.links or [None] * len(job.records)
            for record, answer, link in zip(job.records, outcome, links, strict=True):
                outputs_row = {k: v for k, v in answer.items() if k != "id"}
                if link is not None:
                    outputs_row["primary_id"] = link  # a shadow's row names the primary's
                log.append(
                    self._record(job.endpoint, OK, latency, record, outputs_row, id=answer["id"])
                )
                predictions.append(answer["prediction"])
            results.append(outcome)
        self.log.write(log)
        if predictions:
            self.metrics.observe_batch(model_seconds, predictions, self.route, self.version)
        return results

    def _split(self, jobs: list[Job], predictions, proba) -> list[list[dict]]:
        """The answers of one scored batch, cut back into its jobs."""
        answers = self._answers(predictions, proba)
        outcomes, offset = [], 0
        for job in jobs:
            outcomes.append(answers[offset : offset + len(job.records)])
            offset += len(job.records)
        return outcomes

    def _alone(self, job: Job):
        """One job scored by itself: its answers, or the exception the model raised."""
        try:
            scored = self.predictor.score(self.validator.builder.frame([job.columns]))
        except Exception as exc:  # noqa: BLE001 - this caller's failure, reported to it alone
            return exc
        return self._split([job], *scored)[0]

    def _failure_rows(self, job: Job, exc: Exception) -> list[LogRecord]:
        """Log a model failure with its traceback (server side only) and the error rows."""
        logger.error(
            "request %s: the model failed on %d record(s) that passed validation",
            job.request_id,
            len(job.records),
            exc_info=exc,
        )
        error = f"request {job.request_id}: {type(exc).__name__}: {exc}"
        return [self._record(job.endpoint, ERROR, None, r, error=error) for r in job.records]

    def _record(self, endpoint, status, latency, inputs, outputs=None, error=None, id=None):  # noqa: A002
        return LogRecord(
            id or self.new_id(),
            time.time(),
            self.config.name,
            self.version,
            self.route,
            endpoint,
            status,
            latency,
            inputs,
            outputs,
            error,
        )

    def new_id(self) -> str:
        """A prediction id: unique across processes, increasing within one (cheap to index)."""
        return self._ids.next()

    def _answers(self, predictions: np.ndarray, proba: np.ndarray | None) -> list[dict]:
        values = [plain(v) for v in predictions.tolist()]
        ids = [self.new_id() for _ in values]
        if self.classes is None or proba is None:
            return [{"id": i, "prediction": p} for i, p in zip(ids, values, strict=True)]
        labels = [str(c) for c in self.classes]
        return [
            {"id": i, "prediction": p, "proba": dict(zip(labels, row, strict=True))}
            for i, p, row in zip(ids, values, proba.round(12).tolist(), strict=True)
        ]

    def log_rejection(self, endpoint: str, body: bytes, problem: HTTPProblem, started: float):
        latency = (time.perf_counter() - started) * 1000
        inputs = body[:4096].decode("utf-8", "replace")
        error = problem.message + "".join(f"; {p.to_dict()}" for p in problem.problems[:5])
        try:
            self.log.write([self._record(endpoint, REJECTED, latency, inputs, error=error)])
        except LogError as exc:  # the caller still learns what was wrong with its request
            logger.error("a rejected request could not be logged: %s", exc)

    async def predict_records(
        self, records, endpoint: str, started: float, request_id: str, links=None
    ) -> list[dict]:
        """The answers for one request's records; ``links`` (a shadow's) are the primary's
        prediction ids, one per record, logged with each of its predictions."""
        if isinstance(records, list) and len(records) > self.config.max_records:
            raise HTTPProblem(
                413,
                f"{len(records)} records in one request; the limit is {self.config.max_records}. "
                "Split the request.",
            )
        try:
            self.validator.check(records)
        except ValidationError as exc:
            raise HTTPProblem(422, INVALID_INPUT, exc.problems) from None
        columns = self.validator.builder.columns(records)
        self.metrics.records_accepted(len(records), self.route, self.version)
        return await self.batcher.submit(
            records, columns, endpoint, started, request_id, links=links
        )


class ModelFailure(Exception):
    """The model raised on input that passed validation (a 500 for that caller alone)."""
