"""Responses in OpenAI's chat-completions shapes: stream chunks (SSE) and the whole completion.

A stream is, as OpenAI sends it:

    data: {..."delta": {"role": "assistant", "content": ""}...}        the role chunk, first
    data: {..."delta": {"content": "..."}...} / {"reasoning": "..."}   content and reasoning deltas
    data: {..."delta": {"tool_calls": [{"index": 0, "id": "call_…",    a call opens (id, name, empty
            "type": "function", "function": {"name": "…", "arguments": ""}}]}...}     arguments), then
    data: {..."delta": {"tool_calls": [{"index": 0, "function": {"arguments": "…"}}]}...}   its fragments
    data: {..."delta": {}, "finish_reason": "stop"}                    the finish chunk
    data: {..."choices": [], "usage": {...}}                           only with stream_options.include_usage
    data: [DONE]

With `stream_options.include_usage` every other chunk carries `"usage": null`, as OpenAI's do. With
`logprobs`, a chunk's choice carries its content tokens' `{"content": [...], "refusal": null}` (null on a
chunk without any), and the whole completion's choice all of them. With `n` > 1 each chunk carries one
choice, named by its `index`; each choice has its own role and finish chunks (choices.py).

Reasoning goes in `delta.reasoning` / `message.reasoning` by default (the name vLLM ≥ 0.10,
OpenRouter and Ollama use), or `reasoning_content` (DeepSeek's), or both: settings.reasoning_field.
An error after the first token ends the stream with finish_reason "error" and an `event: error` whose
data is OpenAI's error object (the openai SDK raises APIError on it), then [DONE].

A non-streamed answer with calls has `message.tool_calls` and `content` null when the model said nothing
else, as OpenAI returns it.

Public names: StreamFormat, completion_body, logprobs_body, usage_body, tool_call_delta, sse, DONE.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from agent.coordinator.errors import error_body
from agent.coordinator.settings import ReasoningField
from agent.coordinator.tool_calls import AssembledCall
from agent.wire.frames import ToolCallDelta, UsageReport
from agent.wire.logprobs import TokenLogprob
from agent.wire.tool_deltas import coalesce_tool_deltas

DONE = b"data: [DONE]\n\n"


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # made once: json.dumps makes one a call
_dumps = _ENCODER.encode
_quote = json.encoder.encode_basestring  # what _dumps does with a str, without its Python frame


def sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    data = _dumps(payload)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def usage_body(usage: UsageReport) -> dict[str, Any]:
    """OpenAI's usage object; `prompt_tokens_details.cached_tokens`: prompt tokens from the provider's prefix cache."""
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}}


def tool_call_delta(delta: ToolCallDelta) -> dict[str, Any]:
    """One entry of a chunk's `delta.tool_calls`: the opening piece carries id, type and name."""
    if delta.id is None:
        return {"index": delta.index, "function": {"arguments": delta.arguments}}
    return {"index": delta.index, "id": delta.id, "type": "function",
            "function": {"name": delta.name, "arguments": delta.arguments}}


def _reasoning(field: ReasoningField, text: str) -> dict[str, str]:
    if field == "both":
        return {"reasoning": text, "reasoning_content": text}
    return {field: text}


