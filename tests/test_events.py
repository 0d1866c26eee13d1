"""Change happens by events: slot transitions notify listeners, registrations wake waiting retries, the link's
close flushes its outbox, and every background task has an owner. Nothing here waits on a polling interval."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from agent.admission import memory_cap_bytes
from agent.catalog import load_catalog
from agent.coordinator.billing.accounts import Accounts, ReleaseReason
from agent.coordinator.errors import ProviderFailed
from agent.coordinator.flow import RequestFlow
from agent.coordinator.routing.exchange import Exchange
from agent.coordinator.routing.placement import Ask
from agent.coordinator.routing.router import Router
from agent.daemon.handler import LinkHandler, MemoryReading
from agent.engine import FakeEngine, FakeTiming, SlotState, SlotTransition
from agent.engine.core import EngineConfig
from agent.engine.types import GenerationRequest
from agent.link.client import Link
from agent.tasks import TaskSet
from agent.wire.chat_body import ChatCompletionBody
from agent.wire.frames import (
    ChunkDelta,
    Hardware,
    Heartbeat,
    InferenceRequest,
    InferenceResponseChunk,
    MemoryStatus,
    Register,
    SlotStatus,
)
from agent.wire.protocol import PROTOCOL_VERSION
from tests.link_support import MiniCoordinator
from tests.provider_support import FAST, GIB, GPT, entry_for

CATALOG = load_catalog()
GPT_OSS = replace(CATALOG["gpt-oss-20b"], id="gpt-oss")
GEMMA = replace(CATALOG["gemma-4-26b"], id="gemma")
HARDWARE = Hardware(chip="Apple M4 Max", memory_bytes=128 * GIB, gpu_cores=40)
FAST_TIMING = FakeTiming(decode_tps=2000, load_seconds=0.0, unload_seconds=0.0)


def fake_engine(*specs, **config) -> FakeEngine:
    return FakeEngine({spec.id: spec for spec in specs}, memory_bytes=128 * GIB, timing=FAST_TIMING,
                      config=EngineConfig(**config))


def provider_for(engine: FakeEngine, *specs) -> LinkHandler:
    return LinkHandler(engine, {spec.id: spec for spec in specs}, HARDWARE, lambda: MemoryReading(128 * GIB, 64 * GIB))


def request(request_id: str, model: str = "gpt-oss", max_tokens: int = 4) -> GenerationRequest:
    return GenerationRequest(request_id=request_id, model=model, messages=({"role": "user", "content": "hi"},),
                         max_tokens=max_tokens)


async def test_every_slot_transition_is_told_to_the_engines_listeners_in_order():
    engine = fake_engine(GPT_OSS)
    seen: list[tuple[str, str]] = []
    remove = engine.add_listener(lambda change: seen.append((str(change.old), str(change.new))))
    async with engine:
        await engine.load("gpt-oss")
        stream = await engine.submit(request("r-1"))
        await stream.collect()
        await engine.unload("gpt-oss")
        remove()
        await engine.load("gpt-oss")  # no longer told
    assert seen == [("cold", "loading"), ("loading", "idle"), ("idle", "running"), ("running", "idle"),
                    ("idle", "unloading"), ("unloading", "cold")]


async def test_a_failing_listener_is_logged_and_neither_the_transition_nor_the_next_listener_is_lost():
    engine = fake_engine(GPT_OSS)
    seen: list[SlotTransition] = []

    def broken(change: SlotTransition) -> None:
        raise RuntimeError("a listener's bug")

    engine.add_listener(broken)
    engine.add_listener(seen.append)
    async with engine:
        await engine.load("gpt-oss")
        assert engine.snapshot().slot("gpt-oss").state is SlotState.IDLE
    assert [change.new for change in seen][:2] == [SlotState.LOADING, SlotState.IDLE]


async def test_an_engine_transition_sets_the_providers_heartbeat_event_with_nothing_polling():
    # The idle unload is the engine's own decision: only its transition can tell anyone about it.
    engine = fake_engine(GPT_OSS, idle_unload_after_s=0.0, idle_check_interval_s=0.01)
    provider = provider_for(engine, GPT_OSS)
    cold = asyncio.Event()
    engine.add_listener(lambda change: cold.set() if change.new is SlotState.COLD else None)
    async with engine:
        await engine.load("gpt-oss")
        provider.state_changed.clear()
        await asyncio.wait_for(cold.wait(), 5)
        assert provider.state_changed.is_set()
    await provider.close()


async def started_link(coordinator: MiniCoordinator, provider: LinkHandler) -> tuple[Link, asyncio.Task]:
    link = Link(coordinator.url, "good-token", provider)
    task = asyncio.create_task(link.run())
    await coordinator.next_frame("register")
    return link, task


async def heartbeat_where(coordinator: MiniCoordinator, predicate) -> dict:
    while not predicate(heartbeat := await coordinator.next_frame("heartbeat")):
        pass
    return heartbeat


def states(heartbeat: dict) -> set[str]:
    return {slot["state"] for slot in heartbeat["slots"]}


async def test_a_slot_transition_reaches_the_coordinator_as_a_heartbeat_long_before_the_interval():
    coordinator = MiniCoordinator(heartbeat_interval_s=60)  # only an event can send one in this test
    await coordinator.start()
    engine = fake_engine(GPT_OSS)
    provider = provider_for(engine, GPT_OSS)
    await engine.start()
    link, task = await started_link(coordinator, provider)
    await heartbeat_where(coordinator, lambda beat: states(beat) == {"cold"})  # the one after registered
    await engine.load("gpt-oss")
    idle = await heartbeat_where(coordinator, lambda beat: states(beat) == {"idle"})
    assert idle["slots"][0]["kv_budget_bytes"] > 0
    await link.close()
    await asyncio.wait_for(task, 5)
    await engine.stop()
    await provider.close()
    await coordinator.stop()


async def test_a_burst_of_transitions_in_one_turn_of_the_loop_is_one_heartbeat():
    coordinator = MiniCoordinator(heartbeat_interval_s=60)
    await coordinator.start()
    engine = fake_engine(GPT_OSS, GEMMA)
    provider = provider_for(engine, GPT_OSS, GEMMA)
    await engine.start()
    link, task = await started_link(coordinator, provider)
    await engine.load("gpt-oss")
    await engine.load("gemma")
    before = await heartbeat_where(coordinator, lambda beat: states(beat) == {"idle"})
    await engine.stop()  # idle → unloading → cold for both slots, with no await in between: four transitions
    burst = await coordinator.next_frame("heartbeat")
    provider.draining = True  # a later, separate change: the very next heartbeat must be its own
    provider.state_changed.set()
    after = await coordinator.next_frame("heartbeat")
    assert states(burst) == {"cold"} and burst["seq"] == before["seq"] + 1
    assert after["draining"] is True and after["seq"] == burst["seq"] + 1
    await link.close()
    await asyncio.wait_for(task, 5)
    await provider.close()
    await coordinator.stop()


async def test_closing_the_link_sends_every_frame_on_its_outbox_before_the_websocket_closes():
    coordinator = MiniCoordinator(heartbeat_interval_s=60)
    await coordinator.start()
    engine = fake_engine(GPT_OSS)
    provider = provider_for(engine, GPT_OSS)
    link, task = await started_link(coordinator, provider)
    await coordinator.next_frame("heartbeat")
    session = link.session
    session.receive('{"type": "inference_request", "request_id": "r-1", "model": "gpt-oss", '
                    '"body": {"messages": [{"role": "user", "content": "hi"}]}}')
    for _ in range(2000):  # far more than one turn of the loop can write
        link.send(session.chunk("r-1", "word " * 20))
    link.send(session.complete("r-1", 3, 2000, "length"))
    await link.close()
    await asyncio.wait_for(task, 5)  # run() ends by itself once closed
    complete = await coordinator.next_frame("inference_complete")
    assert complete["num_chunks"] == 2000 and coordinator.frames["inference_response_chunk"].qsize() == 2000
    await provider.close()
    await coordinator.stop()


def register(spec) -> Register:
    return Register(protocol_version=PROTOCOL_VERSION, agent_version="test", models=(entry_for(spec),),
                    hardware=Hardware(chip="Test M4", memory_bytes=64 * GIB, gpu_cores=10))


def idle_heartbeat(spec, seq: int = 1) -> Heartbeat:
    slot = SlotStatus(model=spec.id, state=SlotState.IDLE, kv_budget_bytes=8 * GIB)
    return Heartbeat(seq=seq, slots=(slot,), memory=MemoryStatus(total_bytes=64 * GIB, available_bytes=32 * GIB,
                                                                 cap_bytes=memory_cap_bytes(64 * GIB)))


async def test_a_retry_that_found_every_link_down_resumes_the_moment_an_agent_registers():
    router = Router(replace(FAST, queue_max_wait_s=60), catalog={GPT.id: GPT})
    sent: dict[str, list] = {"a": [], "b": []}
    dispatched = asyncio.Event()

    def send_to(name: str):
        def send(frame) -> None:
            sent[name].append(frame)
            dispatched.set() if isinstance(frame, InferenceRequest) else None
        return send

    first = router.connect(register(GPT), send_to("a"))
    router.receive(first, idle_heartbeat(GPT))
    body = ChatCompletionBody.model_validate({"model": GPT.id, "messages": [{"role": "user", "content": "hi"}]})
    exchange = Exchange("r-1", body, Ask(GPT.id, 8, 4, None), created_at=0.0)
    flow = RequestFlow(router, Accounts.open(), exchange)
    started = asyncio.create_task(flow.start())
    await asyncio.wait_for(dispatched.wait(), 5)
    router.disconnect(first, "every link cut")  # LinkLost: the retry finds no provider at all
    async with asyncio.timeout(5):
        while router.registry.num_awaiting_arrival(GPT.id) == 0:
            await asyncio.sleep(0)  # yields only, no timer: until the flow waits on the registry
    second = router.connect(register(GPT), send_to("b"))
    router.receive(second, idle_heartbeat(GPT))
    for _ in range(3):  # three turns of the event loop: no timer of any length can fire in them
        await asyncio.sleep(0)
    assert [frame.request_id for frame in sent["b"] if isinstance(frame, InferenceRequest)] == ["r-1"]
    assert exchange.provider is second and exchange.num_failures == 1
    router.receive(second, InferenceResponseChunk(request_id="r-1", seq=1, delta=ChunkDelta(content="hi")))
    await asyncio.wait_for(started, 5)
    assert router.registry.num_awaiting_arrival(GPT.id) == 0
    flow.close(ReleaseReason.CLIENT_DISCONNECT)


async def test_a_waiting_retry_still_gives_up_at_the_queues_max_wait_when_no_agent_comes_back():
    router = Router(replace(FAST, queue_max_wait_s=0.05), catalog={GPT.id: GPT})
    first = router.connect(register(GPT), lambda frame: None)
    router.receive(first, idle_heartbeat(GPT))
    body = ChatCompletionBody.model_validate({"model": GPT.id, "messages": [{"role": "user", "content": "hi"}]})
    exchange = Exchange("r-1", body, Ask(GPT.id, 8, 4, None), created_at=0.0)
    flow = RequestFlow(router, Accounts.open(), exchange)
    started = asyncio.create_task(flow.start())
    async with asyncio.timeout(5):
        while exchange.provider is None:
            await asyncio.sleep(0)
    router.disconnect(first, "every link cut")
    with pytest.raises(ProviderFailed, match="every provider"):
        await asyncio.wait_for(started, 5)
    assert router.registry.num_awaiting_arrival(GPT.id) == 0
    flow.close(ReleaseReason.PROVIDER_ERROR)


async def test_a_task_set_keeps_logs_and_ends_what_it_started():
    tasks = TaskSet("test")
    gate = asyncio.Event()

    async def fails() -> None:
        raise ValueError("boom")

    failing = tasks.spawn(fails(), name="fails")
    waiting = tasks.spawn(gate.wait(), name="waits")
    await asyncio.wait({failing})
    await asyncio.sleep(0)  # its done callback runs on the next turn
    assert len(tasks) == 1
    await tasks.close()
    assert waiting.cancelled() and len(tasks) == 0
