"""An agent knows the message chain of each prompt its prefix cache holds, in the coordinator's own keys, and
reports the chains on its heartbeats: the key the agent computes from the inference_request it received is the
one the coordinator computed for the body it forwarded (tools, images, tool turns and an explicit
prompt_cache_key included); the slot reports its chains most recently used first, bounded, and an entry's chain
goes with the entry; the wire bounds and validates what a heartbeat may report."""

from __future__ import annotations

import json

import openai
import pytest

from agent.engine.prefix_index import PrefixEntry, PrefixIndex
from agent.engine.types import GenerationRequest, SlotSnapshot
from agent.testing.model_entry import entry_for
from agent.wire.frames import MAX_PREFIX_CHAINS, Heartbeat, MemoryStatus, SlotState, SlotStatus, VisionOffer
from agent.wire.prefix_chain import chain_key
from agent.wire.protocol import Direction, ProtocolError, encode, parse_message
from tests.provider_support import GEMMA, GPT, coordinator, eventually, provider
from tests.vision_support import image_part, noise_image

KEY = "0123456789abcdef" * 2
TOOL = {"type": "function", "function": {"name": "sea", "description": "a sea", "parameters": {
    "type": "object", "properties": {"name": {"type": "string"}}}}}
TOOL_TURN = [{"role": "user", "content": "Which sea?"},
             {"role": "assistant", "content": None, "tool_calls": [
                 {"id": "call_1", "type": "function", "function": {"name": "sea", "arguments": "{\"name\": \"x\"}"}}]},
             {"role": "tool", "tool_call_id": "call_1", "content": "The Baltic."}]


def entry(entry_id: int, chain: str | None, num_tokens: int = 4) -> PrefixEntry:
    return PrefixEntry(entry_id, tuple(range(entry_id * 100, entry_id * 100 + num_tokens)), 10, 0, chain)


def key(i: int) -> str:
    return f"{i:032x}"


def test_a_slot_reports_its_entries_chains_most_recently_used_first_and_at_most_its_limit():
    index = PrefixIndex(max_bytes=1_000, max_reported_chains=3)
    for i in range(1, 6):
        index.add(entry(i, key(i)))
    index.add(entry(6, None))  # a request not from a body: cached, but has no chain to report
    assert index.chains() == (key(5), key(4), key(3))
    index.pin("r", index.match(list(entry(2, None).tokens) + [7]))  # reused: now the most recently used
    assert index.chains()[0] == key(2)


def test_an_evicted_entrys_chain_goes_with_it():
    index = PrefixIndex(max_bytes=25)  # two entries of 10 bytes
    for i in range(1, 4):
        index.add(entry(i, key(i)))
    assert index.chains() == (key(3), key(2))
    index.evict(10)
    assert index.chains() == (key(3),)
    index.clear()
    assert index.chains() == ()


def test_a_request_not_from_a_body_has_no_chain_and_one_from_a_body_has_the_bodys():
    body = {"model": GPT.id, "messages": [{"role": "user", "content": "Name a sea."}]}
    assert GenerationRequest("r", GPT.id, ({"role": "user", "content": "x"},)).prefix_chain is None
    from_body = GenerationRequest.from_openai("r", GPT.id, body)
    assert from_body.prefix_chain is not None and len(from_body.prefix_chain) == 32


def test_a_snapshot_puts_the_chains_on_the_heartbeat():
    snapshot = SlotSnapshot(GPT.id, SlotState.IDLE, 0, 0, 1, 1, 0, 0, 0.0, 0.0, 0, 0.5, prefix_chains=(KEY,),
                            prefix_hit_rate=0.5, prefix_hit_tokens=7, prefix_evictions=2)
    status = SlotStatus(**snapshot.heartbeat())
    assert (status.prefix_chains, status.prefix_hit_rate, status.prefix_hit_tokens, status.prefix_evictions) == \
        ((KEY,), 0.5, 7, 2)