class StreamFormat:
    """The chunks of one streamed completion (same id, created and model on every chunk)."""

    def __init__(self, completion_id: str, model: str, reasoning_field: ReasoningField,
                 created: int | None = None, *, include_usage: bool = False) -> None:
        self.completion_id, self.model, self.reasoning_field = completion_id, model, reasoning_field
        self.created = int(time.time()) if created is None else created
        self.include_usage = include_usage
        self._frames: dict[int, tuple[str, str]] = {}  # per choice index: the text around a delta (_delta_chunk)
        self._content_frame: tuple[str, str] | None = None  # choice 0's text around a content string (token())

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None,
               logprobs: Sequence[TokenLogprob] = (), index: int = 0) -> bytes:
        if finish_reason is None:
            return self._delta_chunk(_dumps(delta), logprobs, index)
        choice = {"index": index, "delta": delta, "logprobs": logprobs_body(logprobs) if logprobs else None,
                  "finish_reason": finish_reason}
        chunk = {"id": self.completion_id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.model, "system_fingerprint": None, "choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None
        return sse(chunk)

    def _delta_chunk(self, delta_json: str, logprobs: Sequence[TokenLogprob], index: int) -> bytes:
        """The same bytes as sse(chunk) for a chunk without a finish_reason, from a prefix and suffix made once
        per stream: the hot path encodes only the delta (and logprobs), not the envelope around it."""
        frame = self._frames.get(index)
        if frame is None:
            frame = self._frames[index] = self._frame(index)
        lp = _dumps(logprobs_body(logprobs)) if logprobs else "null"
        return f"{frame[0]}{delta_json},\"logprobs\":{lp}{frame[1]}".encode()

    def _frame(self, index: int) -> tuple[str, str]:
        # The key order of _chunk's dicts: tests/test_sse_format.py holds the two paths to the same bytes.
        head = (f'data: {{"id":{_dumps(self.completion_id)},"object":"chat.completion.chunk",'
                f'"created":{_dumps(self.created)},"model":{_dumps(self.model)},"system_fingerprint":null,'
                f'"choices":[{{"index":{_dumps(index)},"delta":')
        tail = ',"finish_reason":null}]' + (',"usage":null' if self.include_usage else "") + "}\n\n"
        return head, tail

    def role(self, index: int = 0) -> bytes:
        return self._chunk({"role": "assistant", "content": ""}, index=index)

    def delta(self, content: str, reasoning: str, logprobs: Sequence[TokenLogprob] = (),
              tool_calls: tuple[ToolCallDelta, ...] = (), index: int = 0) -> bytes:
        if content and not reasoning and not tool_calls:  # most tokens: the same bytes without a dict to encode
            return self._delta_chunk(f'{{"content":{_quote(content)}}}', logprobs, index)
        delta: dict[str, Any] = {}
        if reasoning:
            delta.update(_reasoning(self.reasoning_field, reasoning))
        if content:
            delta["content"] = content
        if tool_calls:
            delta["tool_calls"] = [tool_call_delta(piece) for piece in coalesce_tool_deltas(tool_calls)]
        return self._chunk(delta, logprobs=logprobs, index=index)

    def token(self, token: Any) -> bytes:
        """delta() of a flow's Token (its content, reasoning, logprobs, tool calls), for choice 0: the relay's
        fast path encodes each token it writes with this one call (direct_stream.py). Most tokens are content
        alone: their bytes are one join of the quoted text and the chunk's fixed text around it."""
        content = token.content
        if content and not (token.reasoning or token.tool_calls or token.logprobs):
            head, tail = self._content_frame or self._make_content_frame()
            return f"{head}{_quote(content)}{tail}".encode()
        return self.delta(content, token.reasoning, token.logprobs, token.tool_calls)

    def _make_content_frame(self) -> tuple[str, str]:
        head, tail = self._frames.get(0) or self._frame(0)
        self._content_frame = (f'{head}{{"content":', f'}},"logprobs":null{tail}')
        return self._content_frame

    def finish(self, finish_reason: str, index: int = 0) -> bytes:
        return self._chunk({}, finish_reason, index=index)

    def usage(self, usage: UsageReport) -> bytes:
        return sse({"id": self.completion_id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model, "system_fingerprint": None, "choices": [], "usage": usage_body(usage)})

    def error(self, message: str, code: str) -> bytes:
        return sse(error_body(message, "server_error", code), event="error")


def completion_body(completion_id: str, model: str, content: str, reasoning: str, finish_reason: str,
                    usage: UsageReport, reasoning_field: ReasoningField,
                    logprobs: Sequence[TokenLogprob] | None = None,
                    tool_calls: list[AssembledCall] | None = None, index: int = 0) -> dict[str, Any]:
    """`logprobs`: the content tokens' entries when the request asked for them (None: it did not)."""
    message: dict[str, Any] = {"role": "assistant", "content": content or (None if tool_calls else ""),
                               "refusal": None}
    if reasoning:
        message.update(_reasoning(reasoning_field, reasoning))
    if tool_calls:
        message["tool_calls"] = [{"id": call.id, "type": "function",
                                  "function": {"name": call.name, "arguments": call.arguments}}
                                 for call in tool_calls]
    choice_logprobs = None if logprobs is None else logprobs_body(logprobs)
    return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": None,
            "choices": [{"index": index, "message": message, "logprobs": choice_logprobs, "finish_reason": finish_reason}],
            "usage": usage_body(usage)}


def logprobs_body(logprobs: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {"content": [entry.model_dump() for entry in logprobs], "refusal": None}
