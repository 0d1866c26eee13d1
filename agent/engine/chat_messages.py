"""A request's messages in the shape each model's own chat template expects, tool turns included.

Both templates take an OpenAI-style list, with two differences the engine bridges here:
- a call's `arguments` arrive as JSON text, and both templates render a mapping (`tojson`, or gemma's own
  notation); text that is not a JSON object is passed as it came.
- gpt-oss's template renders one call per assistant message (`tool_calls[0]`) and names each `tool`
  message after the latest call, which is how harmony writes a conversation: call, result, call, result.
  An assistant turn with several calls is therefore written as that sequence, each call followed by the
  result that answers it (by `tool_call_id`). The turn's reasoning goes to the first call's `thinking`
  (the template renders it on the analysis channel before the call), or its content when it has none.
gemma-4's template takes the calls of one turn and the tool messages after it as they are, and keeps a
tool turn's reasoning (`reasoning`) itself.

Public names: template_messages, offered_tools, with_image_markers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from agent.engine.types import GenerationRequest, InvalidRequest


def offered_tools(request: GenerationRequest) -> bool:
    """Whether the model is shown the tools: tool_choice none means it does not call (as OpenAI: no call)."""
    return bool(request.tools) and request.tool_choice != "none"


def template_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The tools as templates read them: the real gpt-oss template concatenates `description` unguarded,
    so a function without one (optional in OpenAI's API) would fail to render; it gets an empty one."""
    return [{**tool, "function": {"description": "", **tool["function"]}} for tool in tools]


def with_image_markers(messages: Sequence[Mapping[str, Any]], marker: str | None) -> Sequence[Mapping[str, Any]]:
    """A message with images (content as parts) as one text with the model's image token where each image was,
    as gemma-4's own template writes it; the engine expands each into the image's soft tokens."""
    if not any(isinstance(message.get("content"), list) for message in messages):
        return messages
    if marker is None:
        raise InvalidRequest("this model is loaded without vision: it cannot take images")
    return [message if not isinstance(message.get("content"), list) else
            {**message, "content": "".join(part["text"] if part["type"] == "text" else marker
                                           for part in message["content"])}
            for message in messages]


def template_messages(family: str, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if not any(message.get("tool_calls") or message["role"] == "tool" for message in messages):
        return [dict(message) for message in messages]
    if family == "harmony":
        return _harmony(messages)
    return [_with_mapping_arguments(message) for message in messages]


def _harmony(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    answered: set[int] = set()  # tool messages already placed after their call
    for index, message in enumerate(messages):
        if index in answered:
            continue
        calls = message.get("tool_calls")
        if not calls:
            out.append(_plain(message))
            continue
        results = _following_results(messages, index)
        for number, call in enumerate(calls):
            turn: dict[str, Any] = {"role": "assistant", "content": "", "tool_calls": [_call(call)]}
            if number == 0:
                thinking = message.get("reasoning") or message.get("content") or ""
                if thinking:
                    turn["thinking"] = thinking
            out.append(turn)
            for result_index in results.get(call["id"], ()):
                answered.add(result_index)
                out.append(_plain(messages[result_index]))
    return out


def _following_results(messages: Sequence[Mapping[str, Any]], index: int) -> dict[str, list[int]]:
    """The tool messages right after an assistant turn, by the call id each answers."""
    results: dict[str, list[int]] = {}
    for later in range(index + 1, len(messages)):
        if messages[later]["role"] != "tool":
            break
        results.setdefault(messages[later]["tool_call_id"], []).append(later)
    return results


def _plain(message: Mapping[str, Any]) -> dict[str, Any]:
    return {"role": message["role"], "content": message.get("content") or ""}


def _with_mapping_arguments(message: Mapping[str, Any]) -> dict[str, Any]:
    out = {**message, "content": message.get("content") or ""}  # null beside tool_calls: the template wants text
    if message.get("tool_calls"):
        out["tool_calls"] = [_call(call) for call in message["tool_calls"]]
    return out


def _call(call: Mapping[str, Any]) -> dict[str, Any]:
    function = call["function"]
    return {"id": call["id"], "type": "function",
            "function": {"name": function["name"], "arguments": _arguments(function["arguments"])}}


def _arguments(text: str) -> Any:
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    return parsed if isinstance(parsed, dict) else text