def heartbeat_with(chains) -> str:
    memory = MemoryStatus(total_bytes=1, available_bytes=1, cap_bytes=1)
    frame = json.loads(encode(Heartbeat(seq=1, slots=(SlotStatus(model=GPT.id, state=SlotState.IDLE),), memory=memory)))
    frame["slots"][0]["prefix_chains"] = chains
    return json.dumps(frame)


@pytest.mark.parametrize("chains", [[KEY] * (MAX_PREFIX_CHAINS + 1), ["not hex" * 4 + "abcd"], [KEY + "0"],
                                    [KEY.upper()], [42], "abc", {"k": KEY}, [None]])
def test_a_heartbeat_reporting_too_many_or_malformed_chains_is_a_protocol_error_naming_the_field(chains):
    parsed = parse_message(heartbeat_with(chains), direction=Direction.TO_COORDINATOR)
    assert isinstance(parsed, ProtocolError) and "prefix_chains" in str(parsed)


def test_a_heartbeat_from_an_older_agent_reports_no_chains_and_one_at_the_bound_is_accepted():
    older = json.loads(heartbeat_with([]))
    del older["slots"][0]["prefix_chains"]
    assert parse_message(json.dumps(older), direction=Direction.TO_COORDINATOR).slots[0].prefix_chains == ()
    full = parse_message(heartbeat_with([key(i) for i in range(MAX_PREFIX_CHAINS)]), direction=Direction.TO_COORDINATOR)
    assert len(full.slots[0].prefix_chains) == MAX_PREFIX_CHAINS


def sdk(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)


async def test_the_chain_an_agent_computes_from_its_inference_request_is_the_one_the_coordinator_recorded():
    claims = VisionOffer(max_soft_tokens=256, patch_size=16, pooling_kernel_size=3, weights_bytes=1,
                         reserve_bytes=1, fits=True, fit_reason="fits")
    async with coordinator() as server:
        text = await provider(server, GPT)
        seeing = await provider(server, GEMMA, models=[entry_for(GEMMA).model_copy(update={"vision": claims})])
        await seeing.set_slot(GEMMA.id, modalities=("text", "image"))
        await eventually(lambda: seeing.is_heard(server) and text.is_heard(server))
        client = sdk(server)
        asks = [
            (GPT.id, {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."}]}),
            (GPT.id, {"messages": TOOL_TURN, "tools": [TOOL], "tool_choice": "auto", "reasoning_effort": "high"}),
            (GPT.id, {"messages": [{"role": "user", "content": "Hi.", "name": "ann"}], "user": "u-1",
                      "extra_body": {"prompt_cache_key": "tenant-1"}}),
            (GEMMA.id, {"messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is it?"}, image_part(noise_image(32, 32, seed=3))]}]}),
        ]
        for model, ask in asks:
            await client.chat.completions.create(model=model, max_tokens=8, **ask)
        routes = server.coordinator.router.prefixes.routes
        for agent in (text, seeing):
            for request in agent.received:
                chain = GenerationRequest.from_openai(request.request_id, request.model, request.body).prefix_chain
                assert chain == chain_key(request.body)
                assert routes.find([chain]) == (agent.provider_id, 0), request.body
        assert len(text.received) == 3 and len(seeing.received) == 1
        await text.stop()
        await seeing.stop()


def test_an_agent_setting_reporting_more_chains_than_the_wire_takes_is_refused_and_the_engine_caps_it_too():
    from pydantic import ValidationError

    from agent.daemon.config import AgentConfig
    from agent.engine.kv_tracker import KVTracker
    from tests.provider_support import GPT as SPEC

    assert AgentConfig().max_reported_prefix_chains == 64
    with pytest.raises(ValidationError, match="max_reported_prefix_chains"):
        AgentConfig(max_reported_prefix_chains=MAX_PREFIX_CHAINS + 1)
    tracker = KVTracker(SPEC, 1 << 30, max_prefix_cache_bytes=1 << 20, max_reported_prefix_chains=10 * MAX_PREFIX_CHAINS)
    assert tracker.prefixes.max_reported_chains == MAX_PREFIX_CHAINS  # a heartbeat it builds is always valid
