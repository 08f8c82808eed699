"""How the service answers: JSON bodies, the one error envelope of every status, its log."""

from __future__ import annotations

import logging

from fastapi.responses import Response

from nbmlops import jsoncodec
from nbmlops.artifact.validation import Problem

MODEL_FAILED = (
    "the model failed on this input, which passed the schema's checks; nothing was predicted. "
    "The server's log has the details under this request id"
)
INVALID_INPUT = "invalid input: nothing was predicted"
SERVER_FAILED = "the server failed on this request; its log has the details under this request id"
LOG_UNAVAILABLE = (
    "the prediction log cannot be written, so nothing was answered or recorded; retry shortly. "
    "The server's log has the details under this request id"
)
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
    return json_response(body, status)


def json_response(body, status: int = 200) -> Response:
    return Response(
        content=jsoncodec.dumps(body), status_code=status, media_type="application/json"
    )
