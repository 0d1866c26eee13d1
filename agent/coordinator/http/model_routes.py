"""/v1/models and /v1/models/{id} (the openai SDK's models.list and models.retrieve), in OpenAI's shape.

An Anthropic client (an `anthropic-version` or `x-api-key` header: the `anthropic` SDK's models.list and
models.retrieve) gets Anthropic's shapes: `{"type": "model", "id", "display_name", "created_at"}`, a list with
`has_more`, errors as `{"type": "error", ...}`.

A model is listed while the coordinator knows it (core.known_models): the catalog's, and any a provider
has registered here, even while no provider serves it now (a request for it gets 503 with Retry-After,
not 404). `created` is when a provider first registered it here, else when the coordinator loaded its
catalog.

Public names: model_routes, model_object, anthropic_model_object.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.coordinator.core import Coordinator
from agent.coordinator.errors import ModelNotFound
from agent.coordinator.http.error_pages import is_anthropic
from agent.coordinator.http.messages_api import anthropic_error

OWNED_BY = "darkbloom"


def model_object(coordinator: Coordinator, model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": coordinator.model_created(model), "owned_by": OWNED_BY}


def anthropic_model_object(coordinator: Coordinator, model: str) -> dict[str, Any]:
    created = datetime.fromtimestamp(coordinator.model_created(model), UTC).isoformat().replace("+00:00", "Z")
    return {"type": "model", "id": model, "display_name": model, "created_at": created, "lifecycle": "active"}


def model_routes(coordinator: Coordinator, *, refuse) -> list[Route]:
    """`refuse(request)` is the API's key check (None when the request may go on)."""

    async def models(request: Request) -> Response:
        if (refusal := refuse(request)) is not None:
            return refusal
        known = coordinator.known_models()
        if is_anthropic(request):
            return JSONResponse({"data": [anthropic_model_object(coordinator, m) for m in known], "has_more": False,
                                 "first_id": known[0] if known else None, "last_id": known[-1] if known else None})
        return JSONResponse({"object": "list", "data": [model_object(coordinator, m) for m in known]})

    async def model(request: Request) -> Response:
        if (refusal := refuse(request)) is not None:
            return refusal
        model_id = request.path_params["model_id"]
        if model_id not in coordinator.known_models():
            missing = ModelNotFound(f"the model {model_id!r} does not exist here (available: "
                                    f"{', '.join(coordinator.known_models()) or 'none yet'})", param="model")
            return anthropic_error(missing) if is_anthropic(request) else missing.response()
        if is_anthropic(request):
            return JSONResponse(anthropic_model_object(coordinator, model_id))
        return JSONResponse(model_object(coordinator, model_id))

    # After /v1/models/capacity in the route list: a model id may contain '/', so this one takes the rest.
    return [Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", model, methods=["GET"])]
