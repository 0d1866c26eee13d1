"""The daemon against a real websocket coordinator on loopback, with the fake engine (and once with MLX)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.catalog import load_catalog
from agent.daemon.config import load_config
from agent.daemon.handler import MemoryReading
from agent.daemon.main import Daemon
from agent.engine import FakeEngine, FakeScript, FakeTiming
from agent.engine.models import ModelEntry
from agent.link.client import EXIT_AUTH_REFUSED
from agent.wire.frames import Hardware
from tests.link_support import MiniCoordinator

GIB = 1024**3
SPEC = replace(load_catalog()["gpt-oss-20b"], id="gpt-oss")
HARDWARE = Hardware(chip="Apple M4 Max", memory_bytes=64 * GIB, gpu_cores=40)
BODY = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 32}


class NoSleepGuard:
    def update(self, any_running: bool) -> None:
        pass

    def close(self) -> None:
        pass


def make_daemon(coordinator: MiniCoordinator, tmp_path: Path, *, token: str = "good-token", scripts=None,
                timing: FakeTiming = FakeTiming(decode_tps=400, load_seconds=0.05),
                drain_deadline_s: float = 5.0) -> Daemon:
    config = load_config(None, {"HOME": str(tmp_path)}, {
        "coordinator_url": coordinator.url, "provider_token": token, "drain_deadline_s": drain_deadline_s,
        "status_path": str(tmp_path / "status.json"),
    })

    def factory(entries, engine_config):
        kwargs = {"scripts": scripts} if scripts else {}
        return FakeEngine(entries, memory_bytes=64 * GIB, timing=timing, config=engine_config, **kwargs)

    return Daemon(config, {"gpt-oss": ModelEntry(SPEC)}, HARDWARE, engine_factory=factory,
                  read_memory=lambda: MemoryReading(64 * GIB, 40 * GIB), sleep_guard=NoSleepGuard())


async def running(tmp_path, **kwargs) -> tuple[MiniCoordinator, Daemon, asyncio.Task]:
    coordinator = MiniCoordinator(heartbeat_interval_s=30)
    await coordinator.start()
    daemon = make_daemon(coordinator, tmp_path, **kwargs)
    task = asyncio.create_task(daemon.run(install_signals=False))
    await coordinator.next_frame("register")
    await wait_for_state(coordinator, "idle")
    return coordinator, daemon, task


async def wait_for_state(coordinator: MiniCoordinator, state: str, timeout: float = 5.0) -> dict:
    while True:
        heartbeat = await coordinator.next_frame("heartbeat", timeout)
        if heartbeat["slots"][0]["state"] == state:
            return heartbeat


async def finished(coordinator, daemon, task) -> int:
    daemon.should_exit.set()
    code = await asyncio.wait_for(task, 10)
    await coordinator.stop()
    return code


async def request(coordinator, request_id: str, body=BODY) -> None:
    await coordinator.send({"type": "inference_request", "request_id": request_id, "model": "gpt-oss", "body": body})


async def test_register_carries_exact_kv_cost_and_whether_each_model_fits(tmp_path):
    coordinator = MiniCoordinator()
    await coordinator.start()
    daemon = make_daemon(coordinator, tmp_path)
    task = asyncio.create_task(daemon.run(install_signals=False))
    register = await coordinator.next_frame("register")
    model = register["models"][0]
    assert (model["id"], model["kv_bytes_per_token"], model["kv_fixed_bytes_per_sequence"]) == ("gpt-oss", 24576, 3 * 2**20)
    assert model["fits"] is True and model["kv_layout"]["sliding_window"] == 128
    assert register["hardware"]["chip"] == "Apple M4 Max"
    assert await finished(coordinator, daemon, task) == 0


async def test_a_request_streams_accepted_chunks_and_complete_with_usage(tmp_path):
    coordinator, daemon, task = await running(tmp_path)
    await request(coordinator, "r-1")
    accepted = await coordinator.next_frame("inference_accepted")
    assert accepted["request_id"] == "r-1" and accepted["reservation_bytes"] > 0
    complete = await coordinator.next_frame("inference_complete")
    chunks = coordinator.drain_frames("inference_response_chunk")
    assert complete["usage"]["completion_tokens"] > 0 and complete["finish_reason"] in ("stop", "length")
    assert [c["seq"] for c in chunks] == list(range(1, complete["num_chunks"] + 1))
    assert all(c["request_id"] == "r-1" and c["delta"]["content"] for c in chunks)
    # Each chunk counts its tokens, so the coordinator can bill its own count (all but a trailing EOS).
    counted = sum(c["num_tokens"] for c in chunks)
    assert 0 < counted <= complete["usage"]["completion_tokens"] <= counted + 4
    heartbeat = await wait_for_state(coordinator, "idle")
    assert heartbeat["slots"][0]["kv_reserved_bytes"] == 0
    assert await finished(coordinator, daemon, task) == 0


async def test_a_refused_request_is_rejected_at_once_with_its_verdict(tmp_path):
    coordinator, daemon, task = await running(tmp_path)
    await request(coordinator, "too-long", {**BODY, "max_tokens": 200_000})
    rejected = await coordinator.next_frame("inference_rejected")
    assert rejected["verdict"] == "never" and "context" in rejected["reason"]
    await coordinator.send({"type": "inference_request", "request_id": "x", "model": "nope", "body": BODY})
    assert (await coordinator.next_frame("inference_rejected"))["verdict"] == "never"
    assert await finished(coordinator, daemon, task) == 0


def slow(_request) -> FakeScript:
    return FakeScript(output_tokens=10_000)


async def test_cancel_stops_the_stream_and_frees_its_kv(tmp_path):
    coordinator, daemon, task = await running(tmp_path, scripts=slow, timing=FakeTiming(decode_tps=50, load_seconds=0.05))
    await request(coordinator, "long", {**BODY, "max_tokens": 5000})
    await coordinator.next_frame("inference_response_chunk")
    busy = await wait_for_state(coordinator, "running")
    assert busy["slots"][0]["kv_reserved_bytes"] > 0
    await coordinator.send({"type": "cancel", "request_id": "long"})
    complete = await coordinator.next_frame("inference_complete")
    assert complete["finish_reason"] == "cancelled"
    idle = await wait_for_state(coordinator, "idle")
    assert idle["slots"][0]["kv_reserved_bytes"] == 0 and idle["slots"][0]["kv_used_bytes"] == 0
    assert await finished(coordinator, daemon, task) == 0


async def test_a_link_drop_mid_stream_cancels_it_and_frees_its_kv(tmp_path):
    coordinator, daemon, task = await running(tmp_path, scripts=slow, timing=FakeTiming(decode_tps=50, load_seconds=0.05))
    await request(coordinator, "long", {**BODY, "max_tokens": 5000})
    await coordinator.next_frame("inference_response_chunk")
    assert daemon.engine.snapshot().slots[0].kv_reserved_bytes > 0
    await coordinator.connections[-1].close()
    await coordinator.next_frame("register", timeout=10)  # it reconnects and registers its current state
    slot = daemon.engine.snapshot().slots[0]
    assert slot.kv_reserved_bytes == 0 and slot.num_running == 0
    assert await finished(coordinator, daemon, task) == 0


async def test_stopping_drains_in_flight_streams_before_exiting(tmp_path):
    coordinator, daemon, task = await running(tmp_path, timing=FakeTiming(decode_tps=100, load_seconds=0.05))
    await request(coordinator, "r-1")
    await coordinator.next_frame("inference_accepted")
    daemon.should_exit.set()
    complete = await coordinator.next_frame("inference_complete")
    assert complete["finish_reason"] in ("stop", "length")
    assert await asyncio.wait_for(task, 10) == 0
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "stopped" and status["num_served"] == 1
    await coordinator.stop()


async def test_a_drain_that_runs_out_of_time_still_delivers_the_cancelled_streams_last_frame(tmp_path):
    coordinator, daemon, task = await running(tmp_path, scripts=slow, drain_deadline_s=0.2,
                                              timing=FakeTiming(decode_tps=50, load_seconds=0.05))
    await request(coordinator, "long", {**BODY, "max_tokens": 5000})
    await coordinator.next_frame("inference_response_chunk")
    daemon.should_exit.set()
    while not (await coordinator.next_frame("heartbeat"))["draining"]:
        pass  # the drain's own heartbeat says so at once
    assert await asyncio.wait_for(task, 10) == 0
    complete = await coordinator.next_frame("inference_complete")
    assert complete["request_id"] == "long" and complete["finish_reason"] == "cancelled"
    assert complete["num_chunks"] == coordinator.frames["inference_response_chunk"].qsize() + 1
    await coordinator.connections[-1].wait_closed()
    assert coordinator.connections[-1].close_code == 1000  # the agent closed it, after the last frame
    assert len(daemon.handler.background) == 0 and len(daemon.tasks) == 0
    await coordinator.stop()
    leftover = [task.get_name() for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    assert leftover == []  # every task the daemon, its engine and its link started has ended with it


async def test_a_refused_token_stops_the_daemon_with_its_own_exit_code(tmp_path):
    coordinator = MiniCoordinator()
    await coordinator.start()
    daemon = make_daemon(coordinator, tmp_path, token="stolen")
    assert await asyncio.wait_for(daemon.run(install_signals=False), 10) == EXIT_AUTH_REFUSED
    await coordinator.stop()


frames = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    st.dictionaries(st.sampled_from(["type", "request_id", "model", "body", "seq", "x"]),
                    st.one_of(st.none(), st.integers(), st.text(max_size=20),
                              st.sampled_from(["inference_request", "cancel", "load_model", "registered"])),
                    max_size=5).map(json.dumps),
)


async def test_fuzzed_frames_never_crash_the_agent_or_drop_the_link(tmp_path):
    coordinator, daemon, task = await running(tmp_path)
    sent: list = []

    # Hypothesis draws the frames (shrinking is moot: the check is that the link survives them all).
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(frame=frames)
    def collect(frame):
        sent.append(frame)

    collect()
    for frame in sent:
        await coordinator.send(frame)
    errors = 0
    while errors < len(sent) // 2:  # most fuzzed frames are answered with an error frame
        await coordinator.next_frame("error")
        errors += 1
    await request(coordinator, "after-fuzz")
    complete = await coordinator.next_frame("inference_complete", timeout=10)
    assert complete["request_id"] == "after-fuzz"
    assert daemon.link.num_connects == 1 and not task.done()
    assert await finished(coordinator, daemon, task) == 0


async def test_darkbloom_agent_start_streams_from_the_tiny_gpt_oss_model_and_stops_on_sigterm(tmp_path, tiny_models_dir):
    coordinator = MiniCoordinator(heartbeat_interval_s=0.5)
    await coordinator.start()
    script = Path(sys.executable).parent / "darkbloom-agent"
    env = {**os.environ, "HOME": str(tmp_path), "DARKBLOOM_STATUS_PATH": str(tmp_path / "status.json")}
    agent = subprocess.Popen(
        [str(script), "start", "--coordinator", coordinator.url, "--token", "good-token",
         "--model", str(tiny_models_dir / "gpt-oss-tiny")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        register = await coordinator.next_frame("register", timeout=60)
        assert register["models"][0]["id"] == "gpt-oss-tiny"
        await wait_for_state(coordinator, "idle", timeout=60)
        await coordinator.send({"type": "inference_request", "request_id": "real-1", "model": "gpt-oss-tiny",
                                "body": {**BODY, "temperature": 0, "max_tokens": 12}})
        await coordinator.next_frame("inference_accepted", timeout=30)
        complete = await coordinator.next_frame("inference_complete", timeout=60)
        assert complete["usage"]["prompt_tokens"] > 0 and 0 < complete["usage"]["completion_tokens"] <= 12
        agent.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(agent.wait, 60)
        output = agent.stdout.read()
        assert code == 0, output
        assert '"request.done"' in output or "request.done" in output
    finally:
        if agent.poll() is None:
            agent.kill()
        await coordinator.stop()


class SlowAdmission:
    """A fake collaborator: the fake engine, but submit waits until the test opens the gate."""

    def __init__(self, engine) -> None:
        self.engine, self.gate = engine, asyncio.Event()
        self.is_admitting, self.is_cancel_asked = asyncio.Event(), asyncio.Event()

    def __getattr__(self, name):
        return getattr(self.engine, name)

    async def submit(self, request):
        self.is_admitting.set()
        await self.gate.wait()
        return await self.engine.submit(request)

    async def cancel(self, request_id):
        self.is_cancel_asked.set()
        return await self.engine.cancel(request_id)


async def test_a_cancel_that_arrives_while_the_request_is_being_admitted_still_stops_it(tmp_path):
    coordinator = MiniCoordinator(heartbeat_interval_s=30)
    await coordinator.start()
    daemon = make_daemon(coordinator, tmp_path, scripts=slow, timing=FakeTiming(decode_tps=50, load_seconds=0.05))
    slow_engine = SlowAdmission(daemon.engine)
    daemon.engine = daemon.handler.engine = slow_engine
    task = asyncio.create_task(daemon.run(install_signals=False))
    await wait_for_state(coordinator, "idle")
    await request(coordinator, "early-cancel", {**BODY, "max_tokens": 5000})
    await asyncio.wait_for(slow_engine.is_admitting.wait(), 5)
    await coordinator.send({"type": "cancel", "request_id": "early-cancel"})
    await asyncio.wait_for(slow_engine.is_cancel_asked.wait(), 5)
    assert "early-cancel" in daemon.handler.cancelled  # the cancel came while the engine was still admitting
    slow_engine.gate.set()
    complete = await coordinator.next_frame("inference_complete")
    assert complete["finish_reason"] == "cancelled" and complete["usage"]["completion_tokens"] < 5000
    idle = await wait_for_state(coordinator, "idle")
    assert idle["slots"][0]["kv_reserved_bytes"] == 0
    assert await finished(coordinator, daemon, task) == 0
