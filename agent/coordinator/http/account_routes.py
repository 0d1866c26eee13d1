"""GET /v1/me: a consumer's own account, with keys only. Its balance as the coordinator holds it now
(money held by requests in flight apart), its credit line, and its usage per model as written to the
ledger (a settlement still in the writer's backlog shows up within a moment). Nothing of other accounts.

Public names: account_routes.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.coordinator.billing.ledger_entries import usage_by_model
from agent.coordinator.core import Coordinator
from agent.coordinator.errors import ApiError, error_body


def account_routes(coordinator: Coordinator) -> list[Route]:
    async def me(request: Request) -> Response:
        try:
            account = coordinator.authenticate(request.headers.get("authorization"))
        except ApiError as exc:
            return exc.response()
        accounts = coordinator.accounts
        db_path = getattr(accounts.ledger, "db_path", None)
        if accounts.is_open or db_path is None:
            return JSONResponse(error_body("this coordinator runs in open mode: no accounts, no billing; /v1/me "
                                           "answers with API keys (--db)", "invalid_request_error", "open_mode"),
                                status_code=404)
        rows = await asyncio.to_thread(usage_by_model, db_path, account.id)  # a read, off the event loop
        usage = [{"model": model, "requests": n, "prompt_tokens": prompt, "completion_tokens": completion,
                  "cost_micros": cost} for model, (n, prompt, completion, cost) in rows.items()]
        return JSONResponse({
            "object": "account", "id": account.id, "currency": "USD", "unit": "micros",
            "balance_micros": accounts.balance_micros(account.id),
            "held_micros": accounts.held_micros(account.id),
            "available_micros": accounts.available_micros(account.id),
            "credit_limit_micros": account.credit_limit_micros,
            "usage": usage,
        })

    return [Route("/v1/me", me, methods=["GET"])]
