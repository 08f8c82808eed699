"""The prediction service: a FastAPI app built by :func:`create_app`, run by uvicorn.

validate (schema.json) → micro-batch → the artifact's own preprocessing and estimator → log
every record → answer. Bad input gets a 4xx naming each record and field, never a prediction.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import gc
import io
import itertools
import logging
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from nbmlops import jsoncodec
from nbmlops._artifact_code.nbmlops_loader_v1 import ArtifactPredictor
from nbmlops.artifact import ArtifactFiles
from nbmlops.errors import ValidationError
from nbmlops.feedback import label_problems
from nbmlops.predlog import ERROR, OK, REJECTED, LogRecord, PredictionLog
from nbmlops.server_config import ServerConfig
from nbmlops.server_metrics import ServerMetrics
from nbmlops.validation import Problem, Validator

PRIMARY = "primary"
OPEN_PATHS = frozenset(
    {"/health", "/ready", "/ping", "/v2/health/live", "/v2/health/ready", "/version"}
)
MODEL_FAILED = (
    "the model failed on this input, which passed the schema's checks; nothing was predicted. "
    "The server's log has the details under this request id"
)
SERVER_FAILED = "the server failed on this request; its log has the details under this request id"
logger = logging.getLogger("uvicorn.error")


class HTTPProblem(Exception):
    """An answer other than 200: status, message and the offending records."""

    def __init__(self, status: int, message: str, problems: list[Problem] | None = None) -> None:
        self.status = status
        self.message = message
        self.problems = problems or []
        super().__init__(message)

    def response(self, request_id: str) -> Response:
        return error_response(self.status, self.message, request_id, self.problems)


def error_response(
    status: int, message: str, request_id: str, problems: list[Problem] | None = None, **extra
) -> Response:
    """The one error envelope of every status: ``{"error", "problems", "request_id"}``."""
    body = {
        "error": message,
        "problems": [p.to_dict() for p in problems or ()],
        "request_id": request_id,
        **extra,
    }
    return _json(body, status)


@dataclass
class _Job:
    records: list[dict]
    columns: dict[str, list]  # the records' values, each converted on its own
    endpoint: str
    started: float
    request_id: str
    future: asyncio.Future


class MicroBatcher:
    """Scores concurrent requests together: while one batch is in the model, the next forms.

    A lone caller is scored at once, and requests already received join it. Under load
    (requests arriving, on average, closer together than a model call takes) and with more
    callers recently in flight than have queued, the batch waits for the missing ones, at most
    ``max_wait`` seconds: the callers answered by the previous batch are about to send again,
    and one model call for all of them costs about what a call for one costs. Light traffic
    never waits: there, batching would save nothing.

    A quick model is called on the event loop itself: handing a batch to a thread and back
    costs about 1 ms, a fifth of a small scikit-learn pipeline's time, and the GIL lets the
    loop do little meanwhile. After a batch that took longer than ``INLINE_SECONDS`` (and for
    the first one), batches go to the model thread, so that ``/health`` and ``/metrics`` stay
    responsive during them.
    """

    #: How many recent batches the estimate of concurrent callers remembers.
    MEMORY = 8
    #: Weight of the newest batch in the running mean of the model's time per batch.
    SMOOTHING = 0.1
    #: Arrivals over this many seconds give the traffic's rate.
    HORIZON = 0.25
    #: Turns of the event loop a batch gives requests already received before it is closed.
    SETTLE_PASSES = 8
    #: Batches of a model faster than this run on the event loop.
    INLINE_SECONDS = 0.02

    def __init__(self, score, max_rows: int, max_wait: float) -> None:
        self._score = score
        self._max_rows = max_rows
        self._max_wait = max_wait
        self._queue: collections.deque[_Job] = collections.deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nbmlops-model")
        self._task: asyncio.Task | None = None
        self._active = 0
        self._peak = 0
        self._peaks: collections.deque[int] = collections.deque([1], maxlen=self.MEMORY)
        self._inline = False  # the first batch (imports, caches) is often slow
        self._arrivals: collections.deque[float] = collections.deque()
        self._model_seconds = math.nan  # running mean of a batch's time in the model
        self._current: list[_Job] = []  # the batch being scored
        self._healthy = True
        self.restarts = 0

    #: Seconds the watchdog waits before restarting a batch loop that died.
    RESTART_SECONDS = 0.5

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise())

    @property
    def healthy(self) -> bool:
        """False while the batch loop is down (between a failure and its restart)."""
        return self._healthy

    async def stop(self) -> None:
        if self._task is not None:
            while self._queue:
                await asyncio.sleep(0.01)
            self._task.cancel()
        self._executor.shutdown(wait=True)

    async def submit(
        self, records: list[dict], columns: dict, endpoint: str, started: float, request_id: str
    ):
        """The answers for one request, or the exception that its scoring raised."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._arrivals.append(loop.time())
        self._active += 1
        self._peak = max(self._peak, self._active)
        self._queue.append(_Job(records, columns, endpoint, started, request_id, future))
        self._arrived.set()
        try:
            return await future
        finally:
            self._active -= 1

    async def _supervise(self) -> None:
        """The watchdog: run the batch loop, and restart it if it ever dies."""
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the service for good
                self._healthy = False
                self.restarts += 1
                logger.exception("the batch loop failed; restarting it")
                for job in self._current:
                    if not job.future.done():
                        job.future.set_exception(BatchLoopFailure(str(exc)))
                await asyncio.sleep(self.RESTART_SECONDS)
                self._healthy = True

    async def _next_arrival(self, timeout: float) -> bool:
        """Wait until a job is queued; False after ``timeout`` seconds without one."""
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _gather(self) -> list[_Job]:
        """The next batch: what has queued, and the callers expected shortly (bounded wait)."""
        loop = asyncio.get_running_loop()
        while not self._queue:
            await self._next_arrival(None)
        # Requests already read from their sockets are a few steps from the queue: let them
        # arrive (a pass costs microseconds when there is nothing to do).
        for _ in range(self.SETTLE_PASSES):
            await asyncio.sleep(0)
        expected = max(self._peaks) if self._busy(loop.time()) else 1
        deadline = loop.time() + self._max_wait
        jobs, rows = [], 0
        while rows < self._max_rows:
            if self._queue:
                job = self._queue.popleft()
                jobs.append(job)
                rows += len(job.records)
                continue
            if len(jobs) >= expected:
                break
            left = deadline - loop.time()
            if left <= 0 or not await self._next_arrival(left):
                # fewer callers than lately: expect what came until more are seen again
                self._peaks.clear()
                self._peak = len(jobs)
                break
        self._peaks.append(self._peak)
        self._peak = self._active
        return jobs

    def _busy(self, now: float) -> bool:
        """Whether requests arrive, on average, closer together than a model call takes."""
        while self._arrivals and self._arrivals[0] < now - self.HORIZON:
            self._arrivals.popleft()
        return len(self._arrivals) * self._model_seconds > self.HORIZON

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = self._current = await self._gather()
            started = time.perf_counter()
            try:
                if self._inline:
                    results = self._score(jobs)
                else:
                    results = await loop.run_in_executor(self._executor, self._score, jobs)
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the failure
                logger.exception("scoring a batch failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(BatchLoopFailure(str(exc)))
                continue
            finally:
                seconds = time.perf_counter() - started
                self._inline = seconds < self.INLINE_SECONDS
                mean = self._model_seconds
                self._model_seconds = (
                    seconds if math.isnan(mean) else mean + self.SMOOTHING * (seconds - mean)
                )
            for job, result in zip(jobs, results, strict=True):
                if job.future.done():
                    continue
                if isinstance(result, Exception):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)
            self._current = []


