"""The fleet-scale benchmark's parts on a real coordinator over loopback (scripts/bench_relay.py uses them in
other processes): lightweight scripted providers stream batched or per-row chunks, a raw-bytes consumer
reads every token the coordinator counted, and a heartbeating fleet stays registered."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.server import serve

from agent.testing.fleet.light_client import stream_once
from agent.testing.fleet.relay_peer import start_peers, stop_peers
from tests.provider_support import FAST, coordinator, eventually


@pytest.mark.parametrize("batched", [True, False], ids=["batched frames", "one frame per row"])
async def test_scripted_providers_relay_every_token_to_raw_consumers(batched):
    async with coordinator(FAST) as server:
        peers = await start_peers(server.ws_url, 2, batched=batched, step_s=0.005)
        host, port = server.base_url.removeprefix("http://").split(":")
        body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "relay"}], "max_tokens": 12}
        results = await asyncio.gather(*(stream_once(host, int(port), body, key="local", timeout_s=10)
                                         for _ in range(4)))
        assert [(r.ok, r.tokens) for r in results] == [(True, 12)] * 4
        assert all(r.ttft_s is not None and r.ttft_s <= r.seconds for r in results)
        frames = sum(peer.num_frames for peer in peers)
        assert frames < 4 * 12 if batched else frames == 4 * 12  # a step's rows share a frame when batched
        assert server.coordinator.accounts.num_holds == 0
        await stop_peers(peers)


async def test_a_heartbeating_fleet_of_scripted_providers_stays_registered():
    async with coordinator(FAST) as server:
        peers = await start_peers(server.ws_url, 20)
        assert len(peers) == 20
        router = server.coordinator.router
        await eventually(lambda: all(peer.num_heartbeats >= 3 for peer in peers), timeout=5, what="three beats each")
        assert len(router.registry) == 20 and not router.evict_stale()
        await stop_peers(peers)


async def test_a_coordinator_that_never_answers_register_leaves_its_peers_out_instead_of_hanging_the_run():
    async def silent(ws) -> None:  # takes the handshake and the register, never says `registered`
        async for _ in ws:  # until the peer gives up and closes
            pass

    async with serve(silent, "127.0.0.1", 0) as mute:
        port = mute.sockets[0].getsockname()[1]
        peers = await asyncio.wait_for(start_peers(f"ws://127.0.0.1:{port}/ws/provider", 3, register_timeout_s=0.2),
                                       timeout=10)
    assert peers == []


@pytest.mark.parametrize("batched", [True, False], ids=["batched frames", "one frame per row"])
async def test_the_bare_relay_streams_every_scripted_token_to_raw_consumers(batched):
    """scripts/bare_relay.py, bench_relay's floor of a relay in Python, relays what the coordinator does for the
    same peers and consumers: every token, in an SSE stream the light consumer reads to its usage and [DONE]."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "bare_relay.py"
    relay = await asyncio.create_subprocess_exec(sys.executable, str(script), stdin=asyncio.subprocess.PIPE,
                                                 stdout=asyncio.subprocess.PIPE)
    try:
        base_url = (await asyncio.wait_for(relay.stdout.readline(), timeout=30)).decode().strip()
        peers = await start_peers(base_url.replace("http://", "ws://") + "/ws/provider", 2, batched=batched,
                                  step_s=0.005)
        assert len(peers) == 2
        host, port = base_url.removeprefix("http://").split(":")
        body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "relay"}], "max_tokens": 12}
        results = await asyncio.gather(*(stream_once(host, int(port), body, timeout_s=10) for _ in range(4)))
        assert [(r.ok, r.tokens) for r in results] == [(True, 12)] * 4
        assert all(r.ttft_s is not None for r in results)
        await stop_peers(peers)
    finally:
        relay.stdin.close()
        await asyncio.wait_for(relay.wait(), timeout=30)
    assert relay.returncode == 0


def test_the_instruction_counters_workload_writes_every_row_it_handles_straight_out():
    """scripts/bench_row_instructions.py counts the relay's fast path only if every row takes it: its workload
    exits non-zero when a row was not written straight out (run here without valgrind, at a small size)."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_row_instructions.py"
    done = subprocess.run([sys.executable, str(script), "--workload", "handle", "--providers", "3", "--streams", "7",
                           "--rounds", "4"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_opcode_counter_splits_each_functions_bytecodes_into_per_token_and_per_request():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import bench_relay_opcodes

    # 10 streams: `relay` runs 3 bytecodes a token and 50 a request, `setup` 20 a request, `tail` only in the long run
    long = {"tokens": 400, "counts": {"relay": 3 * 400 + 50 * 10, "setup": 200, "tail": 40}}
    short = {"tokens": 100, "counts": {"relay": 3 * 100 + 50 * 10, "setup": 200}}
    per_token, per_request = bench_relay_opcodes.split(long, short, streams=10)
    assert per_token == {"relay": 3.0, "setup": 0.0, "tail": 40 / 300}
    assert per_request["relay"] == 50.0 and per_request["setup"] == 20.0


def test_the_opcode_counter_sees_the_coordinators_hot_path_in_a_live_relay():
    """scripts/bench_relay_opcodes.py traces a real coordinator relaying scripted providers' tokens (a small fleet):
    the flow's text lane and the stream's direct write are among what a token costs, and the run was whole."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_relay_opcodes.py"
    done = subprocess.run([sys.executable, str(script), "--providers", "2", "--streams", "4", "--tokens", "8", "3",
                           "--top", "40", "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    per_token = dict(result["top_per_token"])
    assert result["per_token"] > 0 and result["per_request"] > result["per_token"]
    assert any(name.endswith("RequestFlow._text") for name in per_token)
    assert any(name.endswith("DirectStream.take") for name in per_token)
