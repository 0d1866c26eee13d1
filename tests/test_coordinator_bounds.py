"""Hostile providers against the coordinator's bounds (issue 11 point 5), over the real websocket:
a register that claims a context of 2^30, a register of megabytes, a flood of bad frames."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import httpx
import structlog
from websockets.asyncio.client import connect

from agent.coordinator.http.log_budget import LogBudget
from agent.coordinator.settings import CoordinatorSettings
from agent.wire.frames import MAX_CONTEXT_TOKENS, Hardware, Register, SlotState
from agent.wire.protocol import MAX_REGISTER_FRAME_BYTES, PROTOCOL_VERSION, encode
from tests.provider_support import FAST, GEMMA, GPT, coordinator, entry_for, provider


def _register(*entries) -> dict:
    frame = Register(protocol_version=PROTOCOL_VERSION, agent_version="hostile",
                     hardware=Hardware(chip="Test M4", memory_bytes=64 * 2**30, gpu_cores=10), models=entries)
    return json.loads(encode(frame))


async def test_a_register_claiming_a_context_of_two_to_the_thirty_is_refused_naming_the_field():
    async with coordinator() as server:
        frame = _register(entry_for(GPT))
        frame["models"][0]["max_context"] = 2**30
        async with connect(server.ws_url) as ws:
            await ws.send(json.dumps(frame))
            answer = json.loads(await ws.recv())
        assert answer["type"] == "error" and answer["code"] == "invalid_field"
        assert answer["field"] == "models.0.max_context" and str(MAX_CONTEXT_TOKENS) in answer["message"]
        assert len(server.coordinator.router.registry) == 0


async def test_metrics_and_capacity_answer_in_under_100_ms_beside_a_provider_at_the_largest_context():
    async with coordinator() as server:
        # Models the catalog does not know: the coordinator plans with the context the provider claims.
        hostile = [replace(spec, id=f"hostile-{spec.id}", max_context=MAX_CONTEXT_TOKENS) for spec in (GPT, GEMMA)]
        await provider(server, *hostile, state=SlotState.COLD)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            for path in ("/metrics", "/v1/models/capacity", "/health", "/metrics"):
                started = time.perf_counter()
                response = await http.get(path)
                elapsed = time.perf_counter() - started
                assert response.status_code == 200 and elapsed < 0.1, (path, elapsed)
        assert 'darkbloom_providers{model="hostile-gpt-oss-20b",state="cold_no_room"} 1.0' in response.text  # the load gate ran
        assert len(server.coordinator.router.registry) == 1


async def test_a_register_frame_over_the_register_limit_is_refused_before_it_is_parsed():
    async with coordinator() as server:
        frame = _register(entry_for(GPT))
        frame["agent_version"] = "x" * (MAX_REGISTER_FRAME_BYTES + 1)  # also too long a field: size is checked first
        async with connect(server.ws_url) as ws:
            await ws.send(json.dumps(frame))
            answer = json.loads(await ws.recv())
            assert answer["code"] == "frame_too_large" and str(MAX_REGISTER_FRAME_BYTES) in answer["message"]
            await ws.send(json.dumps(_register(entry_for(GPT))))  # the link is still usable
            assert json.loads(await ws.recv())["type"] == "registered"


async def test_a_flood_of_bad_frames_is_answered_every_time_but_logged_only_up_to_the_budget():
    settings = CoordinatorSettings(**{**{f: getattr(FAST, f) for f in FAST.__slots__},
                                      "bad_frame_log_lines": 5, "bad_frame_log_interval_s": 3600.0})
    async with coordinator(settings) as server:
        with structlog.testing.capture_logs() as logs:
            async with connect(server.ws_url) as ws:
                for i in range(200):
                    await ws.send("{not json" if i % 2 else json.dumps({"type": "no_such_frame"}))
                answers = [json.loads(await ws.recv()) for _ in range(200)]
        assert all(answer["type"] == "error" for answer in answers)
        assert len([line for line in logs if line["event"] == "provider.bad_frame"]) == 5


def test_a_log_budget_allows_its_lines_per_interval_then_reports_how_many_it_suppressed():
    now = [0.0]
    budget = LogBudget(max_lines=2, interval_s=10.0, clock=lambda: now[0])
    assert [budget.allow() for _ in range(5)] == [True, True, False, False, False]
    now[0] = 10.0
    assert budget.allow() and budget.take_suppressed() == 3 and budget.take_suppressed() == 0


async def test_a_catalog_model_registered_with_a_larger_context_is_planned_at_the_catalogs_context():
    async with coordinator() as server:
        entry = entry_for(GPT).model_copy(update={"max_context": MAX_CONTEXT_TOKENS})
        await provider(server, GPT, models=[entry])
        [(_, offer)] = server.coordinator.router.registry.offers(GPT.id)
        assert offer.spec.max_context == GPT.max_context < MAX_CONTEXT_TOKENS