class Service:
    """The loaded model with its validator, batcher, log and metrics."""

    def __init__(self, config: ServerConfig, files: ArtifactFiles) -> None:
        self.config = config
        self.files = files
        self.predictor = ArtifactPredictor(files.root, verify=False)
        self.schema = self.files.schema
        self.validator = Validator(self.schema, config.unknown_categories)
        self.log = PredictionLog(Path(config.log_path), checkpoint_every=1.0)
        self.metrics = ServerMetrics(config.name, config.version, self.schema, self.files.profile)
        self.batcher = MicroBatcher(
            self._score, config.max_batch_rows, config.max_batch_wait_ms / 1000
        )
        self.classes = list(self.schema.classes) if self.schema.classes is not None else None
        self._id_prefix = uuid.uuid4().hex[:8]
        self._id_counter = itertools.count(int(time.time() * 1000) << 16)

    def _score(self, jobs: list[_Job]) -> list:
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
            for record, answer in zip(job.records, outcome, strict=True):
                outputs_row = {k: v for k, v in answer.items() if k != "id"}
                log.append(
                    self._record(job.endpoint, OK, latency, record, outputs_row, id=answer["id"])
                )
                predictions.append(answer["prediction"])
            results.append(outcome)
        self.log.write(log)
        if predictions:
            self.metrics.observe_batch(model_seconds, predictions)
        return results

    def _split(self, jobs: list[_Job], predictions, proba) -> list[list[dict]]:
        """The answers of one scored batch, cut back into its jobs."""
        answers = self._answers(predictions, proba)
        outcomes, offset = [], 0
        for job in jobs:
            outcomes.append(answers[offset : offset + len(job.records)])
            offset += len(job.records)
        return outcomes

    def _alone(self, job: _Job):
        """One job scored by itself: its answers, or the exception the model raised."""
        try:
            scored = self.predictor.score(self.validator.builder.frame([job.columns]))
        except Exception as exc:  # noqa: BLE001 - this caller's failure, reported to it alone
            return exc
        return self._split([job], *scored)[0]

    def _failure_rows(self, job: _Job, exc: Exception) -> list[LogRecord]:
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
            self.config.version,
            PRIMARY,
            endpoint,
            status,
            latency,
            inputs,
            outputs,
            error,
        )

    def new_id(self) -> str:
        """A prediction id: unique across processes, increasing within one (cheap to index)."""
        return f"{self._id_prefix}{next(self._id_counter):012x}"

    def _answers(self, predictions: np.ndarray, proba: np.ndarray | None) -> list[dict]:
        values = [_plain(v) for v in predictions.tolist()]
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
        self.log.write([self._record(endpoint, REJECTED, latency, inputs, error=error)])

    async def predict_records(
        self, records, endpoint: str, started: float, request_id: str
    ) -> list[dict]:
        if isinstance(records, list) and len(records) > self.config.max_records:
            raise HTTPProblem(
                413,
                f"{len(records)} records in one request; the limit is {self.config.max_records}. "
                "Split the request.",
            )
        try:
            self.validator.check(records)
        except ValidationError as exc:
            raise HTTPProblem(422, "invalid input: nothing was predicted", exc.problems) from None
        columns = self.validator.builder.columns(records)
        self.metrics.records_accepted(len(records))
        return await self.batcher.submit(records, columns, endpoint, started, request_id)


