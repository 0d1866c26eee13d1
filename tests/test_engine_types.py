"""The engine's interface types, slot state machine, streams and channel splitting (no model needed)."""

from __future__ import annotations

import asyncio

import pytest

from agent.admission import AdmissionDecision, Verdict
from agent.catalog import load_catalog
from agent.engine.chat import GEMMA_TRANSITIONS, GENERIC_FIELDS, HARMONY_FIELDS, HARMONY_TRANSITIONS, ChannelSplitter
from agent.engine.slot import InvalidTransition, Slot
from agent.engine.stream import RequestStream
from agent.engine.types import Delta, Finish, FinishReason, GenerationRequest, InvalidRequest, SlotState, Usage

SPEC = load_catalog()["gpt-oss-20b"]


def test_an_openai_body_becomes_a_chat_request():
    body = {"model": "x", "messages": [{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                                                    {"type": "text", "text": "there"}]}],
            "max_completion_tokens": 64, "temperature": 0.2, "top_p": 0.9, "seed": 5, "stop": "END",
            "reasoning_effort": "low", "stream": True, "user": "someone"}
    request = GenerationRequest.from_openai("r1", "gpt-oss-20b", body)
    assert request.messages == ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"})
    assert (request.max_tokens, request.temperature, request.top_p, request.seed) == (64, 0.2, 0.9, 5)
    assert request.stop == ("END",) and request.reasoning_effort == "low"


@pytest.mark.parametrize("body, complaint", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
    ({"messages": [{"role": "function", "content": "x"}]}, "role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "image_url"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}]},
     r"messages\[0\].content\[0\]: an agent takes images only as data: URLs"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}]},
     "not base64-encoded"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "max"}, "reasoning_effort"),
])
def test_a_body_the_engine_cannot_serve_is_an_invalid_request_saying_why(body, complaint):
    with pytest.raises(InvalidRequest, match=complaint):
        GenerationRequest.from_openai("r", "m", body)


def test_a_slot_moves_only_along_its_state_machine():
    slot = Slot("gpt-oss-20b", SPEC)
    for state in (SlotState.LOADING, SlotState.IDLE, SlotState.RUNNING, SlotState.IDLE, SlotState.UNLOADING,
                  SlotState.COLD, SlotState.LOADING):
        slot.transition(state)
    slot.transition(SlotState.FAILED, "load failed: disk")
    assert slot.snapshot().reason == "load failed: disk"
    with pytest.raises(InvalidTransition):
        slot.transition(SlotState.RUNNING)
    slot.transition(SlotState.LOADING)
    assert slot.state is SlotState.LOADING


def test_a_stream_merges_what_queued_up_and_ends_with_one_finish():
    async def scenario():
        cancelled = []

        async def cancel(request_id: str) -> bool:
            cancelled.append(request_id)
            return True

        decision = AdmissionDecision(Verdict.ADMIT, "ok", 1, 1, 1)
        stream = RequestStream("r", 5, decision, cancel)
        for text in ("a", "b", "c"):
            stream.push(Delta(content=text, num_tokens=1))
        stream.push(Delta(reasoning="why", num_tokens=1))
        assert stream.has_started and stream.num_tokens == 4
        first = await stream.__anext__()
        stream.push(Finish(FinishReason.STOP, Usage(5, 4)))
        stream.push(Delta(content="late"))  # nothing after the finish
        rest = [event async for event in stream]
        return first, rest, await stream.cancel(), cancelled

    first, rest, cancel_after_finish, cancelled = asyncio.run(scenario())
    assert first == Delta("abc", "why", 4)
    assert rest == [Finish(FinishReason.STOP, Usage(5, 4))]
    assert cancel_after_finish is False and cancelled == []


HARMONY = ("<|channel|>analysis<|message|>Think <|about|> it.<|end|><|start|>assistant"
           "<|channel|>final<|message|>The answer.")


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 1000])
def test_harmony_splits_into_reasoning_and_content_however_the_text_arrives(piece):
    from mlx_lm.generate import TextStateMachine

    splitter = ChannelSplitter(TextStateMachine(HARMONY_TRANSITIONS), "header", HARMONY_FIELDS)
    parts = [splitter.feed(HARMONY[i:i + piece]) for i in range(0, len(HARMONY), piece)]
    parts.append(splitter.flush())
    assert "".join(c for c, _ in parts) == "The answer."
    assert "".join(r for _, r in parts) == "Think <|about|> it."


def test_harmony_text_without_any_channel_is_content_and_gemma_thought_is_reasoning():
    from mlx_lm.generate import TextStateMachine

    plain = ChannelSplitter(TextStateMachine(HARMONY_TRANSITIONS), "header", HARMONY_FIELDS)
    assert plain.feed("no markup at all") == ("no markup at all", "")
    gemma = ChannelSplitter(TextStateMachine(GEMMA_TRANSITIONS), "normal", GENERIC_FIELDS)
    content, reasoning = gemma.feed("<|channel>thought\nHmm.<channel|>Yes.")
    assert (content, reasoning) == ("Yes.", "Hmm.")


def test_a_stray_special_token_outside_any_marker_is_never_emitted():
    from mlx_lm.generate import TextStateMachine

    markup = ("<|constrain|>", "<|channel|>", "<|message|>", "<|return|>", "<|start|>", "<|end|>")
    splitter = ChannelSplitter(TextStateMachine(HARMONY_TRANSITIONS), "header", HARMONY_FIELDS, markup)
    content, reasoning = splitter.feed("<|channel|>final<|message|>Oowing<|start|>ighx <|return|>")
    content2, _ = splitter.flush()
    assert content + content2 == "Oowingighx " and reasoning == ""


def test_the_tiny_tokenizers_special_tokens_are_the_markup_to_drop(tiny_models_dir):
    from mlx_lm import load

    from agent.engine.chat import ChatFormat

    _, tokenizer = load(str(tiny_models_dir / "gpt-oss-tiny"))
    fmt = ChatFormat(tokenizer, "gpt_oss")
    assert {"<|start|>", "<|end|>", "<|message|>", "<|channel|>"} <= set(fmt._markup)
