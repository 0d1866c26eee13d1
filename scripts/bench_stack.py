"""Side-by-side measurements for bench.py that need no MLX: the full stack vs the engine alone, and
admission with expected-output vs worst-case reservations.

    stack_vs_engine(...)   the same FakeEngine timing, 8 streams × 200 tokens, read (a) straight from the
                           engine and (b) end to end: client → coordinator (keys, billing) → websocket →
                           agent → engine and back as SSE. Aggregate tok/s and TTFT for each, and the
                           stack's CPU per token. The client runs in its own process (`--client`), as a
                           consumer would: its HTTP parsing is not the stack's cost.
    admission_counts()     per Mac size and model: how many 32k-max_tokens requests (1,000-token prompts)
                           one warm slot admits reserving expected output vs prompt + max_tokens.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from agent.admission import SlotKV, admit_request, load_gate, reservation_bytes
from agent.coordinator.http.app import build_app, running
from agent.coordinator.settings import CoordinatorSettings
from agent.engine.fake import FakeEngine
from agent.engine.fake_script import FakeScript
from agent.engine.types import Delta, GenerationRequest
from agent.daemon.handler import LinkHandler, MemoryReading
from agent.link.client import Link
from agent.testing.fleet.agent import fleet_catalog
from agent.wire.frames import Hardware
from agent.testing.fleet.harness import funded_accounts
from agent.testing.fleet.profiles import GPT_OSS, timing_for

GIB = 2**30
SCALE = 0.05  # 20× compressed: 200 tokens at ~70 tok/s stream in ~0.15 s of real time
STREAMS, TOKENS = 8, 200


def _script(request: GenerationRequest) -> FakeScript:
    return FakeScript(output_tokens=TOKENS)


class PacedSleep:
    """The simulated engine's sleeps, paced against a running deadline, as an engine on its own thread runs:
    MLX's steps take their time on the GPU whatever the event loop is doing, so a step that starts late
    because the loop was busy (with the stack's own work) is not made a whole step later again. A plain
    sleep after each step would charge every microsecond of the stack's CPU to the engine's step time, so
    the stack could never fall behind the engine and its backpressure (deltas merged for a slow reader)
    would never be measured. After an idle spell (no sleep for CATCH_UP_S) the deadline restarts from now."""

    CATCH_UP_S = 0.05

    def __init__(self, scale: float) -> None:
        self.scale, self.due = scale, None

    async def __call__(self, seconds: float) -> None:
        now = time.monotonic()
        start = self.due if self.due is not None and now - self.due < self.CATCH_UP_S else now
        self.due = start + max(0.0, seconds) * self.scale
        await asyncio.sleep(max(0.0, self.due - now))


def _engine() -> FakeEngine:
    specs = fleet_catalog()
    return FakeEngine(specs, memory_bytes=128 * GIB, timings={m: timing_for(m, 128) for m in specs},
                      scripts=_script, time_scale=SCALE, sleep=PacedSleep(SCALE))


async def _start_agent(url: str) -> tuple[FakeEngine, Link, asyncio.Task]:
    """SimAgent's parts (agent/testing/fleet/agent.py), with the paced engine."""
    engine = _engine()
    hardware = Hardware(chip="Apple M4 Max", memory_bytes=128 * GIB, gpu_cores=40)
    handler = LinkHandler(engine, fleet_catalog(), hardware, lambda: MemoryReading(128 * GIB, 96 * GIB))
    link = Link(url, "fleet", handler)
    await engine.start()
    task = asyncio.create_task(link.run())
    await engine.load(GPT_OSS)
    handler.state_changed.set()
    return engine, link, task


async def _stop_agent(engine: FakeEngine, link: Link, task: asyncio.Task) -> None:
    link.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await engine.stop()


async def _direct(rounds: int) -> tuple[float, list[float]]:
    engine = _engine()
    await engine.start()
    await engine.load(GPT_OSS)
    rates, ttfts = [], []
    for r in range(rounds):
        started = time.perf_counter()

        async def one(i: int) -> int:
            request = GenerationRequest(f"r{r}-{i}", GPT_OSS, ({"role": "user", "content": f"go {r} {i}"},),
                                  max_tokens=1000)
            stream, n = await engine.submit(request), 0
            async for event in stream:
                if isinstance(event, Delta):
                    if n == 0:
                        ttfts.append(time.perf_counter() - started)
                    n += event.num_tokens or 1  # a slow reader's deltas arrive merged
            return n

        counts = await asyncio.gather(*(one(i) for i in range(STREAMS)))
        rates.append(sum(counts) / (time.perf_counter() - started))
    await engine.stop()
    return statistics.median(rates), ttfts


async def _end_to_end(rounds: int) -> tuple[float, list[float], float]:
    """The stack in this process (coordinator, agent, simulated engine), the consumer in its own: a client's
    HTTP parsing is not the stack's cost. Also the stack's own CPU seconds per token (this process only)."""
    accounts, key = funded_accounts(Path(tempfile.mkdtemp()) / "keys.db")
    async with running(build_app(accounts, CoordinatorSettings(heartbeat_interval_s=0.5))) as server:
        agent = await _start_agent(server.ws_url)
        router = server.coordinator.router
        while not (router.registry and all(p.heartbeat and p.heartbeat.slots[0].state == "idle"
                                           for p in router.registry)):
            await asyncio.sleep(0.01)
        cpu_started = time.process_time()
        client = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), "--client", server.base_url, key, str(rounds),
            stdout=asyncio.subprocess.PIPE)
        out, _ = await client.communicate()
        cpu_s = time.process_time() - cpu_started
        await _stop_agent(*agent)
    accounts.close()
    result = json.loads(out.decode().strip().splitlines()[-1])
    return statistics.median(result["rates"]), result["ttfts"], cpu_s / result["num_tokens"]


