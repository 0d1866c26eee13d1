"""POST /v1/responses: OpenAI's Responses API, translated onto the one internal request
(dialects/responses_request.py) and written from the flow's events (dialects/responses_events.py). Errors are
OpenAI's shape, as for chat completions.

Public names: Responses.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from agent.coordinator.dialects.responses_events import ResponseState
from agent.coordinator.dialects.responses_request import ResponsesBody, to_chat
from agent.coordinator.dialects.strict_body import checked, read_json, validated
from agent.coordinator.errors import ApiError
from agent.coordinator.flow import RequestFlow
from agent.coordinator.http.event_life import EventLife, event_sse
from agent.coordinator.http.request_life import Translated


class Responses(EventLife):
    def parse(self, raw: bytes, request: Request) -> Translated:
        source = validated(ResponsesBody, read_json(raw))
        return Translated(checked(self.coordinator, to_chat(source), "Responses"), source)

    def stream_error(self, exc: ApiError) -> bytes:
        return event_sse([{"type": "error", "sequence_number": 0, "code": exc.code, "message": exc.message,
                           "param": exc.param}])

    def state(self, flow: RequestFlow, request: Translated) -> ResponseState:
        return ResponseState(flow.exchange.request_id, request.source, request.body.model)

    def whole(self, state: ResponseState) -> dict[str, Any]:
        return state.response()
