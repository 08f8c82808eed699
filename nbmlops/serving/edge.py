"""The edge of the app: token, size limits, metrics, request ids, and the scoring routes."""

from __future__ import annotations

import hmac
import itertools
import time
import uuid
from dataclasses import dataclass

from fastapi.responses import Response

from nbmlops.artifact.labels import label_problems
from nbmlops.artifact.validation import Problem
from nbmlops.errors import LogError
from nbmlops.serving.batcher import BatchLoopFailure
from nbmlops.serving.config import ServerConfig
from nbmlops.serving.deployment import Deployment
from nbmlops.serving.protocols import (
    check_v2_name,
    csv_records,
    feedback_items,
    mlflow_records,
    mlflow_row,
    native_records,
    parse_json,
    v2_records,
    v2_response,
)
from nbmlops.serving.responses import (
    LOG_UNAVAILABLE,
    SERVER_FAILED,
    HTTPProblem,
    error_response,
    json_response,
    logger,
)
from nbmlops.serving.service import ModelFailure, Service

OPEN_PATHS = frozenset(
    {"/health", "/ready", "/ping", "/v2/health/live", "/v2/health/ready", "/version"}
)


class EdgeMiddleware:
    """Counts every request in metrics, enforces the token and the body size limit, and answers
    the scoring routes itself (see :class:`ScoringRoutes`); FastAPI serves the rest."""

    def __init__(self, app, config: ServerConfig, scoring: ScoringRoutes) -> None:
        self.app = app
        self.config = config
        self.scoring = scoring
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:8] + "-"
        self._authorization = f"Bearer {config.token}".encode() if config.token else None

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
            # under the route and version that answered (the primary's unless a canary did)
            deployment = self.scoring.state.get("deployment")
            service = scope["state"].get("answered_by") or (deployment and deployment.primary)
            if service is not None:
                service.metrics.observe_request(
                    _endpoint(path),
                    status,
                    time.perf_counter() - started,
                    service.route,
                    service.version,
                )

    def _refuse(self, scope) -> HTTPProblem | None:
        headers = dict(scope.get("headers") or [])
        if self._authorization is not None and scope["path"] not in OPEN_PATHS:
            # In constant time: how long a refusal takes says nothing about the token.
            sent = headers.get(b"authorization", b"")
            if not hmac.compare_digest(sent, self._authorization):
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
    sticky_value: str | None  # the value of the deployment's sticky header, if sent
    state: dict  # the request's scope state: the service that answered goes in it


class _Disconnected(Exception):
    """The client closed the connection before its body arrived."""


class ScoringRoutes:
    """``POST /predict``, ``/invocations``, ``/feedback`` and ``/v2/models/{name}/infer`` as
    plain ASGI handlers: FastAPI's request handling would add ~0.2 ms to every prediction, 5% of
    a small scikit-learn pipeline's own time. :func:`openapi_document` documents them."""

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
        if "deployment" not in self.state:
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
        sticky = self.deployment.sticky_header
        sticky_value = headers.get(sticky) if sticky is not None else None
        if sticky_value is not None:
            sticky_value = sticky_value.decode("latin-1")
        try:
            body = await self._body(receive)
            call = _Call(
                body,
                content_type.lower(),
                v2_name,
                v2_version,
                started,
                request_id,
                sticky_value,
                scope["state"],
            )
            return await handler(call)
        except HTTPProblem as problem:
            if problem.status in (400, 413, 415, 422):
                self.service.log_rejection(endpoint, body, problem, started)
            return problem.response(request_id)
        except ModelFailure as exc:
            return error_response(500, str(exc), request_id)
        except LogError as exc:  # an answer is released only once it is logged
            logger.error("request %s: %s", request_id, exc)
            return error_response(503, LOG_UNAVAILABLE, request_id)
        except _Disconnected:
            raise
        except Exception as exc:  # noqa: BLE001 - never a traceback to the caller
            if not isinstance(exc, BatchLoopFailure):
                logger.error("request %s failed", request_id, exc_info=exc)
            return error_response(500, SERVER_FAILED, request_id)

    @property
    def service(self) -> Service:
        """The primary: its schema reads the request, its log takes feedback."""
        return self.state["deployment"].primary

    @property
    def deployment(self) -> Deployment:
        return self.state["deployment"]

    async def _predict(self, call: _Call, records, endpoint: str) -> tuple[list[dict], Service]:
        """Score through the deployment; the request's state remembers who answered."""
        answers, service = await self.deployment.predict_records(
            records, endpoint, call.started, call.request_id, call.sticky_value
        )
        call.state["answered_by"] = service
        return answers, service

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
        records = native_records(parse_json(call.body))
        answers, service = await self._predict(call, records, "/predict")
        return json_response(
            {"model": self.config.name, "version": service.version, "predictions": answers}
        )

    async def invocations(self, call: _Call) -> Response:
        if call.content_type.startswith("text/csv"):
            records = csv_records(call.body, self.service.schema)
        elif "json" in call.content_type or not call.content_type:
            records = mlflow_records(parse_json(call.body))
        else:
            raise HTTPProblem(
                415,
                f"unsupported Content-Type {call.content_type!r}: send application/json or "
                "text/csv",
            )
        answers, _ = await self._predict(call, records, "/invocations")
        return json_response({"predictions": [mlflow_row(a) for a in answers]})

    async def feedback(self, call: _Call) -> Response:
        items = feedback_items(parse_json(call.body))
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
        return json_response({"recorded": len(items)})

    async def v2_infer(self, call: _Call) -> Response:
        check_v2_name(call.model_name, call.model_version, self.config, self.service.version)
        payload = parse_json(call.body)
        records = v2_records(payload, self.service.schema)
        if call.model_version is not None:  # a version named in the path: that one answers
            service = self.service
            answers = await service.predict_records(
                records, "/v2/infer", call.started, call.request_id
            )
        else:
            answers, service = await self._predict(call, records, "/v2/infer")
        answer = v2_response(self.config, service, answers, payload)
        answer["model_version"] = service.version
        return json_response(answer)


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
