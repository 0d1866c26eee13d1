"""Every input of the agent's admission travels to the coordinator, and the coordinator decides with it.

A real agent (fake engine, real provider, real link) registers with a real coordinator over a loopback
websocket. The coordinator has no admission numbers of its own any more (CoordinatorSettings carries
none), so an agent configured unlike the engine's defaults is the case of "a coordinator started with
other defaults": for each number (safety margin, row limit, default max_tokens, prefill chunk, and the
expected-output ratio as it adapts) the coordinator's check on the agent's heartbeat gives the agent's
own answer, and a different number gives a different answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx

from agent.admission import Verdict
from agent.coordinator.routing.agent_limits import CONSERVATIVE_LIMITS
from agent.coordinator.routing.placement import Ask, check
from agent.coordinator.routing.router import Router
from agent.daemon.handler import LinkHandler, MemoryReading
from agent.engine.core import EngineConfig
from agent.engine.fake import FakeEngine, FakeScript
from agent.engine.schedule import ScheduleLimits
from agent.link.client import Link
from agent.wire.frames import Hardware, Heartbeat, MemoryStatus, Register, SlotState, SlotStatus
from agent.wire.protocol import PROTOCOL_VERSION, Direction, ProtocolError, encode, parse_message
from tests.provider_support import FAST, GEMMA, GIB, GPT, coordinator, entry_for, eventually


@contextlib.asynccontextmanager
async def real_agent(server, config: EngineConfig, *, scripts=None) -> AsyncIterator[tuple[FakeEngine, object]]:
    """A warm agent with `config`, registered and heartbeating; yields its engine and the coordinator's record."""
    specs = {GPT.id: GPT, GEMMA.id: GEMMA}
    options = {"scripts": scripts} if scripts else {}
    engine = FakeEngine(specs, memory_bytes=64 * GIB, config=config, time_scale=0.01, **options)
    await engine.start()
    for model in specs:
        await engine.load(model)
    provider = LinkHandler(engine, specs, Hardware(chip="Fake M4", memory_bytes=64 * GIB, gpu_cores=10),
                        lambda: MemoryReading(64 * GIB, 60 * GIB))
    link = Link(server.ws_url, "any-token", provider)
    task = asyncio.create_task(link.run())
    registry = server.coordinator.router.registry
    try:
        await eventually(lambda: provider.provider_id is not None and registry.get(provider.provider_id) is not None
                         and registry.get(provider.provider_id).heartbeat is not None)
        yield engine, registry.get(provider.provider_id)
    finally:
        link.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.stop()


async def decisions(config: EngineConfig, model: str, prompt_tokens: int, max_tokens: int | None):
    """(the agent's decision, the coordinator's) for one request on an agent with `config`."""
    async with coordinator(FAST) as server, real_agent(server, config) as (engine, record):
        offer = record.offers[model]
        assert offer.entry.admission == engine.admission_limits(model)  # what it registered is what it runs
        return engine.check(model, prompt_tokens, max_tokens), check(offer, Ask(model, prompt_tokens, prompt_tokens,
                                                                                max_tokens))


async def test_the_coordinator_keeps_the_agents_safety_margin_not_one_of_its_own():
    budget = 400_000_000
    theirs, ours = await decisions(EngineConfig(max_kv_budget_bytes=budget), GPT.id, 2000, 12_000)
    assert theirs.verdict is ours.verdict is Verdict.ADMIT
    theirs, ours = await decisions(EngineConfig(max_kv_budget_bytes=budget, kv_safety_margin=0.6), GPT.id, 2000,
                                   12_000)
    assert theirs.verdict is ours.verdict is Verdict.NEVER


