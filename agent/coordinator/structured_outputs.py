"""The coordinator's check of a `response_format` schema, before any hold is taken or any provider chosen.

The agent compiles the schema into a grammar for its model (agent/engine/grammar.py) and refuses one
it cannot enforce, but by then a provider was chosen and, on the way back, the refusal would look like
a provider failure. So the coordinator asks the same grammar library first: a schema it cannot compile
is the client's 400, naming `response_format`. No tokenizer is needed to judge a schema.

Public names: response_format_problem.
"""

from __future__ import annotations

import llguidance

from agent.wire.chat_body import ChatCompletionBody
from agent.wire.response_format import JsonSchemaFormat, schema_text


def response_format_problem(body: ChatCompletionBody) -> str | None:
    """Why the body's JSON schema cannot be enforced, or None (no schema, or one that compiles)."""
    response_format = body.response_format
    if not isinstance(response_format, JsonSchemaFormat):
        return None
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema_text(response_format.json_schema.json_schema))
    except ValueError as exc:
        return f"response_format: the schema cannot be enforced: {exc}"[:1000]
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        return f"response_format: the schema cannot be enforced: {messages[0] if messages else 'invalid'}"[:1000]
    return None