class ModelFailure(Exception):
    """The model raised on input that passed validation (a 500 for that caller alone)."""


class BatchLoopFailure(Exception):
    """The batch loop failed while this request was in it (the watchdog restarts the loop)."""


def create_app(config: ServerConfig) -> FastAPI:
    """The FastAPI app for one model; the model loads in the lifespan."""
    state: dict[str, Service] = {}
    # Read (and verify) once: the OpenAPI schema below and the service both need it.
    files = ArtifactFiles.read(Path(config.artifact))
    schema = files.schema

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = Service(config, files)
        service.batcher.start()
        # Loading leaves many long-lived objects; freezing them keeps full garbage collections
        # (pauses of 100+ ms under load) from scanning them again and again.
        gc.collect()
        gc.freeze()
        state["service"] = service
        yield
        await service.batcher.stop()
        service.log.close()

    app = FastAPI(
        title=f"nbmlops: {config.name} v{config.version}",
        version=config.version,
        description="Prediction service generated by nbmlops from a notebook artifact.",
        lifespan=lifespan,
    )
    app.add_middleware(_EdgeMiddleware, config=config, scoring=_ScoringRoutes(config, state))
    app.openapi = lambda: _openapi(app, schema)
    _answer_errors_in_one_envelope(app)

    def service() -> Service:
        return state["service"]

    def is_ready() -> bool:
        return "service" in state and state["service"].batcher.healthy

    @app.get("/health", summary="Alive")
    async def health() -> Response:
        return _json({"status": "alive"})

    @app.get("/ping", include_in_schema=False)
    async def ping() -> Response:
        return _json({"status": "alive"})

    @app.get("/version", summary="Versions (MLflow's scoring-server route)")
    async def version() -> Response:
        return _json(_versions(config))

    @app.get("/ready", summary="Model loaded and scoring")
    async def ready() -> Response:
        if not is_ready():
            return _json({"ready": False}, 503)
        return _json({"ready": True, "model": config.name, "version": config.version})

    @app.get("/metadata", summary="Name, version, aliases, schema, metrics, lineage")
    async def metadata() -> Response:
        files = service().files
        return _json(
            {
                "name": config.name,
                "version": config.version,
                "aliases": list(config.aliases),
                "task": files.schema.task,
                "schema": files.schema.to_dict(),
                "metrics": dict(files.lineage.metrics),
                "lineage": files.lineage.to_dict(),
                "limits": {
                    "max_body_bytes": config.max_body_bytes,
                    "max_records": config.max_records,
                    "unknown_categories": config.unknown_categories,
                },
            }
        )

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        body, content_type = service().metrics.render()
        return Response(content=body, media_type=content_type)

    @app.get("/v2", summary="Open Inference Protocol: server metadata")
    async def v2_server() -> Response:
        return _json({"name": "nbmlops", "version": _versions(config)["nbmlops"], "extensions": []})

    @app.get("/v2/health/live", summary="Open Inference Protocol: live")
    async def v2_live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready", summary="Open Inference Protocol: ready")
    async def v2_ready() -> Response:
        return _json({"ready": is_ready()}, 200 if is_ready() else 503)

    @app.get("/v2/models/{model_name}", summary="Open Inference Protocol: model metadata")
    async def v2_metadata(model_name: str) -> Response:
        _check_v2_name(model_name, None, config)
        return _json(_v2_metadata(config, service()))

    @app.get("/v2/models/{model_name}/versions/{model_version}", include_in_schema=False)
    async def v2_version_metadata(model_name: str, model_version: str) -> Response:
        _check_v2_name(model_name, model_version, config)
        return _json(_v2_metadata(config, service()))

    @app.get("/v2/models/{model_name}/ready", summary="Open Inference Protocol: model ready")
    async def v2_model_ready(model_name: str) -> Response:
        _check_v2_name(model_name, None, config)
        return _json({"name": config.name, "ready": is_ready()}, 200 if is_ready() else 503)

    @app.get("/v2/models/{model_name}/versions/{model_version}/ready", include_in_schema=False)
    async def v2_version_ready(model_name: str, model_version: str) -> Response:
        _check_v2_name(model_name, model_version, config)
        return _json({"name": config.name, "ready": is_ready()}, 200 if is_ready() else 503)

    return app


