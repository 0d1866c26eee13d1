"""The flow's text lane (flow.py `_text`): a text-only chunk decoded hot (wire/hot_chunks.py) is converted
exactly as the same chunk validated by pydantic takes the general path: the same events, counts and charges,
for any seq order, claim and max_tokens a provider can send (a property test)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.flow import Broken, Finished, RequestFlow, Token
from agent.coordinator.routing.exchange import Exchange
from agent.coordinator.routing.placement import Ask
from agent.coordinator.routing.router import Router
from agent.wire.chat_body import ChatCompletionBody
from agent.wire.frames import InferenceResponseChunk
from agent.wire.hot_chunks import HotChunk, decode_hot
from tests.provider_support import FAST, GPT

ROW = st.tuples(st.integers(0, 12), st.sampled_from(["", "a", " tok", "héllo", "日本"]), st.sampled_from(["", "so"]),
                st.none() | st.integers(0, 40))


def flow(max_tokens: int) -> RequestFlow:
    body = ChatCompletionBody.model_validate({"model": GPT.id, "messages": [{"role": "user", "content": "hi"}],
                                              "stream": True, "max_tokens": max_tokens})
    exchange = Exchange("r-1", body, Ask(GPT.id, 8, 4, max_tokens), created_at=0.0)
    return RequestFlow(Router(FAST, catalog={GPT.id: GPT}), Accounts.open(), exchange, max_tokens=max_tokens)


def seen(events: list) -> list[tuple]:
    def one(event):
        if isinstance(event, Token):
            return "token", event.content, event.reasoning, event.logprobs, event.tool_calls
        if isinstance(event, Finished):
            return "finished", event.finish_reason, event.usage
        assert isinstance(event, Broken)
        return "broken", event.code
    return [one(event) for event in events]


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(ROW, max_size=30), max_tokens=st.integers(1, 60))
def test_a_hot_chunk_is_converted_as_the_same_chunk_validated_by_pydantic(rows, max_tokens):
    hot, general = flow(max_tokens), flow(max_tokens)
    for seq, content, reasoning, num_tokens in rows:
        text = json.dumps({"type": "inference_response_chunk", "request_id": "r-1", "seq": seq,
                           "delta": {"content": content, "reasoning": reasoning}, "num_tokens": num_tokens})
        fast = decode_hot(text)
        assert type(fast) is HotChunk
        hot.exchange.push(fast)
        general.exchange.push(InferenceResponseChunk.model_validate_json(text))
        events = seen(hot.ready())
        assert events == seen(general.ready())
        if events and events[-1][0] != "token":
            break  # the stream ended (cut at max_tokens): nothing after it is read
    assert hot.meter == general.meter and hot.num_chunks == general.num_chunks
    assert (hot.is_closed, hot.charged) == (general.is_closed, general.charged)
