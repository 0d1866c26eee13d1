"""Tools in the chat-completions body: the functions a client offers, the calls an assistant made, and the
consumer's choice of whether the model must call.

    FunctionTool   {"type": "function", "function": {"name", "description", "parameters", "strict"}}
    ToolCall       an earlier assistant turn's call, echoed back: {"id", "type": "function",
                   "function": {"name", "arguments"}} (arguments a JSON text, as OpenAI sends it)
    ToolChoice     "none" | "auto" | "required" | NamedToolChoice {"type": "function", "function": {"name"}}

Names follow OpenAI's rule (letters, digits, `_` and `-`, at most 64). A JSON Schema is kept as the client
sent it (a dict), bounded in size by the body's own limit; the model's chat template renders it.

Public names: FunctionTool, FunctionSpec, ToolCall, ToolCallFunction, NamedToolChoice, ToolChoice,
MAX_TOOLS, MAX_TOOL_NAME_CHARS, FUNCTION_NAME_PATTERN, OPEN_OBJECT.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.wire.response_format import bounded_schema

MAX_TOOLS = 128  # OpenAI's limit on `tools`
MAX_TOOL_NAME_CHARS = 64
MAX_DESCRIPTION_CHARS = 64 * 1024
MAX_ARGUMENTS_CHARS = 1024 * 1024  # one call's arguments, echoed back in the history
MAX_CALL_ID_CHARS = 256
FUNCTION_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
OPEN_OBJECT = {"type": "object"}  # the schema of a function without `parameters`: any object

FunctionName = Annotated[str, Field(pattern=FUNCTION_NAME_PATTERN)]


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class FunctionSpec(_Part):
    name: FunctionName
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS)] | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema; the template renders it, a grammar may enforce it
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _bounded(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if schema is None else bounded_schema(schema)


class FunctionTool(_Part):
    type: Literal["function"]
    function: FunctionSpec


class ToolCallFunction(_Part):
    name: FunctionName
    arguments: Annotated[str, Field(max_length=MAX_ARGUMENTS_CHARS)]


class ToolCall(_Part):
    id: Annotated[str, Field(min_length=1, max_length=MAX_CALL_ID_CHARS)]
    type: Literal["function"] = "function"
    function: ToolCallFunction


class _ChosenFunction(_Part):
    name: FunctionName


class NamedToolChoice(_Part):
    type: Literal["function"]
    function: _ChosenFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice
