"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API, translated onto the one internal
request (dialects/messages_request.py) and written from the flow's events (dialects/messages_events.py).

The key is `x-api-key` (Anthropic's SDK) or `Authorization: Bearer`; `anthropic-version` is accepted whatever
its value. Every error, before or after the first token, is Anthropic's `{"type": "error", "error": {"type",
"message"}}` with the same status codes as the OpenAI dialects.

count_tokens is the coordinator's own estimate, not a tokenizer's count (the coordinator has none): the
prompt's UTF-8 bytes / 3 plus the template's overhead, the upper estimate routing plans with; its response
says so in `x-darkbloom-token-count: estimate`.

Public names: Messages, CountTokens, anthropic_error, credentials.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent.coordinator.core import Coordinator
from agent.coordinator.dialects.messages_events import MessageState, api_error_body
from agent.coordinator.dialects.messages_request import MessagesBody, to_chat
from agent.coordinator.dialects.strict_body import checked, read_json, validated
from agent.coordinator.errors import ApiError, BadRequest, ModelNotFound
from agent.coordinator.flow import RequestFlow
from agent.coordinator.http.event_life import EventLife, event_sse
from agent.coordinator.http.request_life import Translated, read_body
from agent.coordinator.routing.estimate import estimate_prompt
from agent.wire.chat_body import ChatCompletionBody
from agent.wire.protocol import ProtocolError, validate_chat_request

ESTIMATE_HEADER = "x-darkbloom-token-count"


def credentials(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    return f"Bearer {key}" if key is not None else request.headers.get("authorization")


def anthropic_error(exc: ApiError) -> Response:
    return JSONResponse(api_error_body(exc), status_code=exc.status, headers=exc.headers)


class Messages(EventLife):
    def credentials(self, request: Request) -> str | None:
        return credentials(request)

    def parse(self, raw: bytes, request: Request) -> Translated:
        source = validated(MessagesBody, read_json(raw))
        return Translated(checked(self.coordinator, to_chat(source), "Messages"), source)

    def error_response(self, exc: ApiError) -> Response:
        return anthropic_error(exc)

    def headers(self, flow: RequestFlow, body: ChatCompletionBody) -> dict[str, str]:
        return {**super().headers(flow, body), "request-id": flow.exchange.request_id}  # the SDK's _request_id

    def stream_error(self, exc: ApiError) -> bytes:
        return event_sse([api_error_body(exc)])

    def state(self, flow: RequestFlow, request: Translated) -> MessageState:
        meter = flow.meter  # the agent's prompt count from inference_accepted, held within the coordinator's bounds
        input_tokens = meter.delivered().prompt_tokens if meter.prompt_claim is not None else 0
        return MessageState(flow.exchange.request_id, request.body.model, input_tokens)

    def whole(self, state: MessageState) -> dict[str, Any]:
        return state.message()


class CountTokens:
    """POST /v1/messages/count_tokens: `{"input_tokens": N}`, an estimate (see the module's docstring)."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    async def count(self, request: Request) -> Response:
        coordinator = self.coordinator
        try:
            account = coordinator.authenticate(credentials(request))
            # The same limits as a request (in open mode, the address's rate): counting is work too.
            coordinator.precheck(account, request.client.host if request.client else None)
            source = validated(MessagesBody, read_json(await read_body(request, coordinator.settings.body_read_timeout_s)))
            body = validate_chat_request(to_chat(source, is_counting=True))
            if isinstance(body, ProtocolError):
                raise BadRequest(f"{body.message} (in the Messages request as translated to chat completions)",
                                 param=body.field)
            if body.model not in coordinator.known_models():
                raise ModelNotFound(f"the model {body.model!r} does not exist here", param="model")
        except ApiError as exc:
            return anthropic_error(exc)
        estimate = estimate_prompt(body)
        return JSONResponse({"input_tokens": estimate.tokens}, headers={ESTIMATE_HEADER: "estimate"})

