"""Responses in OpenAI's chat-completions shapes: stream chunks (SSE) and the whole completion.

A stream is, as OpenAI sends it:

    data: {..."delta": {"role": "assistant", "content": ""}...}        the role chunk, first
    data: {..."delta": {"content": "..."}...} / {"reasoning": "..."}   content and reasoning deltas
    data: {..."delta": {}, "finish_reason": "stop"}                    the finish chunk
    data: {..."choices": [], "usage": {...}}                           only with stream_options.include_usage
    data: [DONE]

With `stream_options.include_usage` every other chunk carries `"usage": null`, as OpenAI's do. With
`logprobs`, a chunk's choice carries its content tokens' `{"content": [...], "refusal": null}` (null on a
chunk without any), and the whole completion's choice all of them.

Reasoning goes in `delta.reasoning` / `message.reasoning` by default (the name vLLM ≥ 0.10,
OpenRouter and Ollama use), or `reasoning_content` (DeepSeek's), or both: settings.reasoning_field.
An error after the first token ends the stream with finish_reason "error" and an `event: error` whose
data is OpenAI's error object (the openai SDK raises APIError on it), then [DONE].

Public names: StreamFormat, completion_body, logprobs_body, usage_body, sse, DONE.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from agent.coordinator.errors import error_body
from agent.coordinator.settings import ReasoningField
from agent.wire.frames import UsageReport
from agent.wire.logprobs import TokenLogprob

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def usage_body(usage: UsageReport) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens}


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

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None,
               logprobs: Sequence[TokenLogprob] = ()) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs_body(logprobs) if logprobs else None,
                  "finish_reason": finish_reason}
        chunk = {"id": self.completion_id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.model, "system_fingerprint": None, "choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None
        return sse(chunk)

    def role(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def delta(self, content: str, reasoning: str, logprobs: Sequence[TokenLogprob] = ()) -> bytes:
        delta: dict[str, Any] = {}
        if reasoning:
            delta.update(_reasoning(self.reasoning_field, reasoning))
        if content:
            delta["content"] = content
        return self._chunk(delta, logprobs=logprobs)

    def finish(self, finish_reason: str) -> bytes:
        return self._chunk({}, finish_reason)

    def usage(self, usage: UsageReport) -> bytes:
        return sse({"id": self.completion_id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model, "system_fingerprint": None, "choices": [], "usage": usage_body(usage)})

    def error(self, message: str, code: str) -> bytes:
        return sse(error_body(message, "server_error", code), event="error")


def completion_body(completion_id: str, model: str, content: str, reasoning: str, finish_reason: str,
                    usage: UsageReport, reasoning_field: ReasoningField,
                    logprobs: Sequence[TokenLogprob] | None = None) -> dict[str, Any]:
    """`logprobs`: the content tokens' entries when the request asked for them (None: it did not)."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if reasoning:
        message.update(_reasoning(reasoning_field, reasoning))
    choice_logprobs = None if logprobs is None else logprobs_body(logprobs)
    return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": choice_logprobs, "finish_reason": finish_reason}],
            "usage": usage_body(usage)}


def logprobs_body(logprobs: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {"content": [entry.model_dump() for entry in logprobs], "refusal": None}