def _answer_errors_in_one_envelope(app: FastAPI) -> None:
    """FastAPI's own errors (404, 405, path parameters) and any failure in its routes answer
    in the scoring routes' envelope; a failure's text stays in the server's log."""

    @app.exception_handler(HTTPProblem)
    async def answer_problem(request: Request, problem: HTTPProblem) -> Response:
        return problem.response(_request_id(request.scope))

    @app.exception_handler(StarletteHTTPException)
    async def answer_http(request: Request, exc: StarletteHTTPException) -> Response:
        message = {404: f"no route {request.url.path}: see /docs for the routes"}.get(
            exc.status_code, str(exc.detail)
        )
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, message, _request_id(request.scope))

    @app.exception_handler(RequestValidationError)
    async def answer_invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            Problem(None, ".".join(map(str, e.get("loc", ()))), e.get("msg", "invalid"))
            for e in exc.errors()
        ]
        return error_response(422, "invalid request", _request_id(request.scope), problems)

    @app.exception_handler(Exception)
    async def answer_failure(request: Request, exc: Exception) -> Response:
        logger.error("request %s failed", _request_id(request.scope), exc_info=exc)
        return error_response(500, SERVER_FAILED, _request_id(request.scope))


def _versions(config: ServerConfig) -> dict:
    from importlib.metadata import version

    return {
        "nbmlops": version("nbmlops"),
        "mlflow": version("mlflow"),
        "model": config.name,
        "model_version": config.version,
    }


def _request_id(scope) -> str:
    return scope.get("state", {}).get("request_id", "")


