"""The flow's events (Token / Finished / Broken) as a Responses API response: its stream events and the final
response object, from one state, so a streamed and a whole answer are the same output.

A stream is, as OpenAI sends it (every event has its `sequence_number`):

    response.created, response.in_progress                    the response, status in_progress, no output
    response.output_item.added {item}                         an item opens: reasoning, message or function_call
      response.content_part.added {part}                      reasoning_text / output_text (not for a call)
      response.reasoning_text.delta / response.output_text.delta / response.function_call_arguments.delta
      response.reasoning_text.done / response.output_text.done / response.function_call_arguments.done
      response.content_part.done
    response.output_item.done {item}                          the item, completed
    response.completed {response}                             with usage; response.incomplete at max tokens
                                                              (incomplete_details.reason max_output_tokens)
    response.failed {response}                                an error after the first token: response.error

Output items follow the text as it comes: a change from reasoning to text to a call closes one item and opens
the next. Reasoning is returned as the item's `content` (reasoning_text), not summarized: `summary` is empty; with
`include: ["reasoning.encrypted_content"]` the item's `encrypted_content` is that text too (responses_request.py).
`usage.output_tokens_details.reasoning_tokens` is 0: the flow counts tokens, not which channel they were in.

Public names: ResponseState, response_id.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from agent.coordinator.dialects.responses_request import (
    ENCRYPTED_REASONING,
    JsonSchemaParam,
    NamedFunction,
    ResponsesBody,
)
from agent.coordinator.flow import Broken, Finished, Token
from agent.wire.frames import FinishReason, UsageReport

Event = dict[str, Any]
KINDS = {"reasoning": "rs", "message": "msg", "function_call": "fc"}


def response_id(request_id: str) -> str:
    """`resp_…` from the coordinator's request id (`chatcmpl-<hex>`): one id in the logs and the response."""
    return "resp_" + request_id.rpartition("-")[2]


