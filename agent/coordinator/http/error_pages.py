"""Starlette's own 404 (no such path) and 405 (a wrong method, with Allow) as JSON errors in the dialect's
shape, so a client's SDK reads them like any other API error instead of failing to parse plain text:
Anthropic's `{"type": "error", "error": {...}}` when the request looks like an Anthropic client's (an
`anthropic-version` or `x-api-key` header, or a path under /v1/messages), OpenAI's otherwise.

Public names: EXCEPTION_HANDLERS, ENDPOINTS, is_anthropic.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from agent.coordinator.dialects.messages_events import error_body as anthropic_error_body
from agent.coordinator.dialects.messages_events import error_type
from agent.coordinator.errors import error_body

ENDPOINTS = ("POST /v1/chat/completions, POST /v1/responses, POST /v1/messages, POST /v1/messages/count_tokens, "
             "POST /v1/completions, GET /v1/models, GET /v1/models/{id}, GET /v1/me, GET /health")


def is_anthropic(request: Request) -> bool:
    headers = request.headers
    return "anthropic-version" in headers or "x-api-key" in headers or request.url.path.startswith("/v1/messages")


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        message, code = f"Invalid URL ({where}): no such endpoint here; the API serves {ENDPOINTS}", "unknown_url"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message, code = f"{where} is not allowed here; use {allowed or 'another method'}", "method_not_allowed"
    else:
        message, code = str(exc.detail), None
    if is_anthropic(request):
        body = anthropic_error_body(message, error_type(exc.status_code))
    else:
        body = error_body(message, "invalid_request_error", code)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


EXCEPTION_HANDLERS = {HTTPException: _http_error}