class _EdgeMiddleware:
    """Counts every request in metrics, enforces the token and the body size limit, and answers
    the scoring routes itself (see :class:`_ScoringRoutes`); FastAPI serves the rest."""

    def __init__(self, app, config: ServerConfig, scoring: _ScoringRoutes) -> None:
        self.app = app
        self.config = config
        self.scoring = scoring
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:8] + "-"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        path = scope["path"]
        request_id = f"{self._id_prefix}{next(self._ids):x}"
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (b"x-request-id", request_id.encode())

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            problem = self._refuse(scope)
            if problem is not None:
                await problem.response(request_id)(scope, receive, send_status)
            elif self.scoring.serves(path):
                response = await self.scoring.answer(scope, receive, started, request_id)
                await response(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        except _Disconnected:
            status = 499  # the client left before sending its whole body
        finally:
            service = self.scoring.state.get("service")
            if service is not None:
                service.metrics.observe_request(
                    _endpoint(path), status, time.perf_counter() - started
                )

    def _refuse(self, scope) -> HTTPProblem | None:
        headers = dict(scope.get("headers") or [])
        if self.config.token and scope["path"] not in OPEN_PATHS:
            expected = f"Bearer {self.config.token}".encode()
            if headers.get(b"authorization") != expected:
                return HTTPProblem(
                    401, "missing or wrong token: send 'Authorization: Bearer <token>'"
                )
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.config.max_body_bytes:
            return HTTPProblem(
                413, f"body of {int(length)} bytes; the limit is {self.config.max_body_bytes}"
            )
        return None


@dataclass(frozen=True)
class _Call:
    """What a scoring route reads from its request."""

    body: bytes
    content_type: str
    model_name: str  # from /v2/models/{model_name}/infer; empty elsewhere
    model_version: str | None  # from /v2/models/{name}/versions/{version}/infer
    started: float
    request_id: str


class _Disconnected(Exception):
    """The client closed the connection before its body arrived."""


class _ScoringRoutes:
    """``POST /predict``, ``/invocations``, ``/feedback`` and ``/v2/models/{name}/infer`` as
    plain ASGI handlers: FastAPI's request handling would add ~0.2 ms to every prediction, 5% of
    a small scikit-learn pipeline's own time. :func:`_openapi` documents them."""

    V2_PREFIX, V2_SUFFIX = "/v2/models/", "/infer"

    def __init__(self, config: ServerConfig, state: dict) -> None:
        self.config = config
        self.state = state
        self._handlers = {
            "/predict": self.predict,
            "/invocations": self.invocations,
            "/feedback": self.feedback,
        }

    def serves(self, path: str) -> bool:
        return path in self._handlers or self._v2_target(path) is not None

    def _v2_target(self, path: str) -> tuple[str, str | None] | None:
        """``(name, version or None)`` of ``/v2/models/{name}[/versions/{version}]/infer``."""
        if not (path.startswith(self.V2_PREFIX) and path.endswith(self.V2_SUFFIX)):
            return None
        name, _, version = path[len(self.V2_PREFIX) : -len(self.V2_SUFFIX)].partition("/versions/")
        if not name or "/" in name or "/" in version:
            return None
        return name, version or None

    async def answer(self, scope, receive, started: float, request_id: str) -> Response:
        """The response to one request on a scoring route; bad input is logged as rejected."""
        path = scope["path"]
        if scope["method"] != "POST":
            message = f"{scope['method']} is not allowed on {path}: use POST"
            return error_response(405, message, request_id)
        if "service" not in self.state:
            return error_response(503, "the model is still loading; retry shortly", request_id)
        v2_target = self._v2_target(path)
        handler, endpoint = (
            (self.v2_infer, "/v2/infer") if v2_target is not None else (self._handlers[path], path)
        )
        v2_name, v2_version = v2_target or ("", None)
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"application/json").decode("latin-1")
        body = b""
        call = None
        try:
            body = await self._body(receive)
            call = _Call(body, content_type.lower(), v2_name, v2_version, started, request_id)
            return await handler(call)
        except HTTPProblem as problem:
            if problem.status in (400, 413, 415, 422):
                self.service.log_rejection(endpoint, body, problem, started)
            return problem.response(request_id)
        except ModelFailure as exc:
            return error_response(500, str(exc), request_id)
        except _Disconnected:
            raise
        except Exception as exc:  # noqa: BLE001 - never a traceback to the caller
            if not isinstance(exc, BatchLoopFailure):
                logger.error("request %s failed", request_id, exc_info=exc)
            return error_response(500, SERVER_FAILED, request_id)

    @property
    def service(self) -> Service:
        return self.state["service"]

    async def _body(self, receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            _check_size(size, self.config)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def predict(self, call: _Call) -> Response:
        records = _predict_records(_parse_json(call.body))
        answers = await self.service.predict_records(
            records, "/predict", call.started, call.request_id
        )
        return _json(
            {"model": self.config.name, "version": self.config.version, "predictions": answers}
        )

    async def invocations(self, call: _Call) -> Response:
        if call.content_type.startswith("text/csv"):
            records = _csv_records(call.body, self.service.schema)
        elif "json" in call.content_type or not call.content_type:
            records = _mlflow_records(_parse_json(call.body))
        else:
            raise HTTPProblem(
                415,
                f"unsupported Content-Type {call.content_type!r}: send application/json or "
                "text/csv",
            )
        answers = await self.service.predict_records(
            records, "/invocations", call.started, call.request_id
        )
        return _json({"predictions": [_mlflow_row(a) for a in answers]})

    async def feedback(self, call: _Call) -> Response:
        items = _feedback_items(_parse_json(call.body))
        problems = label_problems(self.service.schema, items)
        if problems:
            raise HTTPProblem(422, "invalid feedback: nothing was recorded", problems)
        unknown = self.service.log.add_feedback(items, time.time())
        if unknown:
            shown = ", ".join(unknown[:10])
            positions = {item_id: index for index, (item_id, _) in enumerate(items)}
            return error_response(
                404,
                f"unknown prediction id(s): {shown}; nothing was recorded",
                call.request_id,
                [Problem(positions.get(i), "id", f"no prediction has id {i!r}") for i in unknown],
                unknown_ids=unknown,
            )
        return _json({"recorded": len(items)})

    async def v2_infer(self, call: _Call) -> Response:
        _check_v2_name(call.model_name, call.model_version, self.config)
        payload = _parse_json(call.body)
        records = _v2_records(payload, self.service.schema)
        answers = await self.service.predict_records(
            records, "/v2/infer", call.started, call.request_id
        )
        return _json(_v2_response(self.config, self.service, answers, payload))


_ENDPOINTS = (
    "/predict",
    "/invocations",
    "/feedback",
    "/health",
    "/ping",
    "/version",
    "/v2",
    "/ready",
    "/metadata",
    "/metrics",
    "/docs",
    "/openapi.json",
    "/v2/health/live",
    "/v2/health/ready",
)


def _endpoint(path: str) -> str:
    if path in _ENDPOINTS:
        return path
    if path.startswith("/v2/models/"):
        return "/v2/models/{name}/infer" if path.endswith("/infer") else "/v2/models/{name}"
    return "other"


def _check_size(size: int, config: ServerConfig) -> None:
    if size > config.max_body_bytes:
        raise HTTPProblem(413, f"body of {size} bytes; the limit is {config.max_body_bytes}")


def _parse_json(body: bytes):
    if not body.strip():
        raise HTTPProblem(400, "empty body: send a JSON object")
    try:
        return jsoncodec.loads(body)
    except jsoncodec.DecodeError as exc:
        raise HTTPProblem(400, f"malformed JSON: {exc}") from None


def _json(body, status: int = 200) -> Response:
    return Response(
        content=jsoncodec.dumps(body), status_code=status, media_type="application/json"
    )


def _plain(value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _predict_records(payload) -> list:
    """``{"records": [...]}``, a bare list of records, or one record as an object."""
    if isinstance(payload, dict):
        if "records" not in payload:
            return [payload]
        _check_envelope(payload, "the request")
        return payload["records"]
    if isinstance(payload, list):
        return payload
    raise HTTPProblem(
        400, 'expected {"records": [{column: value, ...}]} or one record as a JSON object'
    )


def _mlflow_records(payload) -> list:
    """Records from MLflow's scoring formats: dataframe_split, dataframe_records, instances,
    inputs."""
    if not isinstance(payload, dict):
        raise HTTPProblem(
            400,
            "expected a JSON object with one of dataframe_split, dataframe_records, "
            "instances or inputs",
        )
    _check_envelope(payload, "the request")
    keys = [
        k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in payload
    ]
    if len(keys) != 1:
        raise HTTPProblem(
            400,
            "send exactly one of dataframe_split, dataframe_records, instances or inputs"
            + (f" (got {', '.join(keys)})" if keys else ""),
        )
    data = payload[keys[0]]
    if keys[0] == "dataframe_split":
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("columns"), list)
            or not isinstance(data.get("data"), list)
        ):
            raise HTTPProblem(
                400, "dataframe_split needs 'columns' (a list) and 'data' (a list of rows)"
            )
        _check_envelope(data, "dataframe_split")
        columns = data["columns"]
        _check_unique_columns(columns, "dataframe_split's columns")
        records = []
        for index, row in enumerate(data["data"]):
            if not isinstance(row, list) or len(row) != len(columns):
                raise HTTPProblem(
                    422,
                    "invalid input: nothing was predicted",
                    [
                        Problem(
                            index,
                            None,
                            f"row has {len(row) if isinstance(row, list) else 'no'} "
                            f"values; columns has {len(columns)}",
                        )
                    ],
                )
            records.append(dict(zip(map(str, columns), row, strict=True)))
        return records
    if isinstance(data, dict):
        _check_envelope(data, keys[0])
        lengths = {len(v) if isinstance(v, list) else -1 for v in data.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise HTTPProblem(400, f"{keys[0]} as an object needs equal-length lists per column")
        return [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)]
    return data