class ResponseState:
    """One response, built from the flow's events; each method returns the stream events it caused."""

    def __init__(self, request_id: str, body: ResponsesBody, model: str, created_at: int | None = None) -> None:
        self.id, self.body, self.model = response_id(request_id), body, model
        self.created_at = int(time.time()) if created_at is None else created_at
        self.output: list[dict[str, Any]] = []
        self.status, self.usage, self.error = "in_progress", None, None
        self.incomplete_reason: str | None = None
        self._sequence = 0
        self._open: dict[str, Any] | None = None  # the item being written
        self._calls: dict[int, int] = {}  # a tool call's index → its item's output index

    # -- events in
    def begin(self) -> list[Event]:
        return [self._event("response.created", response=self.response()),
                self._event("response.in_progress", response=self.response())]

    def token(self, token: Token) -> list[Event]:
        events: list[Event] = []
        if token.reasoning:
            events += self._text("reasoning", token.reasoning)
        if token.content:
            events += self._text("message", token.content, [entry.model_dump() for entry in token.logprobs])
        for piece in token.tool_calls:
            if piece.id is not None:
                events += self._close()
                events += self._open_item({"type": "function_call", "id": self._item_id("function_call"),
                                           "call_id": piece.id, "name": piece.name or "", "arguments": "",
                                           "status": "in_progress"})
                self._calls[piece.index] = self._index
            index = self._calls.get(piece.index)
            if piece.arguments and index is not None:  # by the call's own item, even after text came between
                item = self.output[index]
                item["arguments"] += piece.arguments
                events.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                          output_index=index, delta=piece.arguments))
        return events

    def finish(self, finished: Finished) -> list[Event]:
        events = self._close()
        self.usage = finished.usage
        if finished.finish_reason == FinishReason.LENGTH.value:
            self.status, self.incomplete_reason = "incomplete", "max_output_tokens"
            return [*events, self._event("response.incomplete", response=self.response())]
        self.status = "completed"
        return [*events, self._event("response.completed", response=self.response())]

    def fail(self, broken: Broken) -> list[Event]:
        events = self._close()
        self.status, self.error = "failed", {"code": broken.code, "message": broken.message}
        return [*events, self._event("response.failed", response=self.response())]

    # -- the response object
    def response(self) -> dict[str, Any]:
        body = self.body
        return {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": self.status,
            "background": False, "error": self.error,
            "incomplete_details": {"reason": self.incomplete_reason} if self.incomplete_reason else None,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens, "model": self.model,
            "output": [dict(item) for item in self.output], "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": None,
            "reasoning": {"effort": body.reasoning.effort if body.reasoning else None, "summary": None},
            "store": False, "temperature": body.temperature, "text": {"format": _format(body)},
            "tool_choice": _tool_choice(body), "tools": [tool.model_dump(exclude_none=True) for tool in body.tools or ()],
            "top_p": body.top_p, "truncation": "disabled", "usage": _usage(self.usage), "user": body.user,
            "metadata": dict(body.metadata or {}),
        }

    # -- items
    def _text(self, kind: str, text: str, logprobs: list[dict[str, Any]] | None = None) -> list[Event]:
        events: list[Event] = []
        if self._open is None or self._open["type"] != kind:
            events += self._close()
            if kind == "reasoning":
                item = {"type": "reasoning", "id": self._item_id(kind), "summary": [], "content": []}
                part = {"type": "reasoning_text", "text": ""}
            else:
                item = {"type": "message", "id": self._item_id(kind), "status": "in_progress", "role": "assistant",
                        "content": []}
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            events += self._open_item(item)
            item["content"].append(part)
            events.append(self._event("response.content_part.added", item_id=item["id"], output_index=self._index,
                                      content_index=0, part=dict(part)))
        part = self._open["content"][0]
        part["text"] += text
        name = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
        extra = {} if kind == "reasoning" else {"logprobs": logprobs or []}
        if logprobs:
            part["logprobs"] += logprobs
        events.append(self._event(name, item_id=self._open["id"], output_index=self._index, content_index=0,
                                  delta=text, **extra))
        return events

    def _open_item(self, item: dict[str, Any]) -> list[Event]:
        self.output.append(item)
        self._open = item
        return [self._event("response.output_item.added", output_index=self._index, item=_copy(item))]

    def _close(self) -> list[Event]:
        item, self._open = self._open, None
        if item is None:
            return []
        index, events = len(self.output) - 1, []
        if item["type"] == "function_call":
            events.append(self._event("response.function_call_arguments.done", item_id=item["id"],
                                      output_index=index, name=item["name"], arguments=item["arguments"]))
        else:
            part = item["content"][0]
            if item["type"] == "reasoning":
                events.append(self._event("response.reasoning_text.done", item_id=item["id"], output_index=index,
                                          content_index=0, text=part["text"]))
            else:
                events.append(self._event("response.output_text.done", item_id=item["id"], output_index=index,
                                          content_index=0, text=part["text"], logprobs=part["logprobs"]))
            events.append(self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                      content_index=0, part=dict(part)))
        if item["type"] != "reasoning":
            item["status"] = "completed"
        elif ENCRYPTED_REASONING in (self.body.include or ()):
            item["encrypted_content"] = item["content"][0]["text"]
        events.append(self._event("response.output_item.done", output_index=index, item=_copy(item)))
        return events

    @property
    def _index(self) -> int:
        return len(self.output) - 1

    def _item_id(self, kind: str) -> str:
        return f"{KINDS[kind]}_{secrets.token_hex(12)}"

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "content": [dict(part) for part in item["content"]]} if "content" in item else dict(item)


def _usage(usage: UsageReport | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {"input_tokens": usage.prompt_tokens, "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.prompt_tokens + usage.completion_tokens}


def _format(body: ResponsesBody) -> dict[str, Any]:
    fmt = body.text.format if body.text else None
    if fmt is None:
        return {"type": "text"}
    if isinstance(fmt, JsonSchemaParam):
        return fmt.model_dump(by_alias=True, exclude_none=True)
    return {"type": fmt.type}


def _tool_choice(body: ResponsesBody) -> Any:
    if isinstance(body.tool_choice, NamedFunction):
        return body.tool_choice.model_dump()
    return body.tool_choice or "auto"