async def test_a_request_without_max_tokens_is_planned_with_the_agents_default():
    for default in (4096, 700):
        theirs, ours = await decisions(EngineConfig(default_max_tokens=default), GPT.id, 300, None)
        assert theirs.admitted and ours.admitted
        assert ours.expected_output_tokens == theirs.expected_output_tokens == -(-default * 7 // 10)


async def test_the_coordinator_replays_the_prefill_with_the_agents_chunk():
    # gemma's sliding layers hold window - 1 + chunk tokens while a long prompt is prefilled.
    reservations = set()
    for chunk in (512, 2048):
        theirs, ours = await decisions(EngineConfig(schedule=ScheduleLimits(chunk_tokens=chunk)), GEMMA.id, 6000, 64)
        assert ours.reservation_bytes == theirs.reservation_bytes
        reservations.add(ours.reservation_bytes)
    assert len(reservations) == 2


async def test_the_coordinator_stops_at_the_agents_row_limit():
    async with coordinator(FAST) as server, \
            real_agent(server, EngineConfig(max_num_seqs=2), scripts=lambda r: FakeScript(output_tokens=10_000)) \
            as (engine, record):
        router = server.coordinator.router
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            body = {"model": GPT.id, "messages": [{"role": "user", "content": "long"}], "max_tokens": 9000,
                    "stream": True}
            streams = [http.stream("POST", "/v1/chat/completions", json=body) for _ in range(2)]
            async with streams[0], streams[1]:
                await eventually(lambda: record.offers[GPT.id].status.num_running == 2)
                placement = router.placement(Ask(GPT.id, 50, 50, 16))
                assert placement.full == {record.provider_id: f"{GPT.id} is running its limit of 2 requests"}
                assert engine.check(GPT.id, 50, 16).verdict is Verdict.FULL


async def test_the_coordinator_follows_the_agents_expected_output_ratio_as_it_adapts():
    async with coordinator(FAST) as server, real_agent(server, EngineConfig()) as (engine, record):
        offer = record.offers[GPT.id]
        client_body = {"model": GPT.id, "messages": [{"role": "user", "content": "short"}], "max_tokens": 2000}
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            for _ in range(3):  # completions of 16 to 63 tokens out of 2000: the agent's ratio falls
                assert (await http.post("/v1/chat/completions", json=client_body)).status_code == 200
        ratio = engine.output_ratio(GPT.id).value
        assert ratio < 0.7
        await eventually(lambda: offer.status.expected_output_ratio == ratio and offer.pending.num_in_flight == 0)
        theirs, ours = engine.check(GPT.id, 300, 2000), check(offer, Ask(GPT.id, 300, 300, 2000))
        assert ours.expected_output_tokens == theirs.expected_output_tokens < 1400
        assert ours.reservation_bytes == theirs.reservation_bytes


def test_a_peer_that_does_not_say_how_it_admits_is_planned_for_conservatively():
    router = Router()
    register = Register(protocol_version=PROTOCOL_VERSION, agent_version="foreign",
                        hardware=Hardware(chip="Other", memory_bytes=64 * GIB, gpu_cores=10),
                        models=(entry_for(GPT, limits=None),))
    provider = router.connect(register, lambda frame: None)
    memory = MemoryStatus(total_bytes=64 * GIB, available_bytes=32 * GIB, cap_bytes=57 * GIB)
    idle = SlotStatus(model=GPT.id, state=SlotState.IDLE, kv_budget_bytes=8 * GIB)  # and no ratio
    router.receive(provider, Heartbeat(seq=1, slots=(idle,), memory=memory))
    offer = provider.offers[GPT.id]
    decision = check(offer, Ask(GPT.id, 100, 100, 6000))
    assert decision.admitted and decision.expected_output_tokens == 6000  # ratio 1, no clip
    assert decision.free_bytes == 8 * GIB - int(8 * GIB * CONSERVATIVE_LIMITS.kv_safety_margin)
    busy = idle.model_copy(update={"state": SlotState.RUNNING, "num_running": 1})
    router.receive(provider, Heartbeat(seq=2, slots=(busy,), memory=memory))
    assert router.placement(Ask(GPT.id, 100, 100, 64)).full == {
        provider.provider_id: f"{GPT.id} is running its limit of 1 requests"}


def test_admission_limits_from_a_hostile_peer_are_refused_with_the_field_named():
    register = Register(protocol_version=PROTOCOL_VERSION, agent_version="x",
                        hardware=Hardware(chip=None, memory_bytes=GIB, gpu_cores=None), models=(entry_for(GPT),))
    for field, value in (("kv_safety_margin", 5.0), ("max_num_seqs", 0), ("prefill_chunk_tokens", 2**40),
                         ("default_max_tokens", -1), ("output_clip_tokens", 0)):
        frame = json.loads(encode(register))
        frame["models"][0]["admission"][field] = value
        parsed = parse_message(json.dumps(frame), direction=Direction.TO_COORDINATOR)
        assert isinstance(parsed, ProtocolError) and field in (parsed.field or str(parsed)), (field, parsed)
