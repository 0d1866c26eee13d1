"""The router's chunk path: every relayed token's row, batched or single, reaches its exchange and counts
in its pending entry; a row for a request the link does not hold is cancelled, one for an abandoned attempt
is counted and dropped, and neither costs the batch's other rows their tokens."""

from __future__ import annotations

from agent.coordinator.routing.exchange import Exchange
from agent.coordinator.routing.placement import Ask
from agent.coordinator.routing.router import Router
from agent.wire.chunk_batch import InferenceResponseChunks
from agent.wire.frames import Cancel, ChunkDelta, InferenceAccepted, InferenceComplete, InferenceResponseChunk, \
    UsageReport
from agent.wire.protocol import Direction, parse_message
from tests.provider_support import GEMMA, GIB, GPT
from tests.test_coordinator_agreement import body, heartbeat, register


def fleet(num_providers: int = 1, *specs) -> tuple[Router, list, list[list]]:
    """A router with warm providers of `specs` (GPT by default); what each was sent is in its list."""
    router, providers, sent = Router(), [], []
    for _ in range(num_providers):
        frames: list = []
        provider = router.connect(register(*(specs or (GPT,))), frames.append)
        for seq, spec in enumerate(specs or (GPT,), start=1):  # a heartbeat listing one slot leaves the other's be
            router.receive(provider, heartbeat(seq, spec.id, 40 * GIB, 0, 0))
        providers.append(provider)
        sent.append(frames)
    return router, providers, sent


def dispatched(router: Router, provider, request_id: str, model: str = GPT.id) -> Exchange:
    exchange = Exchange(request_id, body(64), Ask(model, 16, 16, 64), 0.0)
    router.try_dispatch(exchange, provider)
    assert exchange.provider is provider
    router.receive(provider, InferenceAccepted(request_id=request_id, prompt_tokens=16))
    exchange.events.clear()
    return exchange


def row(request_id: str, seq: int, text: str = "tok") -> InferenceResponseChunk:
    return InferenceResponseChunk(request_id=request_id, seq=seq, delta=ChunkDelta(content=text), num_tokens=1)


def relayed(exchange: Exchange) -> list[str]:
    return [frame.delta.content for _, frame in exchange.events if isinstance(frame, InferenceResponseChunk)]


def test_a_batch_relays_each_row_to_its_own_exchange_and_counts_it_in_its_pending_entry():
    router, [provider], _ = fleet()
    a, b = dispatched(router, provider, "req-a"), dispatched(router, provider, "req-b")
    router.receive(provider, InferenceResponseChunks(chunks=(row("req-a", 1, "A1"), row("req-b", 1, "B1"),
                                                             row("req-a", 2, "A2"))))
    assert relayed(a) == ["A1", "A2"] and relayed(b) == ["B1"]
    pending = provider.offers[GPT.id].pending
    assert pending.get("req-a").num_chunks == 2 and pending.get("req-b").num_chunks == 1
    assert all(attempt == a.attempt for attempt, _ in a.events)


def test_a_single_chunk_frame_and_the_same_row_in_a_batch_do_the_same():
    router, [one, other], _ = fleet(2)
    single, batched = dispatched(router, one, "req-1"), dispatched(router, other, "req-2")
    router.receive(one, row("req-1", 1, "x"))
    router.receive(other, InferenceResponseChunks(chunks=(row("req-2", 1, "x"),)))
    assert relayed(single) == relayed(batched) == ["x"]
    assert one.offers[GPT.id].pending.get("req-1").num_chunks == other.offers[GPT.id].pending.get("req-2").num_chunks


def test_a_row_for_a_request_never_sent_on_this_link_is_cancelled_and_the_others_still_relay():
    router, [provider], [sent] = fleet()
    live = dispatched(router, provider, "req-live")
    router.receive(provider, InferenceResponseChunks(chunks=(row("req-stranger", 1), row("req-live", 1, "ok"))))
    assert relayed(live) == ["ok"]
    cancels = [frame for frame in sent if isinstance(frame, Cancel)]
    assert [(c.request_id, c.reason) for c in cancels] == [("req-stranger", "not a request of this coordinator")]


def test_a_row_sent_on_another_providers_link_is_cancelled_there_and_not_relayed():
    router, [holder, intruder], [_, intruder_sent] = fleet(2)
    exchange = dispatched(router, holder, "req-held")
    router.receive(intruder, InferenceResponseChunks(chunks=(row("req-held", 1, "forged"),)))
    assert relayed(exchange) == [] and holder.offers[GPT.id].pending.get("req-held").num_chunks == 0
    assert [c.request_id for c in intruder_sent if isinstance(c, Cancel)] == ["req-held"]


def test_a_row_for_an_abandoned_attempt_counts_in_its_pending_entry_but_is_not_relayed():
    router, [provider], [sent] = fleet()
    exchange = dispatched(router, provider, "req-gone")
    router.abandon(exchange, reason="client gone")
    num_cancels = sum(isinstance(frame, Cancel) for frame in sent)
    router.receive(provider, InferenceResponseChunks(chunks=(row("req-gone", 1),)))
    assert relayed(exchange) == []
    assert provider.offers[GPT.id].pending.get("req-gone").num_chunks == 1  # its row still grows in the agent's batch
    assert sum(isinstance(frame, Cancel) for frame in sent) == num_cancels  # cancelled once already


def test_a_row_after_its_request_completed_is_cancelled_and_not_relayed():
    router, [provider], [sent] = fleet()
    exchange = dispatched(router, provider, "req-done")
    router.receive(provider, InferenceComplete(request_id="req-done", usage=UsageReport(prompt_tokens=16,
                                                                                        completion_tokens=0),
                                               finish_reason="stop", num_chunks=0))
    exchange.events.clear()
    router.receive(provider, InferenceResponseChunks(chunks=(row("req-done", 1, "late"),)))
    assert relayed(exchange) == [] and [c.request_id for c in sent if isinstance(c, Cancel)] == ["req-done"]


def test_a_row_is_counted_in_the_offer_of_its_requests_model_on_a_provider_of_two_models():
    router, [provider], _ = fleet(1, GPT, GEMMA)
    gpt, gemma = dispatched(router, provider, "req-gpt"), dispatched(router, provider, "req-gemma", GEMMA.id)
    router.receive(provider, InferenceResponseChunks(chunks=(row("req-gemma", 1, "g"), row("req-gpt", 1, "o"))))
    assert relayed(gpt) == ["o"] and relayed(gemma) == ["g"]
    assert provider.offers[GEMMA.id].pending.get("req-gemma").num_chunks == 1
    assert provider.offers[GPT.id].pending.get("req-gpt").num_chunks == 1
    assert "req-gemma" not in provider.offers[GPT.id].pending


def test_a_batch_with_a_bad_row_parses_to_its_good_rows_and_names_the_bad_one():
    raw = ('{"type": "inference_response_chunks", "chunks": ['
           '{"type": "inference_response_chunk", "request_id": "req-a", "seq": 1, "delta": {"content": "ok"}},'
           '{"type": "inference_response_chunk", "request_id": "req-b", "seq": "one", "delta": {"content": "x"}}]}')
    frame = parse_message(raw, direction=Direction.TO_COORDINATOR)
    assert [chunk.request_id for chunk in frame.chunks] == ["req-a"]
    assert [(bad.index, bad.request_id, bad.field) for bad in frame.rejected_rows] == [(1, "req-b", "chunks.1.seq")]
    clean = parse_message(raw.replace('"one"', "2"), direction="to_coordinator")
    assert clean.rejected_rows == () and len(clean.chunks) == 2
