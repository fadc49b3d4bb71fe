"""Errors a client can cause or meet, and their OpenAI wire form."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An error answered to the client as {"error": {"message", "type", "param", "code"}}.

    `param` names the offending request field (None when no single field is to blame).
    """

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(param: str | None, message: str, code: str | None = None) -> APIError:
    """A 400 naming the field `param`, in the message too (prefixed when it does not say it)."""
    if param is not None and param not in message:
        message = f"'{param}': {message}"
    return APIError(400, message, param=param, code=code)


class QueueFullError(Exception):
    """The engine cannot take the request now: its waiting queue holds --max-waiting requests
    (code "queue_full"), or the budget policy expects the queue ahead of it to outlast the TTFT
    target (code "ttft_unreachable"). The client should retry later."""

    def __init__(self, message: str, code: str = "queue_full"):
        super().__init__(message)
        self.code = code


class EngineDeadError(Exception):
    """The engine thread stopped on an error; no request can be served any more."""


class EngineStoppedError(Exception):
    """The engine is shutting down and takes no new requests."""


class RequestFailedError(Exception):
    """One request failed inside the engine (e.g. its output could not be detokenized); the
    engine and every other request carry on."""


class NoSLOPolicyError(Exception):
    """The engine's budget policy serves no SLO (a fixed budget without edf), so there is no SLO
    policy to replace."""
