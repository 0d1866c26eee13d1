"""`response_format` on the wire (bounded shapes) and the grammar cache (bounded, one compile per schema)."""

from __future__ import annotations

import json

import pytest

from agent.engine.constraint import JsonConstraint, constraint_for
from agent.wire.protocol import InvalidField, validate_chat_request
from agent.wire.response_format import MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH, JsonSchemaFormat, schema_text


def body(response_format):
    return validate_chat_request({"messages": [{"role": "user", "content": "Hi"}], "response_format": response_format})


def test_the_three_openai_shapes_are_accepted_and_become_the_engines_constraint():
    assert constraint_for(body({"type": "text"}).response_format) is None
    assert constraint_for(body({"type": "json_object"}).response_format) == JsonConstraint()
    parsed = body({"type": "json_schema", "json_schema": {"name": "Weather", "strict": True,
                                                          "schema": {"type": "object", "required": ["b", "a"]}}})
    assert isinstance(parsed.response_format, JsonSchemaFormat)
    assert constraint_for(parsed.response_format) == JsonConstraint('{"required":["b","a"],"type":"object"}')


def test_equal_schemas_have_one_text_whatever_their_key_order():
    assert schema_text({"b": 1, "a": {"d": 2, "c": 3}}) == schema_text({"a": {"c": 3, "d": 2}, "b": 1})


@pytest.mark.parametrize("response_format, field, word", [
    ({"type": "xml"}, "response_format", "type"),
    ({"type": "json_schema"}, "response_format.json_schema.json_schema", "required"),
    ({"type": "json_schema", "json_schema": {"name": "bad name!", "schema": {}}},
     "response_format.json_schema.json_schema.name", "pattern"),
    ({"type": "json_schema", "json_schema": {"name": "w", "schema": {"enum": ["x" * 4096] * 20}}},
     "response_format.json_schema.json_schema.schema", str(MAX_SCHEMA_BYTES)),
    ({"type": "json_schema", "json_schema": {"name": "w", "schema": json.loads('{"a":' * 100 + "1" + "}" * 100)}},
     "response_format.json_schema.json_schema.schema", str(MAX_SCHEMA_DEPTH)),
    ({"type": "json_schema", "json_schema": {"name": "w", "schema": []}},
     "response_format.json_schema.json_schema.schema", "object"),
])
def test_a_hostile_or_malformed_response_format_is_refused_naming_the_field(response_format, field, word):
    refused = body(response_format)
    assert isinstance(refused, InvalidField), refused
    assert refused.field == field and word in str(refused), (refused.field, str(refused))


def test_the_grammar_cache_compiles_a_schema_once_and_keeps_at_most_its_bound(tiny_models_dir):
    from mlx_lm.utils import load_tokenizer

    from agent.engine.constrained import GrammarCache

    cache = GrammarCache(load_tokenizer(tiny_models_dir / "gemma-4-tiny"), "gemma", max_grammars=2)
    first = cache.matcher(JsonConstraint(schema_text({"type": "boolean"})), 16)
    assert first.consume_token(cache.tokenizer.tokenize_str("true")[0])
    again = cache.matcher(JsonConstraint(schema_text({"type": "boolean"})), 16)
    assert len(cache) == 1 and not again.is_stopped()  # a fresh copy, not the first row's matcher
    for kind in ("integer", "string", "null"):
        cache.matcher(JsonConstraint(schema_text({"type": kind})), 16)
    assert len(cache) == 2
