"""A protocol that can evolve, over real loopback websockets: a peer one release ahead is served (its
unknown fields ignored, both ways), a newer minor version registers, and a major version the
coordinator cannot speak is refused with the reason and stops the agent without a reconnect storm."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.client import connect

from agent.link.client import EXIT_PROTOCOL_REFUSED, Link, LinkProtocolRefused
from agent.link.session import Event, LinkState
from agent.wire.frames import Cancel, LoadModel, Register, Registered
from agent.wire.protocol import PROTOCOL_MINOR, PROTOCOL_VERSION, encode
from tests.link_support import MiniCoordinator, RecordingHandler
from tests.provider_support import FAST, GPT, coordinator, entry_for
from tests.test_daemon import make_daemon


@dataclass
class WaitingHandler(RecordingHandler):
    """A RecordingHandler whose events can be awaited, and whose register speaks the versions it is given."""

    max_version: int = PROTOCOL_VERSION
    min_version: int | None = None
    minor: int = PROTOCOL_MINOR
    arrived: asyncio.Queue = field(default_factory=asyncio.Queue)

    def register_frame(self) -> Register:
        return super().register_frame().model_copy(update={
            "protocol_version": self.max_version, "min_protocol_version": self.min_version,
            "protocol_minor": self.minor})

    async def handle(self, event: Event, link) -> None:
        await super().handle(event, link)
        self.arrived.put_nowait(event)

    async def next_event(self) -> Event:
        return await asyncio.wait_for(self.arrived.get(), 5)


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def test_a_coordinator_one_release_ahead_is_served_though_its_frames_carry_fields_the_agent_does_not_know():
    mini = MiniCoordinator(heartbeat_interval_s=30, registered_fields={
        "protocol_version": PROTOCOL_VERSION, "protocol_minor": PROTOCOL_MINOR + 1, "region": "eu-west"})
    await mini.start()
    handler = WaitingHandler()
    link = Link(mini.url, "good-token", handler, sleep=no_sleep)
    task = asyncio.create_task(link.run())
    assert isinstance(await handler.next_event(), Registered)
    await mini.send({"type": "load_model", "model": "gpt-oss-tiny", "priority": 3, "hint": {"warm": True}})
    await mini.send({"type": "cancel", "request_id": "r-1", "reason": "client left", "by": "consumer"})
    assert await handler.next_event() == LoadModel(model="gpt-oss-tiny")
    assert await handler.next_event() == Cancel(request_id="r-1", reason="client left")
    assert mini.drain_frames("error") == []  # nothing was refused
    assert link.state is LinkState.READY and link.session.protocol_version == PROTOCOL_VERSION
    assert link.session.unknown_fields.names == {"registered.region", "load_model.priority", "load_model.hint",
                                                 "cancel.by"}
    link.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await mini.stop()


async def test_an_agent_one_release_ahead_registers_and_its_unknown_fields_are_ignored_by_the_coordinator():
    async with coordinator(FAST) as server:
        register = json.loads(encode(Register(protocol_version=PROTOCOL_VERSION, protocol_minor=PROTOCOL_MINOR + 1,
                                              agent_version="9.9", hardware={"chip": "M9", "memory_bytes": 2**36,
                                                                             "gpu_cores": 80},
                                              models=(entry_for(GPT),))))
        register["hardware"]["neural_engine_tops"] = 80
        register["models"][0]["prefix_cache"] = True
        register["capabilities"] = ["tools", "vision"]
        async with connect(server.ws_url, additional_headers={"Authorization": "Bearer t"}) as ws:
            await ws.send(json.dumps(register))
            registered = json.loads(await ws.recv())
            assert registered["type"] == "registered", registered
            assert (registered["protocol_version"], registered["protocol_minor"]) == (PROTOCOL_VERSION, PROTOCOL_MINOR)
            heartbeat = {"type": "heartbeat", "seq": 1, "gpu_temp_c": 61,
                         "slots": [{"model": GPT.id, "state": "idle", "kv_budget_bytes": 2**33, "prefix_bytes": 0}],
                         "memory": {"total_bytes": 2**36, "available_bytes": 2**35, "cap_bytes": 2**35, "swap": 0}}
            await ws.send(json.dumps(heartbeat))
            await ws.send('{"type": "heartbeat"}')  # frames are handled in order: the first error is this one's
            error = json.loads(await ws.recv())
            assert error["type"] == "error" and error["field"] == "seq", error
            provider = next(iter(server.coordinator.router.registry))
            assert provider.register.models[0].id == GPT.id and provider.heartbeat.seq == 1
            assert provider.heartbeat.slots[0].kv_budget_bytes == 2**33


async def test_a_real_agent_at_a_newer_minor_registers_with_the_real_coordinator():
    async with coordinator(FAST) as server:
        handler = WaitingHandler(minor=PROTOCOL_MINOR + 3, max_version=PROTOCOL_VERSION + 1,
                                 min_version=PROTOCOL_VERSION)
        link = Link(server.ws_url, "any-token", handler, sleep=no_sleep)
        task = asyncio.create_task(link.run())
        registered = await handler.next_event()
        assert isinstance(registered, Registered) and registered.protocol_version == PROTOCOL_VERSION
        assert link.session.protocol_version == PROTOCOL_VERSION
        link.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_agent_whose_major_version_the_coordinator_cannot_speak_is_refused_and_does_not_reconnect():
    async with coordinator(FAST) as server:
        handler = WaitingHandler(max_version=PROTOCOL_VERSION + 2, min_version=PROTOCOL_VERSION + 1)
        link = Link(server.ws_url, "any-token", handler, sleep=no_sleep)
        with pytest.raises(LinkProtocolRefused, match="no version in common; upgrade the coordinator") as refused:
            await asyncio.wait_for(link.run(), 5)
        assert refused.value.code == "protocol_version_unsupported"
        assert link.num_connects == 1 and link.backoff.attempts == 0  # no retry
        assert len(server.coordinator.router.registry) == 0 and handler.events == []


async def test_a_coordinator_choosing_a_version_the_agent_does_not_speak_is_fatal_too():
    mini = MiniCoordinator(registered_fields={"protocol_version": PROTOCOL_VERSION + 1})
    await mini.start()
    link = Link(mini.url, "good-token", WaitingHandler(), sleep=no_sleep)
    with pytest.raises(LinkProtocolRefused, match=f"chose protocol version {PROTOCOL_VERSION + 1}"):
        await asyncio.wait_for(link.run(), 5)
    assert link.num_connects == 1
    await mini.stop()


async def test_a_refused_protocol_version_stops_the_daemon_with_its_own_exit_code(tmp_path):
    mini = MiniCoordinator(refusal={"code": "protocol_version_unsupported",
                                    "message": "the agent speaks protocol versions 1 and this coordinator 2"})
    await mini.start()
    daemon = make_daemon(mini, tmp_path)
    assert await asyncio.wait_for(daemon.run(install_signals=False), 10) == EXIT_PROTOCOL_REFUSED
    assert len(mini.drain_frames("register")) == 1  # one attempt, no reconnect storm
    await mini.stop()
