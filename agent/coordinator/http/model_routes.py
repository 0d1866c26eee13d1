"""/v1/models and /v1/models/{id} (the openai SDK's models.list and models.retrieve), in OpenAI's shape.

A model is listed while the coordinator knows it (core.known_models): the catalog's, and any a provider
has registered here, even while no provider serves it now (a request for it gets 503 with Retry-After,
not 404). `created` is when a provider first registered it here, else when the coordinator loaded its
catalog.

Public names: model_routes, model_object.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.coordinator.core import Coordinator
from agent.coordinator.errors import ModelNotFound

OWNED_BY = "darkbloom"


def model_object(coordinator: Coordinator, model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": coordinator.model_created(model), "owned_by": OWNED_BY}


def model_routes(coordinator: Coordinator, *, refuse) -> list[Route]:
    """`refuse(request)` is the API's key check (None when the request may go on)."""

    async def models(request: Request) -> Response:
        if (refusal := refuse(request)) is not None:
            return refusal
        data = [model_object(coordinator, m) for m in coordinator.known_models()]
        return JSONResponse({"object": "list", "data": data})

    async def model(request: Request) -> Response:
        if (refusal := refuse(request)) is not None:
            return refusal
        model_id = request.path_params["model_id"]
        if model_id not in coordinator.known_models():
            return ModelNotFound(f"the model {model_id!r} does not exist here (available: "
                                 f"{', '.join(coordinator.known_models()) or 'none yet'})", param="model").response()
        return JSONResponse(model_object(coordinator, model_id))

    # After /v1/models/capacity in the route list: a model id may contain '/', so this one takes the rest.
    return [Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", model, methods=["GET"])]
