from __future__ import annotations

import asyncio
import time

import pytest

from agent.link.client import Backoff, Link, LinkAuthRefused
from agent.link.session import LinkState
from agent.wire.frames import FinishReason
from tests.link_support import MiniCoordinator, RecordingHandler


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0.01)


async def started(coordinator: MiniCoordinator, handler: RecordingHandler, token: str = "good-token") -> tuple[Link, asyncio.Task]:
    await coordinator.start()
    link = Link(coordinator.url, token, handler, sleep=no_sleep)
    return link, asyncio.create_task(link.run())


async def stopped(link: Link, task: asyncio.Task, coordinator: MiniCoordinator) -> None:
    link.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await coordinator.stop()


async def test_the_agent_registers_then_heartbeats_its_slot_state():
    coordinator, handler = MiniCoordinator(heartbeat_interval_s=0.05), RecordingHandler()
    link, task = await started(coordinator, handler)
    register = await coordinator.next_frame("register")
    assert register["hardware"]["chip"] == "Test M0" and register["protocol_version"] == 1
    first = await coordinator.next_frame("heartbeat")
    second = await coordinator.next_frame("heartbeat")
    assert (first["seq"], second["seq"]) == (1, 2)
    assert first["slots"][0] == {**first["slots"][0], "model": "gpt-oss-tiny", "state": "idle"}
    assert first["memory"]["cap_bytes"] == 14 * 2**30
    assert link.state is LinkState.READY
    await stopped(link, task, coordinator)


async def test_a_state_change_heartbeat_goes_out_at_once_not_at_the_next_interval():
    coordinator, handler = MiniCoordinator(heartbeat_interval_s=60), RecordingHandler()
    link, task = await started(coordinator, handler)
    await coordinator.next_frame("heartbeat")  # the one right after registered
    handler.state = "running"
    changed_at = time.perf_counter()
    handler.state_changed.set()
    heartbeat = await coordinator.next_frame("heartbeat", timeout=1.0)
    latency = time.perf_counter() - changed_at
    assert heartbeat["slots"][0]["state"] == "running"
    assert latency < 0.1, f"{latency * 1000:.1f} ms"
    await stopped(link, task, coordinator)


async def test_the_agent_reconnects_and_registers_again_after_the_coordinator_restarts():
    coordinator, handler = MiniCoordinator(), RecordingHandler()
    link, task = await started(coordinator, handler)
    await coordinator.next_frame("register")
    port = coordinator.port
    await coordinator.stop()
    await coordinator.start(port)
    await coordinator.next_frame("register", timeout=10)
    assert link.num_connects == 2
    await stopped(link, task, coordinator)


async def test_a_refused_token_stops_the_link_without_retrying():
    coordinator, handler = MiniCoordinator(), RecordingHandler()
    link, task = await started(coordinator, handler, token="wrong")
    with pytest.raises(LinkAuthRefused, match="HTTP 401"):
        await asyncio.wait_for(task, 5)
    assert link.num_connects == 0 and link.backoff.attempts == 0
    await coordinator.stop()


async def test_malformed_frames_get_an_error_frame_and_the_link_stays_up():
    coordinator, handler = MiniCoordinator(), RecordingHandler()
    link, task = await started(coordinator, handler)
    await coordinator.next_frame("register")
    for bad in ["not json", '{"type": "launch_missiles"}', '{"type": "cancel"}', "[]", '{"type": "load_model", "model": 5}']:
        await coordinator.send(bad)
        error = await coordinator.next_frame("error")
        assert error["code"] in {"frame_not_json", "unknown_message_type", "invalid_field"}
    await coordinator.send({"type": "cancel", "request_id": "r-1"})
    await handler.until(lambda: any(event.type == "cancel" for event in handler.events))
    asked = [(event.type, getattr(event, "request_id", None)) for event in handler.events]
    assert asked == [("registered", None), ("cancel", "r-1")]  # none of the malformed frames got through
    assert link.num_connects == 1
    await stopped(link, task, coordinator)


async def test_a_dropped_link_hands_every_in_flight_request_to_the_daemon():
    coordinator, handler = MiniCoordinator(), RecordingHandler()
    link, task = await started(coordinator, handler)
    await coordinator.next_frame("register")
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    for request_id in ("a", "b", "c"):
        await coordinator.send({"type": "inference_request", "request_id": request_id, "model": "m", "body": body})
    await handler.until(lambda: [e.request_id for e in handler.events if e.type == "inference_request"]
                        == ["a", "b", "c"])
    link.send(link.session.complete("b", 3, 1, FinishReason.STOP))
    await coordinator.next_frame("inference_complete")
    await coordinator.connections[-1].close()
    await handler.until(lambda: bool(handler.lost))
    assert sorted(handler.lost[0]) == ["a", "c"]
    await stopped(link, task, coordinator)


def test_backoff_doubles_from_half_a_second_to_a_thirty_second_cap_with_jitter():
    backoff = Backoff()
    delays = [backoff.next_delay() for _ in range(10)]
    assert 0.4 <= delays[0] <= 0.6 and 0.8 <= delays[1] <= 1.2
    assert max(delays) <= 30 and delays[-1] >= 24
    backoff.reset()
    assert backoff.next_delay() <= 0.6
