"""The routes of the API dialects other than chat completions: POST /v1/responses (OpenAI Responses),
POST /v1/messages and /v1/messages/count_tokens (Anthropic Messages), POST /v1/completions (legacy
completions); GET and DELETE /v1/responses/{id} answer that no response is stored. Each is a translation onto the one internal request and shares chat completions' request life
(request_life.py): admission, holds, billing, rate limits, retries, deadlines, keep-alives and cancel.

Public names: dialect_routes.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agent.coordinator.core import Coordinator
from agent.coordinator.errors import NotStored
from agent.coordinator.http.completions_api import Completions
from agent.coordinator.http.messages_api import CountTokens, Messages
from agent.coordinator.http.responses_api import Responses


async def not_stored(request: Request) -> Response:
    """GET / DELETE /v1/responses/{id} (the SDK's responses.retrieve / delete): nothing is kept to answer with."""
    return NotStored(f"response {request.path_params['response_id']!r} is not stored: this coordinator keeps no "
                     "responses (store is answered false); send the whole conversation in `input` instead").response()


def dialect_routes(coordinator: Coordinator) -> list[Route]:
    return [Route("/v1/responses", Responses(coordinator), methods=["POST"]),
            Route("/v1/responses/{response_id:path}", not_stored, methods=["GET", "DELETE"]),
            Route("/v1/messages", Messages(coordinator), methods=["POST"]),
            Route("/v1/messages/count_tokens", CountTokens(coordinator).count, methods=["POST"]),
            Route("/v1/completions", Completions(coordinator), methods=["POST"])]
