"""What a request's output must be, as the engine is told it: JSON (any object, or one schema), or tool calls.

A constraint is plain data (no grammar library, no MLX): the request carries it, the backend turns it
into a grammar for its model's chat format (agent/engine/grammar.py) and enforces it token by token
(agent/engine/constrained.py). `param` names the request field a bad schema came from, so that the
error says which one.

    JsonConstraint      response_format json_object (schema None) or json_schema (canonical schema text)
    ToolCallConstraint  tool_choice required / a named function: one call (or, if parallel, one or more)
    ToolSchema          one function: its name and its parameters' JSON schema (canonical text)
    constraint_for(response_format) -> JsonConstraint | None
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.wire.response_format import JsonObjectFormat, JsonSchemaFormat, ResponseFormat, schema_text


@dataclass(frozen=True, slots=True)
class JsonConstraint:
    schema: str | None = None  # canonical JSON text (response_format.schema_text); None: any JSON object
    param: str = "response_format"


@dataclass(frozen=True, slots=True)
class ToolSchema:
    name: str
    parameters: str = '{"type":"object"}'  # canonical JSON text of the parameters' schema


@dataclass(frozen=True, slots=True)
class ToolCallConstraint:
    tools: tuple[ToolSchema, ...]
    forced_name: str | None = None  # a named tool_choice: only this function may be called
    is_parallel: bool = False  # one or more calls (where the chat format can carry more than one)
    param: str = "tools"


Constraint = JsonConstraint | ToolCallConstraint


def constraint_for(response_format: ResponseFormat | None) -> JsonConstraint | None:
    """The constraint a `response_format` asks for (None for `text` or none given)."""
    if isinstance(response_format, JsonObjectFormat):
        return JsonConstraint()
    if isinstance(response_format, JsonSchemaFormat):
        return JsonConstraint(schema_text(response_format.json_schema.json_schema))
    return None
