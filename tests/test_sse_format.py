"""The SSE hot path writes the same bytes as the plain encoding of OpenAI's chunk (openai_format.py), and
Tokens that arrive together merge into one delta that reads as its parts did (token_merge.py)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.coordinator.flow import Broken, Finished, Token
from agent.coordinator.http.openai_format import StreamFormat, logprobs_body, sse, tool_call_delta
from agent.coordinator.token_merge import merge
from agent.wire.frames import ToolCallDelta, UsageReport
from agent.wire.logprobs import TokenLogprob
from agent.wire.tool_deltas import coalesce_tool_deltas

TEXT = st.text(max_size=40)  # any code point, quotes, controls and line separators included


def plain(fmt: StreamFormat, content: str, reasoning: str, logprobs=(), tool_calls=(), index: int = 0) -> bytes:
    """The chunk as a dict, encoded whole: what the stream wrote before the envelope was made once."""
    delta: dict = {}
    if reasoning:
        delta.update({"reasoning": reasoning, "reasoning_content": reasoning} if fmt.reasoning_field == "both"
                     else {fmt.reasoning_field: reasoning})
    if content:
        delta["content"] = content
    if tool_calls:
        delta["tool_calls"] = [tool_call_delta(p) for p in coalesce_tool_deltas(tool_calls)]
    choice = {"index": index, "delta": delta, "logprobs": logprobs_body(logprobs) if logprobs else None,
              "finish_reason": None}
    chunk = {"id": fmt.completion_id, "object": "chat.completion.chunk", "created": fmt.created, "model": fmt.model,
             "system_fingerprint": None, "choices": [choice]}
    if fmt.include_usage:
        chunk["usage"] = None
    return sse(chunk)


@settings(max_examples=200, deadline=None)
@given(completion_id=TEXT, model=TEXT, content=TEXT, reasoning=TEXT, include_usage=st.booleans(),
       field=st.sampled_from(["reasoning", "reasoning_content", "both"]), index=st.integers(0, 127))
def test_a_delta_chunk_is_byte_for_byte_the_plain_encoding_of_openais_chunk(completion_id, model, content, reasoning,
                                                                             include_usage, field, index):
    fmt = StreamFormat(completion_id, model, field, created=1_700_000_000, include_usage=include_usage)
    assert fmt.delta(content, reasoning, index=index) == plain(fmt, content, reasoning, index=index)
    assert fmt.delta(content, reasoning, index=index) == plain(fmt, content, reasoning, index=index)  # cached


def test_logprobs_and_tool_calls_take_the_same_path_and_the_same_bytes():
    fmt = StreamFormat("chatcmpl-1", "gpt-oss-20b", "reasoning", created=5, include_usage=True)
    entries = (TokenLogprob(token="Hi", logprob=-0.25, bytes=[72, 105], top_logprobs=()),)
    calls = (ToolCallDelta(index=0, id="call_a", name="f", arguments='{"a"'), ToolCallDelta(index=0, arguments=": 1}"))
    got = fmt.delta("Hi", "", entries, calls)
    assert got == plain(fmt, "Hi", "", entries, calls)
    assert json.loads(got.removeprefix(b"data: "))["choices"][0]["delta"]["tool_calls"][0]["function"] == {
        "name": "f", "arguments": '{"a": 1}'}


@settings(max_examples=200, deadline=None)
@given(content=TEXT, reasoning=TEXT, with_logprobs=st.booleans(), with_calls=st.booleans(), with_usage=st.booleans())
def test_a_token_encodes_to_the_same_bytes_as_the_delta_of_its_parts(content, reasoning, with_logprobs, with_calls,
                                                                     with_usage):
    # The relay's fast path writes fmt.token(token); the stream's task writes fmt.delta(...) of the same token.
    fmt = StreamFormat("chatcmpl-1", "gpt-oss-20b", "both", created=5, include_usage=with_usage)
    logprobs = (TokenLogprob(token="Hi", logprob=-0.25, bytes=[72, 105], top_logprobs=()),) if with_logprobs else ()
    calls = (ToolCallDelta(index=0, id="call_a", name="f", arguments="{}"),) if with_calls else ()
    token = Token(content, reasoning, logprobs, calls)
    assert fmt.token(token) == fmt.delta(content, reasoning, logprobs, calls) == plain(fmt, content, reasoning,
                                                                                       logprobs, calls)


def test_tokens_that_arrived_together_merge_in_order_and_the_end_is_kept():
    first = Token("Hel", "", (TokenLogprob(token="Hel", logprob=-1.0, bytes=None, top_logprobs=()),))
    second = Token("lo", "so", (), (ToolCallDelta(index=0, id="call_a", name="f"),))
    end = Finished("stop", UsageReport(prompt_tokens=1, completion_tokens=2))
    token, last = merge([first, second, end])
    assert (token.content, token.reasoning, len(token.logprobs), len(token.tool_calls), last) == ("Hello", "so", 1, 1,
                                                                                                 end)


def test_a_lone_event_is_passed_on_as_it_is():
    broken = Broken("gone")
    assert merge([broken]) == (None, broken)
    only = Token("x", "")
    assert merge([only]) == (only, None)
