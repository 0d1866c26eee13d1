"""Starlette's own 404 (no such path) and 405 (a wrong method, with Allow) in OpenAI's error shape, so a
client's SDK reads them like any other API error instead of failing to parse plain text.

Public names: EXCEPTION_HANDLERS.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from agent.coordinator.errors import error_body

ENDPOINTS = "POST /v1/chat/completions, GET /v1/models, GET /v1/models/{id}, GET /v1/me, GET /health"


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        message, code = f"Invalid URL ({where}): no such endpoint here; the API serves {ENDPOINTS}", "unknown_url"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message, code = f"{where} is not allowed here; use {allowed or 'another method'}", "method_not_allowed"
    else:
        message, code = str(exc.detail), None
    return JSONResponse(error_body(message, "invalid_request_error", code), status_code=exc.status_code,
                        headers=exc.headers)


EXCEPTION_HANDLERS = {HTTPException: _http_error}
