"""The coordinator's check of a `response_format` schema, before any hold is taken or any provider chosen.

The agent compiles the schema into a grammar for its model (agent/engine/grammar.py) and refuses one
it cannot enforce, but by then a provider was chosen and, on the way back, the refusal would look like
a provider failure. So the coordinator asks the same grammar library first: a schema it cannot compile
is the client's 400, naming `response_format` (or the tool whose parameters a forced call must match). No
tokenizer is needed to judge a schema.

Public names: output_schema_problem.
"""

from __future__ import annotations

import llguidance

from agent.wire.chat_body import ChatCompletionBody
from agent.wire.response_format import JsonSchemaFormat, schema_text
from agent.wire.tools import OPEN_OBJECT


def output_schema_problem(body: ChatCompletionBody) -> tuple[str, str] | None:
    """(param, why) for a schema the body asks to enforce that cannot be, or None: the response_format's,
    and each tool's parameters when tool_choice forces a call (required or named)."""
    response_format = body.response_format
    if isinstance(response_format, JsonSchemaFormat):
        problem = _schema_problem(schema_text(response_format.json_schema.json_schema))
        if problem is not None:
            return "response_format", f"response_format: the schema cannot be enforced: {problem}"[:1000]
    if body.tools and body.tool_choice not in (None, "auto", "none"):
        for index, tool in enumerate(body.tools):
            problem = _schema_problem(schema_text(tool.function.parameters or OPEN_OBJECT))
            if problem is not None:
                return (f"tools[{index}].function.parameters",
                        f"tools[{index}] ({tool.function.name}): its parameters cannot be enforced: {problem}"[:1000])
    return None


def _schema_problem(schema: str) -> str | None:
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema)
    except ValueError as exc:
        return str(exc)
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    return (messages[0] if messages else "invalid") if is_error else None