def _mlflow_row(answer: dict) -> dict:
    row = {"prediction": answer["prediction"]}
    for label, p in answer.get("proba", {}).items():
        row[f"proba_{label}"] = p
    return row


def _csv_records(body: bytes, schema) -> list:
    """Records from a CSV body with a header row; a row of another width is refused."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPProblem(400, "CSV body is not UTF-8 text") from None
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
    except csv.Error as exc:
        raise HTTPProblem(400, f"malformed CSV: {exc}") from None
    if len(rows) < 2:
        raise HTTPProblem(400, "CSV body needs a header row and at least one row of values")
    header, rows = rows[0], rows[1:]
    _check_unique_columns(header, "the CSV header")
    by_name = {c.name: c for c in schema.columns}
    kinds = [by_name.get(name) for name in header]
    records, problems = [], []
    for index, row in enumerate(rows):
        if len(row) != len(header):
            message = f"row has {len(row)} values; the header has {len(header)}"
            problems.append(Problem(index, None, message))
            continue
        records.append(
            {
                name: _csv_value(raw, column)
                for name, raw, column in zip(header, row, kinds, strict=True)
            }
        )
    if problems:
        raise HTTPProblem(422, "invalid input: nothing was predicted", problems[:50])
    return records


def _check_envelope(payload: dict, where: str) -> None:
    """Refuse a request object that gave a key twice (JSON would keep the last silently)."""
    repeated = jsoncodec.duplicates(payload)
    if repeated:
        problems = [Problem(None, k, f"{where} gives this key more than once") for k in repeated]
        raise HTTPProblem(422, "invalid request: nothing was predicted", problems)


def _check_unique_columns(columns: list, where: str) -> None:
    repeated = sorted({str(c) for c in columns if columns.count(c) > 1})
    if repeated:
        problems = [Problem(None, c, f"{where} names this column more than once") for c in repeated]
        raise HTTPProblem(422, "invalid input: nothing was predicted", problems)


def _csv_value(raw, column):
    if raw is None or raw == "":
        return None
    if column is None:
        return raw
    if column.kind == "numeric":
        try:
            number = float(raw)
        except ValueError:
            return raw
        return int(number) if column.is_integer and number.is_integer() else number
    if column.kind == "boolean":
        lowered = raw.strip().lower()
        return {"true": True, "false": False, "1": True, "0": False}.get(lowered, raw)
    return raw


def _feedback_items(payload) -> list[tuple[str, object]]:
    entries = (
        payload.get("feedback")
        if isinstance(payload, dict) and "feedback" in payload
        else [payload]
    )
    if not isinstance(entries, list) or not entries:
        raise HTTPProblem(400, 'send {"id": ID, "label": Y} or {"feedback": [...]}')
    items, problems = [], []
    for index, entry in enumerate(entries):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("id"), str)
            or "label" not in entry
        ):
            problems.append(Problem(index, None, "each feedback needs a string 'id' and a 'label'"))
            continue
        items.append((entry["id"], entry["label"]))
    if problems:
        raise HTTPProblem(422, "invalid feedback: nothing was recorded", problems)
    return items


_V2_TYPES = {
    "numeric": "FP64",
    "boolean": "BOOL",
    "categorical": "BYTES",
    "text": "BYTES",
    "datetime": "BYTES",
}


def _v2_datatype(column) -> str:
    if column.is_integer:
        return "INT64"
    return _V2_TYPES.get(column.kind, "BYTES")


def _v2_prediction_datatype(classes) -> str:
    """INT64, BOOL or BYTES after the classes' type; FP64 for a regressor."""
    if not classes:
        return "FP64"
    if all(isinstance(c, bool) for c in classes):
        return "BOOL"
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "INT64"
    return "BYTES"


