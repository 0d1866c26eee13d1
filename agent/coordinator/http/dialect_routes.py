"""The routes of the API dialects other than chat completions: POST /v1/responses (OpenAI Responses),
POST /v1/messages and /v1/messages/count_tokens (Anthropic Messages), POST /v1/completions (legacy
completions). Each is a translation onto the one internal request and shares chat completions' request life
(request_life.py): admission, holds, billing, rate limits, retries, deadlines, keep-alives and cancel.

Public names: dialect_routes.
"""

from __future__ import annotations

from starlette.routing import Route

from agent.coordinator.core import Coordinator
from agent.coordinator.http.completions_api import Completions
from agent.coordinator.http.messages_api import CountTokens, Messages
from agent.coordinator.http.responses_api import Responses


def dialect_routes(coordinator: Coordinator) -> list[Route]:
    return [Route("/v1/responses", Responses(coordinator), methods=["POST"]),
            Route("/v1/messages", Messages(coordinator), methods=["POST"]),
            Route("/v1/messages/count_tokens", CountTokens(coordinator).count, methods=["POST"]),
            Route("/v1/completions", Completions(coordinator), methods=["POST"])]
