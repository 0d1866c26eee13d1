"""Tool calls read from generated text, on outputs in the real models' formats: gpt-oss's harmony (commentary
channel as trained, the analysis channel as the model sometimes slips, two calls in one turn) and gemma-4's
`<|tool_call>` (converted by mlx-lm's own parser). Fed whole or a few characters at a time, the calls are
the same."""

from __future__ import annotations

import json

import pytest
from mlx_lm.generate import TextStateMachine

from agent.engine.chat import GEMMA_TRANSITIONS, GENERIC_FIELDS, HARMONY_FIELDS, HARMONY_TRANSITIONS, ChannelSplitter
from agent.engine.tool_calls import GemmaCalls, HarmonyCalls
from agent.wire.frames import MAX_TOOL_CALLS_PER_TURN
from agent.wire.tool_deltas import coalesce_tool_deltas

NAMES = frozenset({"get_weather", "get_time"})

# What gpt-oss-20b writes after `<|start|>assistant` (its generation prompt), as harmony defines it.
HARMONY_COMMENTARY = ('<|channel|>analysis<|message|>User wants the weather in Paris. Call the tool.<|end|>'
                      '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json'
                      '<|message|>{"city": "Paris", "unit": "c"}<|call|>')
HARMONY_ANALYSIS = ('<|channel|>analysis<|message|>Need the time.<|end|>'
                    '<|start|>assistant<|channel|>analysis to=functions.get_time code<|message|>{"zone": "UTC"}'
                    '<|call|>')
HARMONY_TWO_CALLS = ('<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Rome"}'
                     '<|call|><|start|>assistant to=functions.get_time<|channel|>commentary json<|message|>{}<|call|>')
# What gemma-4 writes: calls in its own notation, strings between <|"|>, then <|tool_response> (a stop token).
GEMMA_TWO_CALLS = ('Let me check.<|tool_call>call:get_weather{city:<|"|>Paris<|"|>,days:3}<tool_call|>'
                   '<|tool_call>call:get_time{zone:<|"|>Europe/Paris<|"|>}<tool_call|>')


def harmony(names=NAMES) -> ChannelSplitter:
    return ChannelSplitter(TextStateMachine(HARMONY_TRANSITIONS), "header", HARMONY_FIELDS,
                           calls=HarmonyCalls(names) if names else None)


def gemma(names=NAMES) -> ChannelSplitter:
    return ChannelSplitter(TextStateMachine(GEMMA_TRANSITIONS), "normal", GENERIC_FIELDS,
                           markup=('<|"|>',), calls=GemmaCalls(names, 4096) if names else None)


def read(splitter: ChannelSplitter, text: str, piece: int):
    content, reasoning, deltas = [], [], []
    for start in range(0, len(text), piece):
        more_content, more_reasoning = splitter.feed(text[start:start + piece])
        content.append(more_content)
        reasoning.append(more_reasoning)
        deltas.extend(splitter.take_tool_calls())
    content.append(splitter.finish())
    deltas.extend(splitter.take_tool_calls())
    return "".join(content), "".join(reasoning), deltas


def calls(deltas) -> list[tuple[str, dict]]:
    return [(delta.name, json.loads(delta.arguments)) for delta in coalesce_tool_deltas(deltas)]


@pytest.mark.parametrize("piece", [1, 3, 10_000])
def test_a_harmony_call_on_the_commentary_channel_is_a_call_with_its_reasoning_apart(piece):
    content, reasoning, deltas = read(harmony(), HARMONY_COMMENTARY, piece)
    assert calls(deltas) == [("get_weather", {"city": "Paris", "unit": "c"})]
    assert content == "" and reasoning == "User wants the weather in Paris. Call the tool."
    assert deltas[0].index == 0 and deltas[0].id.startswith("call_") and len(deltas[0].id) > 10


@pytest.mark.parametrize("piece", [1, 4, 10_000])
def test_a_harmony_call_the_model_put_on_the_analysis_channel_is_still_a_call(piece):
    content, reasoning, deltas = read(harmony(), HARMONY_ANALYSIS, piece)
    assert calls(deltas) == [("get_time", {"zone": "UTC"})]
    assert content == "" and reasoning == "Need the time."