def _check_v2_name(model_name: str, model_version: str | None, config: ServerConfig) -> None:
    if model_name != config.name:
        raise HTTPProblem(
            404, f"model {model_name!r} is not served here; this server serves {config.name!r}"
        )
    if model_version is not None and model_version != config.version:
        raise HTTPProblem(
            404,
            f"version {model_version!r} of {config.name!r} is not served here; this server "
            f"serves version {config.version}",
        )


def _v2_metadata(config: ServerConfig, service: Service) -> dict:
    outputs = [
        {
            "name": "prediction",
            "datatype": _v2_prediction_datatype(service.classes),
            "shape": [-1],
        }
    ]
    if service.classes:
        outputs.append({"name": "proba", "datatype": "FP64", "shape": [-1, len(service.classes)]})
    return {
        "name": config.name,
        "versions": [config.version],
        "platform": "nbmlops",
        "inputs": [
            {"name": c.name, "datatype": _v2_datatype(c), "shape": [-1]}
            for c in service.schema.columns
        ],
        "outputs": outputs,
    }


#: What the data of a V2 tensor may hold, per datatype (a bool is no number here).
_V2_DATA = {
    "BOOL": ("true or false", lambda v: isinstance(v, bool)),
    "BYTES": ("strings", lambda v: isinstance(v, str)),
    "FP": (
        "numbers",
        lambda v: isinstance(v, (int, float, jsoncodec.NonFinite)) and not isinstance(v, bool),
    ),
    "INT": ("integers", lambda v: isinstance(v, int) and not isinstance(v, bool)),
}


