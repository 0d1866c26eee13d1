"""`response_format` of a chat-completions body: text, any JSON object, or JSON that matches a schema.

OpenAI's three shapes: `{"type": "text"}`, `{"type": "json_object"}` and `{"type": "json_schema",
"json_schema": {"name", "schema", "strict", "description"}}`. The schema is a client's JSON and the
agent compiles it into a grammar, so it is bounded here before anything else reads it: its size as
JSON text and its nesting depth (a hostile client could otherwise send a schema that costs the
agent far more than the request is worth). Whether the grammar library supports every keyword is
decided where the grammar is built (the coordinator checks before routing; the agent before
admission); this module only checks the shape.

Public names: ResponseFormat, TextFormat, JsonObjectFormat, JsonSchemaFormat, JsonSchemaSpec,
MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH, schema_text, bounded_schema.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_SCHEMA_BYTES = 64 * 1024  # as compact JSON text; OpenAI's own limits (100 properties, 5 levels) fit well inside
MAX_SCHEMA_DEPTH = 32  # nested objects and arrays, counting the schema itself


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, populate_by_name=True)


class TextFormat(_Body):
    type: Literal["text"]


class JsonObjectFormat(_Body):
    type: Literal["json_object"]


class JsonSchemaSpec(_Body):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: Annotated[str, Field(max_length=4096)] | None = None
    json_schema: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None

    @field_validator("json_schema")
    @classmethod
    def _bounded(cls, schema: dict[str, Any]) -> dict[str, Any]:
        return bounded_schema(schema)


class JsonSchemaFormat(_Body):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


def schema_text(schema: dict[str, Any]) -> str:
    """The schema as canonical JSON text: one text per schema, so equal schemas share a compiled grammar."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def bounded_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema, if its depth and size are within bounds (a tool's parameters are held to the same)."""
    depth = _depth(schema)
    if depth > MAX_SCHEMA_DEPTH:
        raise ValueError(f"the schema nests {depth} levels deep; at most {MAX_SCHEMA_DEPTH} are accepted")
    size = len(schema_text(schema).encode())
    if size > MAX_SCHEMA_BYTES:
        raise ValueError(f"the schema is {size} bytes as JSON; at most {MAX_SCHEMA_BYTES} are accepted")
    return schema


def _depth(value: Any) -> int:
    """How deeply objects and arrays nest (iterative: a hostile depth cannot exhaust the stack)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        node, depth = pending.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_SCHEMA_DEPTH:
            return deepest
        pending.extend((child, depth + 1) for child in children)
    return deepest