def test_two_harmony_calls_in_one_turn_are_two_calls_with_their_own_index_and_id():
    splitter = harmony()
    _, _, deltas = read(splitter, HARMONY_TWO_CALLS, 10_000)
    assert calls(deltas) == [("get_weather", {"city": "Rome"}), ("get_time", {})]
    opened = [delta for delta in deltas if delta.id]
    assert [d.index for d in opened] == [0, 1] and opened[0].id != opened[1].id and splitter.num_tool_calls == 2


@pytest.mark.parametrize("text", [HARMONY_COMMENTARY, HARMONY_ANALYSIS, HARMONY_TWO_CALLS, GEMMA_TWO_CALLS])
def test_a_stream_read_token_by_token_gives_the_same_calls_and_text_as_the_whole_output(text):
    make = gemma if text is GEMMA_TWO_CALLS else harmony
    whole, single = read(make(), text, 10_000), read(make(), text, 1)
    assert calls(whole[2]) == calls(single[2]) and whole[:2] == single[:2]


def test_harmony_arguments_stream_as_the_model_writes_them():
    _, _, deltas = read(harmony(), HARMONY_COMMENTARY, 2)
    fragments = [delta.arguments for delta in deltas if delta.id is None]
    assert len(fragments) > 5 and "".join(fragments) == '{"city": "Paris", "unit": "c"}'


def test_gemma_calls_are_converted_by_mlx_lms_parser_and_the_text_beside_them_is_content():
    content, reasoning, deltas = read(gemma(), GEMMA_TWO_CALLS, 5)
    assert calls(deltas) == [("get_weather", {"city": "Paris", "days": 3}), ("get_time", {"zone": "Europe/Paris"})]
    assert content == "Let me check." and reasoning == ""
    assert deltas[0].name == "get_weather" and deltas[0].arguments == ""  # the name goes out before the arguments


def test_a_call_to_a_function_the_request_did_not_offer_is_not_a_call():
    content, _, deltas = read(harmony(frozenset({"get_time"})), HARMONY_COMMENTARY, 7)
    assert deltas == [] and content == '{"city": "Paris", "unit": "c"}'
    gemma_content, _, gemma_deltas = read(gemma(frozenset({"get_time"})), GEMMA_TWO_CALLS, 7)
    assert calls(gemma_deltas) == [("get_time", {"zone": "Europe/Paris"})]
    assert "call:get_weather" in gemma_content


def test_without_tools_no_call_is_parsed_and_the_message_is_content_as_before():
    content, _, deltas = read(harmony(None), HARMONY_TWO_CALLS, 10_000)
    assert deltas == [] and content == '{"city": "Rome"}{}'


def test_a_gemma_call_cut_off_mid_arguments_still_ends_as_a_json_object():
    _, _, deltas = read(gemma(), 'Ok<|tool_call>call:get_weather{city:<|"|>Par', 3)
    assert calls(deltas) == [("get_weather", {})]


def test_a_model_that_calls_without_end_makes_at_most_the_wire_bound_of_calls():
    flood = '<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>{}<|call|>' * (
        MAX_TOOL_CALLS_PER_TURN + 5)
    content, _, deltas = read(harmony(), flood, 10_000)
    assert len(calls(deltas)) == MAX_TOOL_CALLS_PER_TURN and content == "{}" * 5


def test_a_recipient_longer_than_any_function_name_is_not_kept_whole():
    splitter = harmony()
    content, _, deltas = read(splitter, "<|channel|>commentary to=functions." + "x" * 100_000 + "<|message|>{}", 997)
    assert deltas == [] and content == "{}" and len(splitter.calls._recipient) <= 256


@pytest.mark.parametrize("family", ["harmony", "gemma"])
def test_parallel_tool_calls_false_ends_the_turn_when_its_first_call_closes(family):
    text, make, reader = ((HARMONY_TWO_CALLS, harmony, HarmonyCalls) if family == "harmony"
                          else (GEMMA_TWO_CALLS, gemma, GemmaCalls))
    splitter = make()
    splitter.calls = reader(NAMES, is_parallel=False) if family == "harmony" else reader(NAMES, 4096, is_parallel=False)
    _, _, deltas = read(splitter, text, 3)
    assert [name for name, _ in calls(deltas)] == ["get_weather"] and splitter.is_stopped