def _v2_records(payload, schema) -> list:
    """Records from a V2 inference request: one named tensor per column, of shape [n] or
    [n, 1], whose data match its declared datatype (null stands for a missing value)."""
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise HTTPProblem(400, "an inference request needs 'inputs': a list of named tensors")
    _check_envelope(payload, "the request")
    columns: dict[str, list] = {}
    problems: list[Problem] = []
    for index, tensor in enumerate(inputs):
        problem = _v2_tensor_problem(index, tensor)
        if problem is None and tensor["name"] in columns:
            problem = Problem(None, tensor["name"], "two input tensors have this name")
        if problem is not None:
            problems.append(problem)
            continue
        columns[tensor["name"]] = tensor["data"]
    if problems:
        raise HTTPProblem(422, "invalid input: nothing was predicted", problems)
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        shown = ", ".join(f"{k}: {len(v)}" for k, v in columns.items())
        raise HTTPProblem(
            422,
            "invalid input: nothing was predicted",
            [Problem(None, None, f"every input tensor needs the same length; got {shown}")],
        )
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _v2_tensor_problem(index: int, tensor) -> Problem | None:
    """What is wrong with one input tensor, or None."""
    if (
        not isinstance(tensor, dict)
        or not isinstance(tensor.get("name"), str)
        or not isinstance(tensor.get("data"), list)
    ):
        return Problem(None, None, f"inputs[{index}] needs a 'name' and a 'data' list")
    name, data, shape = tensor["name"], tensor["data"], tensor.get("shape")
    repeated = jsoncodec.duplicates(tensor)
    if repeated:
        return Problem(None, name, f"the tensor gives {', '.join(repeated)} more than once")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(type(d) is int and d >= 0 for d in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        return Problem(None, name, f"shape must be [n] or [n, 1], got {shape!r}")
    if shape[0] != len(data):
        return Problem(None, name, f"shape {shape} says {shape[0]} values; data has {len(data)}")
    datatype = tensor.get("datatype")
    family = datatype[:-2] if isinstance(datatype, str) and datatype[-2:].isdigit() else datatype
    if family not in _V2_DATA:
        return Problem(None, name, f"unknown datatype {datatype!r}: use BOOL, BYTES, INT64 or FP64")
    wanted, fits = _V2_DATA[family]
    for row, value in enumerate(data):
        if value is not None and not fits(value):
            return Problem(row, name, f"datatype {datatype} holds {wanted}; got {value!r}")
    return None


def _v2_response(config: ServerConfig, service: Service, answers: list[dict], payload) -> dict:
    predictions = [a["prediction"] for a in answers]
    outputs = [
        {
            "name": "prediction",
            "shape": [len(predictions)],
            "datatype": _v2_prediction_datatype(service.classes),
            "data": predictions,
        }
    ]
    if service.classes:
        labels = [str(c) for c in service.classes]
        flat = [a["proba"][label] for a in answers for label in labels]
        outputs.append(
            {
                "name": "proba",
                "shape": [len(answers), len(labels)],
                "datatype": "FP64",
                "data": flat,
            }
        )
    response = {
        "model_name": config.name,
        "model_version": config.version,
        "outputs": outputs,
        "parameters": {"ids": [a["id"] for a in answers]},
    }
    if isinstance(payload, dict) and isinstance(payload.get("id"), str):
        response["id"] = payload["id"]
    return response


def _record_schema(schema) -> dict:
    """JSON Schema of one input record, from schema.json (for /docs and API clients)."""
    properties = {}
    for column in schema.columns:
        if column.kind == "numeric":
            prop = {"type": "integer" if column.dtype.startswith("int") else "number"}
        elif column.kind == "boolean":
            prop = {"type": "boolean"}
        elif column.kind == "datetime":
            prop = {"type": "string", "format": "date-time"}
        else:
            prop = {"type": "string"}
            if column.categories is not None:
                prop["enum"] = list(column.categories)
        if column.nullable:
            prop = {"anyOf": [prop, {"type": "null"}]}
        properties[column.name] = prop
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _openapi(app: FastAPI, schema) -> dict:
    """FastAPI's OpenAPI document with the scoring routes, which FastAPI does not serve, added."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            openapi_version=app.openapi_version,
            description=app.description,
            routes=app.routes,
        )
        document["paths"].update(_scoring_paths(schema))
        app.openapi_schema = document
    return app.openapi_schema


def _scoring_paths(schema) -> dict:
    record = _record_schema(schema)
    records = {
        "type": "object",
        "properties": {"records": {"type": "array", "items": record, "minItems": 1}},
        "required": ["records"],
        "additionalProperties": False,
    }
    mlflow = _json_content(
        {
            "type": "object",
            "properties": {"dataframe_records": {"type": "array", "items": record, "minItems": 1}},
            "required": ["dataframe_records"],
        }
    )
    mlflow["text/csv"] = {"schema": {"type": "string"}}
    v2 = _post(
        "Open Inference Protocol: infer",
        "v2_infer",
        _json_content(
            {
                "type": "object",
                "properties": {"inputs": {"type": "array", "items": {"type": "object"}}},
                "required": ["inputs"],
            }
        ),
    )
    v2["post"]["parameters"] = [
        {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    feedback = {"type": "object", "properties": {"id": {"type": "string"}, "label": {}}}
    return {
        "/predict": _post("Score records", "predict", _json_content({"oneOf": [records, record]})),
        "/invocations": _post("MLflow scoring protocol", "invocations", mlflow),
        "/feedback": _post(
            "Ground truth for earlier predictions", "feedback", _json_content(feedback)
        ),
        "/v2/models/{model_name}/infer": v2,
    }


def _json_content(json_schema: dict) -> dict:
    return {"application/json": {"schema": json_schema}}


def _post(summary: str, operation_id: str, content: dict) -> dict:
    answer = {"application/json": {"schema": {"type": "object"}}}
    return {
        "post": {
            "summary": summary,
            "operationId": operation_id,
            "requestBody": {"required": True, "content": content},
            "responses": {
                "200": {"description": "Answered", "content": answer},
                "4XX": {
                    "description": "Not answered: the error, with each offending record and field",
                    "content": answer,
                },
            },
        }
    }
