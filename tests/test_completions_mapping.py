"""Legacy completions' pure mapping: a prompt in → a raw-prompt chat body (no template on the agent); text out
as OpenAI's text_completion objects and chunks."""

from __future__ import annotations


import pytest

from agent.coordinator.dialects import completions
from agent.coordinator.dialects.strict_body import validated
from agent.coordinator.errors import BadRequest
from agent.wire.chat_body import ChatCompletionBody
from agent.wire.protocol import validate_chat_request
from tests.dialect_support import USAGE, chat


def test_a_completions_body_is_a_raw_prompt_with_openais_default_of_16_tokens():
    body = chat(completions.to_chat(validated(completions.CompletionsBody, {"model": "m", "prompt": ["Once"],
                                                                            "stop": ["\n"], "seed": 3})))
    assert body.raw_prompt and body.messages[0].content == "Once" and body.output_limit == 16
    assert body.stop_sequences == ("\n",) and body.seed == 3


def test_a_raw_prompt_is_one_user_message_and_nothing_else():
    assert not isinstance(validate_chat_request({"messages": [{"role": "system", "content": "x"}],
                                                 "raw_prompt": True}), ChatCompletionBody)
    assert not isinstance(validate_chat_request({"messages": [{"role": "user", "content": "x"}], "raw_prompt": True,
                                                 "tools": [{"type": "function", "function": {"name": "f"}}]}),
                          ChatCompletionBody)


def test_completion_chunks_carry_text_then_the_finish_and_usage_only_when_asked():
    chunks = completions.CompletionChunks("chatcmpl-abc", "m", include_usage=False)
    first = chunks.text("Hi")
    assert first["object"] == "text_completion" and first["id"] == "cmpl-abc" and first["choices"][0]["text"] == "Hi"
    assert chunks.usage(USAGE) is None
    whole = completions.completion_object("chatcmpl-abc", "m", [completions.completion_choice("Hi", "stop")], USAGE)
    assert whole["choices"][0]["finish_reason"] == "stop" and whole["usage"]["total_tokens"] == 12


def test_an_empty_prompt_is_refused():
    with pytest.raises(BadRequest) as refused:
        validated(completions.CompletionsBody, {"model": "m", "prompt": ""})
    assert refused.value.param == "prompt"


def test_legacy_logprobs_are_parallel_lists_with_text_offsets_across_chunks():
    from agent.wire.logprobs import TokenLogprob

    asked = chat(completions.to_chat(validated(completions.CompletionsBody, {"model": "m", "prompt": "x",
                                                                            "logprobs": 2})))
    assert asked.logprobs and asked.top_logprobs == 2
    first = TokenLogprob(token="Hi", logprob=-0.1, top_logprobs=[{"token": "Hi", "logprob": -0.1},
                                                                 {"token": "Ho", "logprob": -2.5}])
    second = TokenLogprob(token=" there", logprob=-0.7)
    chunks = completions.CompletionChunks("chatcmpl-1", "m", include_usage=False)
    chunks.text("Hi", logprobs=(first,))
    later = chunks.text(" there", logprobs=(second,))
    assert later["choices"][0]["logprobs"] == {"tokens": [" there"], "token_logprobs": [-0.7],
                                               "top_logprobs": [{}], "text_offset": [2]}
    whole = completions.completion_object("chatcmpl-1", "m", [completions.completion_choice(
        "Hi there", "stop", [first, second])], USAGE)
    assert whole["choices"][0]["logprobs"]["top_logprobs"][0] == {"Hi": -0.1, "Ho": -2.5}
    assert whole["choices"][0]["logprobs"]["text_offset"] == [0, 2]
    with pytest.raises(BadRequest):
        validated(completions.CompletionsBody, {"model": "m", "prompt": "x", "logprobs": 6})
