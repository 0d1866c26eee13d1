"""Routing by prefix on the simulated fleet: how many of a conversation's later turns land on the provider
that served its previous turn, and how even the load stays, with prefix routing and without, one run.

    python scripts/bench_prefix_routing.py [--json] [--agents 60] [--conversations 200] [--turns 4]
                                           [--time-scale 0.05]

The real coordinator (open mode) and `--agents` simulated agents (agent.testing.fleet: real agent code,
links and admission, the fake engine with Mac-like timings) run in this process; `--conversations`
conversations run concurrently, each turn sending its whole history. A later turn "lands on its prefix"
when the coordinator dispatched it to the provider its previous turn went to (its
darkbloom_prefix_routes counter: held ÷ (held + elsewhere)). The load is sampled every 20 ms: rows
(running + waiting) on the busiest warm gpt-oss slot ÷ the mean over warm slots, averaged over samples
with rows in flight. TTFT is client-side (streamed), in simulated seconds. The fake engine keeps no
prefix cache, so the cached-token share and the TTFT a cache would save are not measured here.
Results go to scripts/results/prefix_routing.json with --json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from agent.coordinator.billing.accounts import Accounts  # noqa: E402
from agent.coordinator.http.app import build_app, running  # noqa: E402
from agent.coordinator.settings import CoordinatorSettings  # noqa: E402
from agent.logs import configure_logging  # noqa: E402
from agent.testing.fleet.agent import SimAgent  # noqa: E402
from agent.testing.fleet.profiles import GPT_OSS, fleet_memory_gb  # noqa: E402

RESULTS = ROOT / "scripts" / "results" / "prefix_routing.json"
MAX_TOKENS = 48


async def turn(client: httpx.AsyncClient, history: list[dict]) -> tuple[float | None, str]:
    started, ttft, text = time.perf_counter(), None, []
    body = {"model": GPT_OSS, "messages": history, "max_tokens": MAX_TOKENS, "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices", []):
                piece = choice["delta"].get("content") or ""
                if piece and ttft is None:
                    ttft = time.perf_counter() - started
                text.append(piece)
    return ttft, "".join(text)


async def conversation(client: httpx.AsyncClient, index: int, turns: int, ttfts: list[float],
                       errors: list[str]) -> None:
    history = [{"role": "system", "content": "You are a helpful assistant."}]
    for k in range(turns):
        history.append({"role": "user", "content": f"Conversation {index}, question {k}: tell me more."})
        try:
            ttft, text = await turn(client, history)
        except (httpx.HTTPError, RuntimeError) as exc:  # counted, and the conversation ends
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
            return
        if ttft is not None:
            ttfts.append(ttft)
        history.append({"role": "assistant", "content": text or "ok"})


def load_ratio(router) -> float | None:
    rows = [o.status.num_running + o.status.num_waiting + max(0, o.pending.load_delta)
            for _, o in router.registry.offers(GPT_OSS) if o.is_warm]
    mean = sum(rows) / len(rows) if rows else 0
    return max(rows) / mean if mean > 0 else None


def routes(metrics_text: str) -> dict[str, float]:
    found = re.findall(r'darkbloom_prefix_routes_total\{model="[^"]+",outcome="(\w+)"\} ([\d.e+]+)', metrics_text)
    return {outcome: float(value) for outcome, value in found}


async def one_run(args: argparse.Namespace, prefix_routing: bool) -> dict:
    settings = CoordinatorSettings(prefix_routing=prefix_routing, queue_max_wait_s=600)
    async with running(build_app(Accounts.open(), settings)) as server:
        sizes = fleet_memory_gb(args.agents)
        agents = [await SimAgent(server.ws_url, memory_gb=sizes[i], preload=(GPT_OSS,), time_scale=args.time_scale)
                  .start() for i in range(args.agents)]
        router = server.coordinator.router
        while not (len(router.registry) == args.agents and all(p.heartbeat for p in router.registry)):
            await asyncio.sleep(0.1)
        ratios, ttfts, errors, done = [], [], [], asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                if (ratio := load_ratio(router)) is not None:
                    ratios.append(ratio)
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        limits = httpx.Limits(max_connections=args.conversations + 10)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=600, limits=limits) as client:
            await asyncio.gather(*(conversation(client, i, args.turns, ttfts, errors)
                                   for i in range(args.conversations)))
        done.set()
        await sampler
        counted = routes(server.coordinator.metrics.render().decode())
        for agent in agents:
            await agent.stop()
    later = counted.get("held", 0) + counted.get("elsewhere", 0)
    scaled = sorted(t / args.time_scale for t in ttfts)
    return {"prefix_routing": prefix_routing, "later_turns": int(later),
            "landed_on_prefix_pct": round(100 * counted.get("held", 0) / later, 1) if later else None,
            "busiest_over_mean_rows": round(statistics.mean(ratios), 2) if ratios else None,
            "ttft_p50_s": round(scaled[len(scaled) // 2], 2), "ttft_p95_s": round(scaled[int(len(scaled) * 0.95)], 2),
            "num_ttfts": len(scaled), "num_errors": len(errors), "errors": sorted(set(errors))[:5]}


async def measure(args: argparse.Namespace) -> dict:
    return {"with": await one_run(args, True), "without": await one_run(args, False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help=f"also write {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--agents", type=int, default=60)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--time-scale", type=float, default=0.05)
    args = parser.parse_args()
    configure_logging("auto", "error", stream=sys.stderr)
    result = asyncio.run(measure(args))
    result = {"command": (f"python scripts/bench_prefix_routing.py --json --agents {args.agents} --conversations "
                          f"{args.conversations} --turns {args.turns} --time-scale {args.time_scale}"),
              "agents": args.agents, "conversations": args.conversations, "turns": args.turns,
              "max_tokens": MAX_TOKENS, "time_scale": args.time_scale, **result}
    print(json.dumps(result, indent=2))
    if args.json:
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
