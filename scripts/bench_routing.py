#!/usr/bin/env python3
"""How long the coordinator takes to route: one decision in-process, and the first token over loopback.

    scripts/bench_routing.py                   routing decisions with 60 registered providers (no network)
    scripts/bench_routing.py --ttft            time to first token through the coordinator on loopback,
                                               against a scripted provider that answers at once (so the
                                               time measured is what the coordinator and two hops add);
                                               the client runs here, coordinator + provider in a child
                                               process
    --json                                     one JSON object instead of the table

Decisions: 60 providers, each serving gpt-oss-20b and gemma-4-26b, in a mix of states (warm with
0–95 % of their KV reserved, cold, never-fits); requests of 50–30,000 prompt tokens (log-uniform) and
64–32,768 max_tokens. `dispatch` is Router.try_dispatch (the request path: rank, admit_request until a warm slot
says yes, commit); `full` is a complete placement (every provider checked: the capacity/refusal path);
`saturated` is a dispatch when every warm slot is full (every warm slot checked, cold ones gated).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.coordinator.routing.exchange import Exchange  # noqa: E402
from agent.coordinator.routing.placement import Ask  # noqa: E402
from agent.coordinator.routing.router import Router  # noqa: E402
from agent.coordinator.settings import CoordinatorSettings  # noqa: E402
from agent.wire.chat_body import ChatCompletionBody, ChatMessage  # noqa: E402
from agent.wire.frames import Hardware, Heartbeat, MemoryStatus, Register, SlotState, SlotStatus  # noqa: E402
from agent.wire.protocol import PROTOCOL_VERSION  # noqa: E402

GIB = 2**30
NUM_PROVIDERS = 60


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ordered), "p50_us": pick(0.50) * 1e6, "p95_us": pick(0.95) * 1e6, "p99_us": pick(0.99) * 1e6,
            "mean_us": statistics.fmean(ordered) * 1e6}


def fleet(rng: random.Random, *, saturated: bool = False, num_providers: int = NUM_PROVIDERS) -> Router:
    from tests.provider_support import GEMMA, GPT, entry_for
    router = Router(CoordinatorSettings())
    for i in range(num_providers):
        memory = rng.choice([24, 32, 48, 64, 128]) * GIB
        register = Register(protocol_version=PROTOCOL_VERSION, agent_version="bench",
                            hardware=Hardware(chip="M4", memory_bytes=memory, gpu_cores=10),
                            models=(entry_for(GPT), entry_for(GEMMA, fits=memory >= 32 * GIB, fit_reason="cap")))
        provider = router.connect(register, lambda frame: None)
        slots = []
        for model in (GPT.id, GEMMA.id):
            if rng.random() < 0.6:
                budget = rng.choice([8, 16, 40]) * GIB
                share = 1.0 if saturated else rng.uniform(0, 0.95)
                slots.append(SlotStatus(model=model, state=SlotState.RUNNING, num_running=rng.randint(0, 20),
                                        kv_budget_bytes=budget, kv_reserved_bytes=int(budget * share)))
            else:
                slots.append(SlotStatus(model=model, state=SlotState.COLD))
        router.receive(provider, Heartbeat(seq=1, slots=tuple(slots), memory=MemoryStatus(
            total_bytes=memory, available_bytes=memory // 2, cap_bytes=int(memory * 0.9))))
    return router


def bench_decisions(num: int, seed: int, num_providers: int = NUM_PROVIDERS,
                    clock=time.perf_counter) -> dict[str, dict[str, float]]:
    """`clock`: time.perf_counter (wall) or time.thread_time (this thread's CPU: what other processes on a
    shared machine take does not count)."""
    rng = random.Random(seed)
    body = ChatCompletionBody(messages=(ChatMessage(role="user", content="hi"),))
    results = {}
    for name, saturated in (("dispatch", False), ("full", False), ("saturated", True)):
        router, samples = fleet(rng, saturated=saturated, num_providers=num_providers), []
        for i in range(num):
            model = rng.choice(["gpt-oss-20b", "gemma-4-26b"])
            prompt = int(math.exp(rng.uniform(math.log(50), math.log(30_000))))
            ask = Ask(model, prompt, prompt // 3, rng.choice([64, 512, 1_024, 4_096, 32_768]))
            exchange = Exchange(f"r{i}", body, ask, 0.0)
            started = clock()
            if name == "full":
                router.placement(ask)
            else:
                router.try_dispatch(exchange)
            samples.append(clock() - started)
            if exchange.provider is not None:  # keep the fleet's state steady: the request ends at once
                exchange.provider.offers[model].pending.end(exchange.request_id)
                exchange.provider.exchanges.pop(exchange.request_id, None)
        results[name] = percentiles(samples)
    return results


async def serve_for_bench() -> None:
    """The server side of --ttft, in its own process: a coordinator and an instant scripted provider."""
    from tests.provider_support import GPT, Reply, coordinator, provider

    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["hi"]))
        print(server.base_url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
        await agent.stop()


async def bench_ttft(base_url: str, num: int, concurrency: int) -> dict[str, dict[str, float]]:
    import httpx

    body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 8}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=10, limits=limits) as http:

        async def first_token() -> float:
            started, elapsed = time.perf_counter(), float("nan")
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if '"content":"hi"' in line:
                        elapsed = time.perf_counter() - started
            return elapsed

        async def health() -> float:
            started = time.perf_counter()
            await http.get("/health")
            return time.perf_counter() - started

        for _ in range(20):  # warm up connections and code paths
            await first_token()
        floor = [await health() for _ in range(num)]
        sequential = [await first_token() for _ in range(num)]
        concurrent: list[float] = []
        for _ in range(max(1, num // concurrency)):
            concurrent += await asyncio.gather(*(first_token() for _ in range(concurrency)))
    return {"http_round_trip": percentiles(floor), "ttft_sequential": percentiles(sequential),
            f"ttft_{concurrency}_concurrent": percentiles(concurrent)}


def run_ttft(num: int, concurrency: int) -> dict[str, dict[str, float]]:
    """The client here, the coordinator and the provider in a child process (each gets a core)."""
    child = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        base_url = child.stdout.readline().strip()
        return asyncio.run(bench_ttft(base_url, num, concurrency))
    finally:
        child.stdin.close()
        child.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ttft", action="store_true", help="measure first-token latency on loopback instead")
    parser.add_argument("-n", type=int, default=None, help="samples (default 2000 decisions, 300 requests)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # warnings and errors only
    if args.serve:
        return asyncio.run(serve_for_bench())
    if args.ttft:
        results = run_ttft(args.n or 300, args.concurrency)
    else:
        results = bench_decisions(args.n or 2000, args.seed)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    title = "first token through the coordinator (loopback)" if args.ttft else \
        f"one routing decision, {NUM_PROVIDERS} providers x 2 models"
    print(title)
    print(f"{'':28} {'n':>6} {'p50':>10} {'p95':>10} {'p99':>10} {'mean':>10}")
    for name, row in results.items():
        unit, scale = ("ms", 1e-3) if args.ttft else ("us", 1.0)
        cells = [f"{row[k] * scale:8.1f}{unit}" for k in ("p50_us", "p95_us", "p99_us", "mean_us")]
        print(f"{name:28} {row['n']:>6} " + " ".join(cells))


if __name__ == "__main__":
    main()
