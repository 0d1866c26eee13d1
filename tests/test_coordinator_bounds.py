"""Hostile providers against the coordinator's bounds (issue 11 point 5), over the real websocket:
a register that claims a context of 2^30, a register of megabytes, a flood of bad frames."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import httpx
import pytest
import structlog
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.ledger import credit_account
from agent.coordinator.billing.ratelimit import RateLimits
from agent.coordinator.http.app import served_accounts
from agent.coordinator.http.head_deadline import HAS_HTTPTOOLS
from agent.coordinator.http.log_budget import LogBudget
from agent.coordinator.settings import CoordinatorSettings
from agent.testing.fleet.harness import MICROS_PER_DOLLAR
from agent.wire.frames import MAX_CONTEXT_TOKENS, Hardware, Register, SlotState
from agent.wire.protocol import MAX_REGISTER_FRAME_BYTES, PROTOCOL_VERSION, encode
from tests.provider_support import FAST, GEMMA, GPT, Reply, coordinator, entry_for, eventually, provider


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
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            await http.get("/metrics")  # the first scrape's own start-up is not the provider's doing
            await provider(server, *hostile, state=SlotState.COLD)
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
    async with coordinator(_with(bad_frame_log_lines=5, bad_frame_log_interval_s=3600.0)) as server:
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


# The HTTP bounds hold with either parser uvicorn ships (http/head_deadline.py has one adapter for each).
PARSERS = pytest.mark.parametrize("parser", ["h11", pytest.param("httptools", marks=pytest.mark.skipif(
    not HAS_HTTPTOOLS, reason="httptools is not installed"))])


def _with(**changes) -> CoordinatorSettings:
    return CoordinatorSettings(**{**{f: getattr(FAST, f) for f in FAST.__slots__}, **changes})


async def _refused_status(url: str, token: str) -> tuple[int, str]:
    try:
        async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}):
            return 101, ""
    except InvalidStatus as exc:
        return exc.response.status_code, exc.response.body.decode()


async def test_links_past_the_per_ip_cap_are_refused_with_the_reason_until_one_closes():
    async with coordinator(_with(max_provider_links_per_ip=2)) as server:
        first = await provider(server, GPT, token="a")
        await provider(server, GPT, token="b")
        status, body = await _refused_status(server.ws_url, "c")
        assert status == 429 and "max_provider_links_per_ip" in body and "2 live" in body
        await first.stop()
        caps = server.app.state.provider_endpoint.caps
        await eventually(lambda: sum(caps.by_ip.values()) == 1, what="the first link released its place")
        await provider(server, GPT, token="c")


async def test_links_past_the_per_credential_cap_are_refused_while_other_credentials_connect():
    async with coordinator(_with(max_provider_links_per_credential=1)) as server:
        await provider(server, GPT, token="shared")
        status, body = await _refused_status(server.ws_url, "shared")
        assert status == 429 and "max_provider_links_per_credential" in body
        await provider(server, GPT, token="another")
        assert len(server.coordinator.router.registry) == 2


# ---- hostile HTTP clients, over raw loopback sockets -------------------------------------------

_WRITERS: list[asyncio.StreamWriter] = []  # a dropped StreamWriter closes its socket: keep them for the test


async def _exchange(server, head: bytes, body: bytes = b"", *, timeout: float = 5.0) -> tuple[bytes, asyncio.StreamReader]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    _WRITERS.append(writer)
    writer.write(head + body)
    await writer.drain()
    async with asyncio.timeout(timeout):
        status_line = await reader.readline()
    return status_line, reader


def _post_head(content_length: int, extra: bytes = b"") -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + extra +
            b"Content-Length: " + str(content_length).encode() + b"\r\n\r\n")


@PARSERS
async def test_a_declared_body_over_the_limit_is_refused_with_413_before_a_byte_of_it_is_read(parser):
    async with coordinator(_with(http_parser=parser)) as server:
        status, _ = await _exchange(server, _post_head(100 * 2**20))  # and never sends the body
        assert status.startswith(b"HTTP/1.1 413")


@PARSERS
async def test_a_body_that_trickles_is_refused_with_408_once_the_body_timeout_passes(parser):
    async with coordinator(_with(http_parser=parser, body_read_timeout_s=0.3)) as server:
        started = time.perf_counter()
        status, _ = await _exchange(server, _post_head(1000), b'{"model": "')  # and nothing more
        assert status.startswith(b"HTTP/1.1 408") and time.perf_counter() - started < 3


@PARSERS
async def test_a_request_head_over_the_header_limit_is_refused(parser):
    async with coordinator(_with(http_parser=parser, http_max_header_bytes=16 * 1024)) as server:
        # A head that keeps growing and never ends (h11 bounds what it buffers while the head is incomplete;
        # with httptools, the adapter counts the head's bytes).
        growing = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 64 * 1024
        status, reader = await _exchange(server, growing)
        assert status.startswith(b"HTTP/1.1 400")
        async with asyncio.timeout(5):
            await reader.read()  # the server closes the connection


HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


@PARSERS
async def test_connections_past_the_connection_limit_get_503_and_silent_ones_are_closed_at_the_head_deadline(parser):
    async with coordinator(_with(http_parser=parser, http_max_connections=2, http_head_timeout_s=0.3)) as server:
        silent = [await asyncio.open_connection(server.host, server.port) for _ in range(2)]
        silent[1][1].write(b"GET /health HTTP/1.1\r\nHo")  # slowloris: part of a head, then nothing
        status, _ = await _exchange(server, HEALTH)
        assert status.startswith(b"HTTP/1.1 503")
        async with asyncio.timeout(5):
            for reader, _ in silent:
                assert await reader.read() == b""  # closed by the head deadline, not held forever
        status, _ = await _exchange(server, HEALTH)
        assert status.startswith(b"HTTP/1.1 200")


@PARSERS
async def test_an_idle_keep_alive_connection_is_closed_and_a_slow_consumer_of_a_stream_keeps_its_connection(parser):
    async with coordinator(_with(http_parser=parser, http_keep_alive_s=0.3, http_head_timeout_s=0.3)) as server:
        status, reader = await _exchange(server, HEALTH)
        assert status.startswith(b"HTTP/1.1 200")
        async with asyncio.timeout(5):
            await reader.read()  # the response, then the close after the keep-alive time
        agent = await provider(server, GPT, reply=Reply(chunks=["a", "b", "c"], chunk_delay_s=0.3))
        body = json.dumps({"model": GPT.id, "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
        status, reader = await _exchange(server, _post_head(len(body)), body)
        async with asyncio.timeout(10):
            streamed = await reader.read()  # longer than the head deadline: a request in progress is not cut
        assert status.startswith(b"HTTP/1.1 200") and b"[DONE]" in streamed, streamed
        await agent.stop()


# ---- rate limits on by default ------------------------------------------------------------------

def test_a_served_keyed_coordinator_rate_limits_every_account_by_default_and_the_cli_numbers_replace_it(tmp_path):
    accounts = served_accounts(tmp_path / "accounts.db")
    try:
        assert accounts.limiter.default == RateLimits.generous() and not accounts.limiter.default.is_unlimited
    finally:
        accounts.close()
    assert RateLimits.from_cli(None, None) == RateLimits.generous()
    assert RateLimits.from_cli(30, 0) == RateLimits(30, None)


async def test_a_key_flooding_a_rate_limited_coordinator_gets_429_with_retry_after_past_its_limit(tmp_path):
    db = tmp_path / "accounts.db"
    key = create_key(db, "flooder", name="flood").key
    credit_account(db, "flooder", 10 * MICROS_PER_DOLLAR, note="test")
    accounts = served_accounts(db, RateLimits.from_cli(5, None))
    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT)
        async with httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}) as http:
            body = {"model": GPT.id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
            answers = [await http.post("/v1/chat/completions", json=body) for _ in range(8)]
        assert [a.status_code for a in answers] == [200] * 5 + [429] * 3
        assert answers[-1].json()["error"]["code"] == "rate_limit_exceeded" and int(answers[-1].headers["Retry-After"]) >= 1
        await agent.stop()
    accounts.close()


async def test_a_link_that_floods_bad_frames_past_the_limit_is_closed_with_a_policy_code():
    async with coordinator(_with(max_bad_frames=20, bad_frame_log_interval_s=3600.0)) as server:
        async with connect(server.ws_url) as ws:
            for _ in range(50):
                await ws.send("{not json")
            answers = []
            with pytest.raises(ConnectionClosedError):  # the coordinator closes the link
                while True:
                    answers.append(await ws.recv())
        assert len(answers) == 20 and ws.close_code == 1008 and ws.close_reason == "too many bad frames"
