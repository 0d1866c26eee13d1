"""The usage meter's bound, for any chunks and any claim a provider can send (a property test)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.coordinator.usage import UsageMeter
from agent.wire.frames import MAX_CHUNK_TOKENS, ChunkDelta, InferenceResponseChunk, UsageReport

COUNT = st.integers(min_value=0, max_value=2**31)
CHUNK = st.tuples(st.sampled_from(["", "a", "héllo"]), st.none() | st.integers(0, MAX_CHUNK_TOKENS))


def chunk(text: str, num_tokens: int | None) -> InferenceResponseChunk:
    return InferenceResponseChunk(request_id="r1", seq=1, delta=ChunkDelta(content=text), num_tokens=num_tokens)


@given(max_tokens=st.integers(1, 200_000), floor=st.integers(0, 100), extra=st.integers(0, 10_000),
       chunks=st.lists(CHUNK, max_size=40), claim=st.tuples(COUNT, COUNT), accepted=st.none() | COUNT)
def test_no_claim_and_no_stream_is_charged_past_max_tokens_or_the_prompt_estimate(max_tokens, floor, extra, chunks,
                                                                                   claim, accepted):
    meter = UsageMeter(max_tokens=max_tokens, prompt_bound=floor + extra, prompt_floor=floor, prompt_claim=accepted)
    admitted = [c for text, n in chunks if meter.admit(c := chunk(text, n))]
    assert meter.num_tokens <= max_tokens
    assert meter.num_tokens >= sum(1 for c in admitted if c.delta.content)  # text is never free
    assert meter.num_tokens <= meter.num_text_bytes + meter.textless_tokens  # a token is a byte of text or more
    for charge in (meter.settle(UsageReport(prompt_tokens=claim[0], completion_tokens=claim[1])), meter.delivered()):
        assert floor <= charge.prompt_tokens <= floor + extra
        assert meter.num_tokens <= charge.completion_tokens <= max_tokens
    assert meter.delivered().completion_tokens == meter.num_tokens


def test_an_honest_claim_is_charged_as_claimed_and_not_counted_as_clamped():
    meter = UsageMeter(max_tokens=100, prompt_bound=120, prompt_floor=3)
    for n in (1, 2, 1):
        assert meter.admit(chunk("x", n))
    charge = meter.settle(UsageReport(prompt_tokens=40, completion_tokens=5))  # one EOS token after the text
    assert (charge.prompt_tokens, charge.completion_tokens, charge.is_clamped) == (40, 5, False)


def test_an_older_agents_chunks_count_one_token_each_and_its_claim_is_trusted_up_to_max_tokens():
    meter = UsageMeter(max_tokens=16, prompt_bound=120)
    for _ in range(4):
        assert meter.admit(chunk("word ", None))
    assert meter.settle(UsageReport(prompt_tokens=10, completion_tokens=9)).completion_tokens == 9
    assert meter.settle(UsageReport(prompt_tokens=10, completion_tokens=2**31)).completion_tokens == 16


def test_a_chunk_claiming_more_tokens_than_its_text_can_carry_is_counted_to_its_bytes_and_flagged():
    meter = UsageMeter(max_tokens=10_000, prompt_bound=50, textless_tokens=8)
    for _ in range(100):
        assert meter.admit(chunk("word ", 8))  # the soak's inflater: 8 tokens claimed for 5 bytes
    assert meter.num_tokens == 100 * 5 + 8 and meter.num_inflated_tokens == 800 - 508
    charge = meter.settle(UsageReport(prompt_tokens=10, completion_tokens=800))
    assert charge.completion_tokens == 508 + meter.slack_tokens and charge.is_clamped


def test_textless_markup_tokens_of_an_honest_stream_are_counted():
    meter = UsageMeter(max_tokens=100, prompt_bound=50)
    for text, n in [("", 3), ("Hi", 1), ("", 5), ("there", 1)]:  # a harmony header, reasoning, the final header
        assert meter.admit(chunk(text, n))
    assert meter.num_tokens == 10 and meter.num_inflated_tokens == 0
