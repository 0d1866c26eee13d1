"""One `http.access` log line per HTTP request, 4xx and 5xx included, nothing of the body: method, path,
status, duration, and what the handler knew (request id, account, model, provider, tokens charged, time
to first token). An ASGI middleware wraps `send` for the status and puts an `AccessRecord` in the scope
for the handler to fill (`access_record(scope)`); the line is written when the response is done, or the
client left (status 499, as nginx says it: no response was sent). /health and /metrics, which monitors
poll, are logged at debug.

Public names: AccessLog, AccessRecord, access_record.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("agent.coordinator.http.access")
SCOPE_KEY = "darkbloom.access"
POLLED_PATHS = frozenset({"/health", "/metrics"})
STATUS_CLIENT_GONE = 499


@dataclass(slots=True)
class AccessRecord:
    request_id: str = ""
    account_id: str = ""
    model: str = ""
    provider_id: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None


_FIELDS = tuple(field.name for field in fields(AccessRecord))  # asdict() would deep-copy them: a cost per request


def access_record(scope: Scope) -> AccessRecord:
    """The record the middleware put in the scope (a loose one when the app runs without it)."""
    record = scope.get(SCOPE_KEY)
    return record if isinstance(record, AccessRecord) else AccessRecord()


class AccessLog:
    def __init__(self, app: ASGIApp, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record, started, status = AccessRecord(), self.clock(), 0
        scope[SCOPE_KEY] = record

        def sending(message: Message) -> Awaitable[None]:
            # A plain function handing back the next layer's awaitable: every body write of a stream passes
            # here, and a coroutine of its own per write would cost more than the check.
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope.get("path", "")
            known = {name: value for name in _FIELDS if (value := getattr(record, name)) not in ("", None)}
            if record.ttft_s is not None:
                known["ttft_s"] = round(record.ttft_s, 3)
            emit = log.debug if path in POLLED_PATHS else log.info
            emit("http.access", method=scope.get("method", ""), path=path, status=status or STATUS_CLIENT_GONE,
                 duration_s=round(self.clock() - started, 3), **known)
