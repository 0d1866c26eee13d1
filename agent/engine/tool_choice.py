"""Where a request's `tool_choice` becomes a decoding constraint.

    auto, or no tools   the model decides; nothing is constrained
    none                the model is not shown the tools (chat_messages.offered_tools), so it does not call
    required            it must call one of the offered functions
    {"function": NAME}  it must call that function

The constraint (agent/engine/constraint.py) names the allowed functions and their arguments' JSON Schemas;
the backend turns it into a grammar in the model's own call format (tool_grammar.py) and enforces it like a
response_format, so a required call is always produced and always parses. A required call wins over a
response_format: the turn is the call.

Public names: tool_call_constraint, request_constraint.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.engine.constraint import Constraint, ToolCallConstraint, ToolSchema
from agent.engine.types import GenerationRequest
from agent.wire.response_format import schema_text
from agent.wire.tools import OPEN_OBJECT


def tool_call_constraint(request: GenerationRequest) -> ToolCallConstraint | None:
    choice = request.tool_choice
    if not request.tools or choice in (None, "auto", "none"):
        return None
    functions = [tool["function"] for tool in request.tools]
    tools = tuple(ToolSchema(f["name"], schema_text(f.get("parameters") or OPEN_OBJECT)) for f in functions)
    forced = choice["function"]["name"] if isinstance(choice, Mapping) else None
    return ToolCallConstraint(tools, forced_name=forced, is_parallel=request.parallel_tool_calls is not False)


def request_constraint(request: GenerationRequest) -> Constraint | None:
    """What the request's output must be: a forced tool call, else its response_format's JSON, else nothing."""
    return tool_call_constraint(request) or request.constraint
