"""The grammar of a forced tool call (`tool_choice` required or a named function), per chat format.

    harmony  <|channel|>commentary to=functions.NAME <|constrain|>json<|message|> JSON-ARGS <|call|>
             (`<|call|>` ends the turn, so a harmony turn carries one call, parallel or not)
    gemma    <|tool_call>call:NAME{ARGS}<tool_call|>   (one, or with parallel calls one or more)

Reasoning before the call stays free (agent/engine/grammar.py's turn wrapper). Harmony's arguments are
JSON, held to the tool's schema by llguidance's `%json`. Gemma-4 writes arguments in its own notation
(mlx_lm/tool_parsers/gemma4.py reads it): bare keys, strings between `<|"|>` marks, everything else
as JSON; so its objects, arrays and strings are written out here and its numbers, booleans, nulls and
non-string enums are `%json` leaves. Every property of an object is written (an optional one too: a
present property is valid), in the schema's order. A schema keyword this cannot honour is refused,
naming the tool.

Public names: tool_call_lark.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from itertools import count
from typing import Any

from agent.engine.constraint import ToolCallConstraint, ToolSchema
from agent.engine.grammar import GrammarInvalid, json_rule, token, turn_grammar

GEMMA_QUOTE = '<|"|>'
_KEY = re.compile(r"^\w+$")
_LEAF_KEYWORDS = {"type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                  "multipleOf", "description", "title", "default", "examples"}


def tool_call_lark(constraint: ToolCallConstraint, family: str, specials: Collection[str], *,
                   max_reasoning_tokens: int) -> str:
    tools = [t for t in constraint.tools if constraint.forced_name in (None, t.name)]
    if not tools:
        raise GrammarInvalid("tool_choice", f"no tool is named {constraint.forced_name!r}")
    if family == "gemma":
        answer, rules = _gemma_calls(tools, specials, is_parallel=constraint.is_parallel)
    else:
        answer, rules = _harmony_call(tools, specials)
    return turn_grammar(family, specials, answer, rules, max_reasoning_tokens=max_reasoning_tokens)


def _harmony_call(tools: list[ToolSchema], specials: Collection[str]) -> tuple[str, list[str]]:
    choices = " | ".join(f"tool_{i}" for i in range(len(tools)))
    rules = [f'call: {token("<|channel|>", specials)} "commentary to=functions." ({choices}) '
             f'{token("<|call|>", specials)}']
    for i, tool in enumerate(tools):
        rules.append(f'tool_{i}: {json.dumps(tool.name)} " " {token("<|constrain|>", specials)} "json" '
                     f'{token("<|message|>", specials)} args_{i}')
        rules.append(f"args_{i}: {json_rule(tool.parameters, f'tools.{tool.name}')}")
    return "call", rules


def _gemma_calls(tools: list[ToolSchema], specials: Collection[str], *, is_parallel: bool) -> tuple[str, list[str]]:
    choices = " | ".join(f"tool_{i}" for i in range(len(tools)))
    rules = [f'call: {token("<|tool_call>", specials)} "call:" ({choices}) {token("<tool_call|>", specials)}']
    names = count()
    for i, tool in enumerate(tools):
        writer = _GemmaArgs(f"tools.{tool.name}", specials, names, rules)
        rules.append(f"tool_{i}: {json.dumps(tool.name)} {writer.value(_schema(tool), 'object')}")
    return ("call+" if is_parallel else "call"), rules


def _schema(tool: ToolSchema) -> dict[str, Any]:
    schema = json.loads(tool.parameters)
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise GrammarInvalid(f"tools.{tool.name}", "the parameters' schema must be an object")
    return schema


class _GemmaArgs:
    """Writes one tool's argument schema as lark rules in gemma-4's notation."""

    def __init__(self, param: str, specials: Collection[str], names: count, rules: list[str]) -> None:
        self.param, self.names, self.rules = param, names, rules
        self.quote = token(GEMMA_QUOTE, specials)
        # Without a special quote token, string text may not contain `<` (it could spell the quote).
        self.text = "/(.|\\n)" if GEMMA_QUOTE in specials else "/[^<]"

    def value(self, schema: Any, default_type: str | None = None) -> str:
        """A lark expression for one value; nested structures get rules of their own."""
        if not isinstance(schema, dict):
            raise GrammarInvalid(self.param, f"a schema must be an object, not {json.dumps(schema)[:80]}")
        if "anyOf" in schema or "oneOf" in schema:
            options = schema.get("anyOf") or schema.get("oneOf")
            return "(" + " | ".join(self.value(option) for option in options) + ")"
        kind = schema.get("type", default_type)
        if kind == "object":
            return self._rule(self._object(schema))
        if kind == "array":
            return self._rule(self._array(schema))
        if kind == "string":
            return self._string(schema)
        unsupported = set(schema) - _LEAF_KEYWORDS
        if kind is None and "enum" not in schema and "const" not in schema or unsupported:
            raise GrammarInvalid(self.param, f"cannot enforce {sorted(unsupported) or 'a schema without a type'}")
        return self._rule(json_rule(json.dumps(schema), self.param))

    def _rule(self, body: str) -> str:
        name = f"g_{next(self.names)}"
        self.rules.append(f"{name}: {body}")
        return name

    def _object(self, schema: dict[str, Any]) -> str:
        properties = schema.get("properties") or {}
        members = []
        for key, value in properties.items():
            if not _KEY.match(key):
                raise GrammarInvalid(self.param, f"gemma-4 cannot write the property name {key!r}")
            members.append(f'"{key}:" {self.value(value)}')
        return '"{" ' + ' "," '.join(members) + ' "}"' if members else '"{}"'

    def _array(self, schema: dict[str, Any]) -> str:
        item = self.value(schema.get("items", {"type": "string"}))
        items = f'{item} ("," {item})*'
        return f'"[" {items} "]"' if schema.get("minItems", 0) >= 1 else f'"[" ({items})? "]"'

    def _string(self, schema: dict[str, Any]) -> str:
        if "enum" in schema:
            return "(" + " | ".join(f"{self.quote} {json.dumps(str(v))} {self.quote}" for v in schema["enum"]) + ")"
        if "const" in schema:
            return f"{self.quote} {json.dumps(str(schema['const']))} {self.quote}"
        max_length = schema.get("maxLength")
        repeat = f"{{{schema.get('minLength', 0)},{max_length}}}" if max_length is not None else "*"
        return f"{self.quote} {self.text}{repeat}/ {self.quote}"
