"""Where a request's `tool_choice` becomes a decoding constraint.

    auto, or no tools   the model decides; nothing is constrained
    none                the model is not shown the tools (chat_messages.offered_tools), so it does not call
    required            it must call one of the offered functions
    {"function": NAME}  it must call that function

`tool_call_constraint` says what constrained decoding has to enforce, in the model's own format (the family
names it: harmony's `to=functions.NAME ... <|constrain|>json<|message|>` or gemma-4's `<|tool_call>call:NAME{`),
with the JSON Schema of each allowed function's arguments. The grammar that enforces it (issue 12 point 3)
takes this object; until it is connected, required and named choices are accepted and behave as auto.

Public names: ToolCallConstraint, tool_call_constraint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.engine.types import GenerationRequest


@dataclass(frozen=True, slots=True)
class ToolCallConstraint:
    family: str  # the chat format: "harmony" | "gemma"
    functions: tuple[Mapping[str, Any], ...]  # the allowed functions: {"name", "parameters" (JSON Schema), ...}
    is_parallel: bool  # parallel_tool_calls: more than one call may follow the first


def tool_call_constraint(request: GenerationRequest, family: str) -> ToolCallConstraint | None:
    choice = request.tool_choice
    if not request.tools or choice in (None, "auto", "none"):
        return None
    functions = tuple(tool["function"] for tool in request.tools)
    if isinstance(choice, Mapping):
        functions = tuple(f for f in functions if f["name"] == choice["function"]["name"])
    return ToolCallConstraint(family, functions, request.parallel_tool_calls is not False)
