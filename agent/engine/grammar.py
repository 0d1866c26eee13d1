"""A constraint as a grammar (llguidance's lark) over the whole assistant turn of the model's chat format.

The grammar covers the turn, not just the answer, so that reasoning stays free and only the answer is
held to the schema:

    harmony   [<|channel|>analysis<|message|> THOUGHT <|end|><|start|>assistant] <|channel|>final<|message|> JSON <|return|>
    gemma     [<|channel>thought THOUGHT <channel|>] JSON            (then an eos, as llguidance allows when done)
    generic   JSON

Special tokens are grammar terminals (llguidance matches them as tokens, never as text), so the text of
the reasoning cannot fake a channel switch. THOUGHT is any text up to `max_reasoning_tokens`: a
constrained answer must have room to be produced, so reasoning may not spend the whole output budget.
JSON is compact (no whitespace between tokens): a model cannot pad the answer
with whitespace until `max_tokens`.

Tool calls (agent/engine/tool_grammar.py) use the same turn wrapper.

Public names: lark_for, json_rule, turn_grammar, token, check_grammar, GrammarInvalid, JSON_LAYOUT.
"""

from __future__ import annotations

import json
from collections.abc import Collection

import llguidance

from agent.engine.constraint import Constraint, JsonConstraint
from agent.errors import InvalidRequest

JSON_LAYOUT = {"whitespace_flexible": False, "lenient": False}  # llguidance JSON options: compact
ANY_OBJECT = '{"type":"object"}'


class GrammarInvalid(InvalidRequest):
    """A schema the grammar library refuses; `param` names the request field it came from."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: the schema cannot be enforced: {message}"[:1000])
        self.param = param


def lark_for(constraint: Constraint, family: str, specials: Collection[str], *, max_reasoning_tokens: int) -> str:
    """The lark grammar of one constrained assistant turn."""
    if not isinstance(constraint, JsonConstraint):
        from agent.engine.tool_grammar import tool_call_lark  # the tool call's own module

        return tool_call_lark(constraint, family, specials, max_reasoning_tokens=max_reasoning_tokens)
    rules = [f"answer: {json_rule(constraint.schema or ANY_OBJECT, constraint.param)}"]
    answer = "answer"
    if family == "harmony":  # a response format answers on the final channel
        answer = f'{token("<|channel|>", specials)} "final" {token("<|message|>", specials)} answer ' \
                 f'{token("<|return|>", specials)}'
    return turn_grammar(family, specials, answer, rules, max_reasoning_tokens=max_reasoning_tokens)


def token(text: str, specials: Collection[str]) -> str:
    """A special token as a token terminal where the tokenizer has it, else as text."""
    return text if text in specials else json.dumps(text)


def json_rule(schema_text: str, param: str) -> str:
    """`%json {schema}` with our layout options (a client's own `x-guidance` is replaced, never obeyed)."""
    try:
        schema = json.loads(schema_text)
    except ValueError as exc:
        raise GrammarInvalid(param, f"not JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise GrammarInvalid(param, "a schema is a JSON object")
    schema["x-guidance"] = JSON_LAYOUT
    return "%json " + json.dumps(schema, separators=(",", ":"))


def turn_grammar(family: str, specials: Collection[str], answer: str, rules: list[str], *,
                 max_reasoning_tokens: int) -> str:
    """`start` for a whole assistant turn whose answer is the expression `answer`; reasoning before it is free
    (none at all with `max_reasoning_tokens` 0: a gemma prompt whose template switched thinking off)."""
    if family not in ("harmony", "gemma") or max_reasoning_tokens == 0:
        return "\n".join([f"start: {answer}", *rules])
    thought = f"thought[max_tokens={max_reasoning_tokens}]: /(.|\\n)*/"
    if family == "harmony":
        opening = (f'({token("<|channel|>", specials)} "analysis" {token("<|message|>", specials)} thought '
                   f'{token("<|end|>", specials)} {token("<|start|>", specials)} "assistant")?')
    else:
        opening = f'({token("<|channel>", specials)} "thought" thought {token("<channel|>", specials)})?'
    return "\n".join([f"start: {opening} {answer}", thought, *rules])


def check_grammar(lark: str, param: str, tokenizer: llguidance.LLTokenizer | None = None) -> str:
    """The grammar in llguidance's own form, or GrammarInvalid naming `param`."""
    grammar = llguidance.LLMatcher.grammar_from_lark(lark)
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
    if is_error:
        raise GrammarInvalid(param, messages[0] if messages else "invalid grammar")
    return grammar