async def _client(base_url: str, key: str, rounds: int) -> dict:
    """The consumer's side: `rounds` rounds of STREAMS concurrent streams, timed here. The client reads raw
    bytes (agent/testing/fleet/light_client.py): an SSE parser per event would make the client, not the
    stack, what limits the rate."""
    from agent.testing.fleet.light_client import stream_once

    host, port = base_url.removeprefix("http://").split(":")
    rates, ttfts, num_tokens = [], [], 0
    for r in range(rounds):
        started = time.perf_counter()
        results = await asyncio.gather(*(stream_once(host, int(port), {
            "model": GPT_OSS, "messages": [{"role": "user", "content": f"go {r} {i}"}], "max_tokens": 1000},
            key=key) for i in range(STREAMS)))
        # Tokens (the final usage event), not SSE events: deltas that arrive together are one event.
        tokens = sum(x.tokens for x in results)
        rates.append(tokens / (time.perf_counter() - started))
        ttfts += [x.ttft_s for x in results if x.ttft_s is not None]
        num_tokens += tokens
    return {"rates": rates, "ttfts": ttfts, "num_tokens": num_tokens}


async def stack_vs_engine(rounds: int = 5) -> dict:
    direct_tps, direct_ttft = await _direct(rounds)
    e2e_tps, e2e_ttft, cpu_per_token = await _end_to_end(rounds)
    d50, e50 = statistics.median(direct_ttft), statistics.median(e2e_ttft)
    return {"streams": STREAMS, "tokens_per_stream": TOKENS, "time_scale": SCALE, "rounds": rounds,
            "engine_tok_s_real": round(direct_tps, 1), "end_to_end_tok_s_real": round(e2e_tps, 1),
            "end_to_end_vs_engine": round(e2e_tps / direct_tps, 3),
            "engine_ttft_p50_ms": round(d50 * 1000, 2), "end_to_end_ttft_p50_ms": round(e50 * 1000, 2),
            "added_ttft_p50_ms": round((e50 - d50) * 1000, 2),
            "stack_cpu_us_per_token": round(cpu_per_token * 1e6, 1), "client": "its own process"}


def _main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        print(json.dumps(asyncio.run(_client(sys.argv[2], sys.argv[3], int(sys.argv[4])))))
    else:
        print(json.dumps(asyncio.run(stack_vs_engine())))


def admission_counts(prompt_tokens: int = 1000, max_tokens: int = 32768, ratio: float = 0.7) -> list[dict]:
    rows = []
    for model, spec in fleet_catalog().items():
        for gb in (24, 32, 48, 64, 128):
            gate = load_gate(spec, total_memory_bytes=gb * GIB)
            if not gate.fits:
                continue
            budget = gate.kv_budget_bytes
            margin = int(budget * 0.05)
            expected = _count(spec, budget, margin, prompt_tokens, max_tokens, ratio)
            worst_each = reservation_bytes(spec, prompt_tokens, max_tokens)
            worst = max(0, (budget - margin) // worst_each)
            rows.append({"model": model, "memory_gb": gb, "kv_budget_gib": round(budget / GIB, 2),
                         "admitted_expected": expected, "admitted_worst_case": worst,
                         "ratio": round(expected / worst, 2) if worst else None})
    return rows


def _count(spec, budget: int, margin: int, prompt: int, max_tokens: int, ratio: float, cap: int = 10_000) -> int:
    reserved = 0
    for n in range(cap):
        decision = admit_request(spec, SlotKV(budget, reserved, 0, margin), prompt_tokens=prompt,
                                 max_tokens=max_tokens, ratio=ratio)
        if not decision.admitted:
            return n
        reserved += decision.reservation_bytes
    return cap


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    _main()
