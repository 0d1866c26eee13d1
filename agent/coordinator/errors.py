"""Consumer-facing errors, in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.

    ApiError (status, type, code)                                 root
    ├── BadRequest         400 invalid_request_error  (param)    a body the API cannot use
    │   ├── RequestTimeout 408 invalid_request_error  request_timeout: the body did not arrive in time
    │   └── RequestTooLarge 413 invalid_request_error request_too_large: Content-Length or body over the limit
    ├── Unauthorized       401 invalid_request_error  invalid_api_key
    ├── ModelNotFound      404 invalid_request_error  model_not_found (param "model"): agent.errors.UnknownModel,
    │                                                             in OpenAI's words
    ├── NotStored          404 invalid_request_error  not_stored: a stored response asked for (none are kept)
    ├── Conflict           409 invalid_request_error  duplicate_request
    ├── QuotaExceeded      429 insufficient_quota     insufficient_quota: the balance cannot pay (OpenAI's words;
    │                                                             x-should-retry: false, so the SDK does not retry)
    ├── TooManyRequests    429 rate_limit_error       rate_limit_exceeded: the account's own limit
    │   └── Saturated      429 rate_limit_error       capacity_saturated: every capable provider full, queue full or timed out
    ├── ProviderFailed     502 server_error           provider_failed (every attempt failed before a token)
    ├── NoProvider         503 server_error           no_provider (no provider can ever serve it, and why)
    └── BillingUnavailable 503 server_error           ledger_unavailable (charges cannot be recorded now)

Every message says what happened and what to do. 429s carry Retry-After (whole seconds).

Public names: ApiError, BadRequest, RequestTimeout, RequestTooLarge, Unauthorized, QuotaExceeded,
ModelNotFound, NotStored, Conflict, TooManyRequests, Saturated, ProviderFailed, NoProvider, BillingUnavailable, error_body.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.responses import JSONResponse

from agent.errors import DarkbloomError


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ApiError(DarkbloomError):
    status = 500
    type = "server_error"
    code = "internal_error"
    outcome = "error"  # the metrics label

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code, self.param)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class BadRequest(ApiError):
    status, type, code, outcome = 400, "invalid_request_error", "invalid_request", "invalid_request"


class RequestTimeout(BadRequest):
    status, code = 408, "request_timeout"


class RequestTooLarge(BadRequest):
    status, code = 413, "request_too_large"


class Unauthorized(ApiError):
    status, type, code, outcome = 401, "invalid_request_error", "invalid_api_key", "unauthorized"


class QuotaExceeded(ApiError):
    status, type, code, outcome = 429, "insufficient_quota", "insufficient_quota", "insufficient_balance"

    @property
    def headers(self) -> dict[str, str]:
        return {"x-should-retry": "false"}  # the openai SDK retries a 429 unless told not to: waiting pays nothing


class ModelNotFound(ApiError):
    status, type, code, outcome = 404, "invalid_request_error", "model_not_found", "model_not_found"


class NotStored(ApiError):
    status, type, code, outcome = 404, "invalid_request_error", "not_stored", "invalid_request"


class Conflict(ApiError):
    status, type, code, outcome = 409, "invalid_request_error", "duplicate_request", "invalid_request"


class TooManyRequests(ApiError):
    status, type, code, outcome = 429, "rate_limit_error", "rate_limit_exceeded", "rate_limited"


class Saturated(TooManyRequests):
    code, outcome = "capacity_saturated", "saturated"


class ProviderFailed(ApiError):
    status, type, code, outcome = 502, "server_error", "provider_failed", "provider_failed"


class NoProvider(ApiError):
    status, type, code, outcome = 503, "server_error", "no_provider", "no_provider"


class BillingUnavailable(ApiError):
    status, type, code, outcome = 503, "server_error", "ledger_unavailable", "ledger_unavailable"
