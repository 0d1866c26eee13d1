"""The flow's events (Token / Finished / Broken) as an Anthropic Messages response: its stream events and the
final message, from one state. Errors in Anthropic's shape are here too.

A stream is, as Anthropic sends it:

    message_start {message}                     content [], usage {input_tokens: the agent's count (held within
                                                the coordinator's bounds), output_tokens: 0}
    ping
    content_block_start {index, content_block}  thinking / text / tool_use (input {})
      content_block_delta {index, delta}        thinking_delta / text_delta / input_json_delta (partial_json)
    content_block_stop {index}
    message_delta {delta: {stop_reason, stop_sequence}, usage}   end_turn | max_tokens | tool_use; usage is the
                                                                 settled count (input_tokens too)
    message_stop
    error {error: {type, message}}              an error after the first token ends the stream

Blocks follow the text as it comes: reasoning (gpt-oss always reasons; gemma when `thinking` is enabled)
becomes thinking blocks with an empty signature; a change of kind closes one block and opens the next.
`stop_sequence` is always null and a stop sequence ends the turn as `end_turn`: the agent reports that a stop
sequence matched, not which one.

Public names: MessageState, message_id, error_body, api_error_body, error_type, stop_reason, tool_input.
"""

from __future__ import annotations

import json
from typing import Any

from agent.coordinator.errors import ApiError
from agent.coordinator.flow import Broken, Finished, Token
from agent.wire.frames import FinishReason, UsageReport

Event = dict[str, Any]
STOP_REASONS = {FinishReason.LENGTH.value: "max_tokens", FinishReason.TOOL_CALLS.value: "tool_use"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 408: "timeout_error", 409: "invalid_request_error",
               413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error", 504: "timeout_error"}


def message_id(request_id: str) -> str:
    return "msg_" + request_id.rpartition("-")[2]


def stop_reason(finish_reason: str) -> str:
    return STOP_REASONS.get(finish_reason, "end_turn")


def error_type(status: int, openai_type: str = "") -> str:
    if openai_type == "insufficient_quota":
        return "billing_error"
    return ERROR_TYPES.get(status, "api_error")


def error_body(message: str, type_: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}}


def api_error_body(exc: ApiError) -> dict[str, Any]:
    return error_body(exc.message, error_type(exc.status, exc.type))


class MessageState:
    """One message, built from the flow's events; each method returns the stream events it caused."""

    def __init__(self, request_id: str, model: str, input_tokens: int = 0) -> None:
        """`input_tokens`: the prompt's count as known at the first token (message_start's); the settled
        count replaces it in message_delta."""
        self.id, self.model = message_id(request_id), model
        self.content: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.usage = UsageReport(prompt_tokens=input_tokens, completion_tokens=0)
        self._arguments: dict[int, str] = {}  # a tool_use block's input as streamed JSON text, by block index
        self._open: str | None = None  # the kind of the block being written
        self._calls: dict[int, int] = {}  # a tool call's index → its tool_use block's index

    def begin(self) -> list[Event]:
        start = {**self.message(), "content": []}
        return [{"type": "message_start", "message": start}, {"type": "ping"}]

    def token(self, token: Token) -> list[Event]:
        events: list[Event] = []
        if token.reasoning:
            events += self._text("thinking", token.reasoning)
        if token.content:
            events += self._text("text", token.content)
        for piece in token.tool_calls:
            if piece.id is not None:
                events += self._start({"type": "tool_use", "id": piece.id, "name": piece.name or "", "input": {}})
                self._arguments[self._index] = ""
                self._calls[piece.index] = self._index
            index = self._calls.get(piece.index)
            if piece.arguments and index is not None:  # by the call's own block, even after text came between
                self._arguments[index] += piece.arguments
                events.append({"type": "content_block_delta", "index": index,
                               "delta": {"type": "input_json_delta", "partial_json": piece.arguments}})
        return events

    def finish(self, finished: Finished) -> list[Event]:
        events = self._stop()
        self.stop_reason, self.usage = stop_reason(finished.finish_reason), finished.usage
        return [*events, {"type": "message_delta", "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                          "usage": {**_input_usage(self.usage), "output_tokens": self.usage.completion_tokens}},
                {"type": "message_stop"}]

    def fail(self, broken: Broken) -> list[Event]:
        return [error_body(f"{broken.message} ({broken.code})", "api_error")]

    def message(self) -> dict[str, Any]:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [self._whole(index, block) for index, block in enumerate(self.content)],
                "stop_reason": self.stop_reason, "stop_sequence": None,
                "usage": {**_input_usage(self.usage), "output_tokens": self.usage.completion_tokens,
                          "cache_creation_input_tokens": 0}}

    def _whole(self, index: int, block: dict[str, Any]) -> dict[str, Any]:
        if block["type"] != "tool_use":
            return dict(block)
        return {**block, "input": tool_input(self._arguments.get(index, ""))}

    def _text(self, kind: str, text: str) -> list[Event]:
        events: list[Event] = []
        if self._open != kind:
            events += self._start({"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking"
                                  else {"type": "text", "text": ""})
        self.content[-1][kind] += text
        delta = {"type": "thinking_delta", "thinking": text} if kind == "thinking" else {"type": "text_delta",
                                                                                         "text": text}
        return [*events, {"type": "content_block_delta", "index": self._index, "delta": delta}]

    def _start(self, block: dict[str, Any]) -> list[Event]:
        events = self._stop()
        self.content.append(block)
        self._open = block["type"]
        return [*events, {"type": "content_block_start", "index": self._index, "content_block": dict(block)}]

    def _stop(self) -> list[Event]:
        if self._open is None:
            return []
        self._open = None
        return [{"type": "content_block_stop", "index": self._index}]

    @property
    def _index(self) -> int:
        return len(self.content) - 1


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's JSON arguments as tool_use's `input` object; arguments that are not a JSON object (a model's
    mistake) are kept whole under `_raw_arguments` rather than lost."""
    try:
        value = json.loads(arguments) if arguments else {}
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"_raw_arguments": arguments}


def _input_usage(usage: UsageReport) -> dict[str, int]:
    """Anthropic's split: `input_tokens` are the prompt tokens not read from the cache (prefix cache reads apart)."""
    return {"input_tokens": usage.prompt_tokens - usage.cached_tokens, "cache_read_input_tokens": usage.cached_tokens}
