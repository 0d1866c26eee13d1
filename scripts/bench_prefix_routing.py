"""Routing by prefix on the simulated fleet: how many of a conversation's later turns land on a provider
holding their prefix, how even the rows stay, what the prefix cache saves, with prefix routing and without.

    python scripts/bench_prefix_routing.py [--json] [--agents 60] [--conversations 200] [--turns 4]
                                           [--time-scale 2.0] [--user-tokens 200] [--think-s 2] [--ramp-s 10]

The real coordinator (open mode) and `--agents` simulated agents (agent.testing.fleet: real agent code,
links and admission, the fake engine with Mac-like timings and its simulated prefix cache) run in this
process, the run starting once every slot that can load gpt-oss is warm. `--conversations` conversations run
concurrently (their starts spread over `--ramp-s`, a think time of up to `--think-s` between turns, both
simulated seconds), each turn sending its whole history: a shared system prompt, then per turn a user
message of about `--user-tokens` tokens and the previous answer, so later turns carry a few hundred to a
couple of thousand prompt tokens, growing each turn.

Measured per run, over the turns after the first (from each streamed response's usage, `stream_options`
include_usage):
  landed_on_prefix_pct   turns whose usage shows cached tokens: they ran on a provider holding their prefix
  routed_to_holder_pct   the coordinator's own count (darkbloom_prefix_routes: held ÷ (held + elsewhere))
  cached_token_share     cached_tokens ÷ prompt_tokens
  ttft p50 / p95         client-side, streamed, in simulated seconds (first turns reported apart)
Load, rows held per provider (running + waiting on its gpt-oss slot, read from the agents' engines every
100 ms while rows are in flight; mean over the warm slots):
  busiest_over_mean_rows         the busiest provider's time-averaged rows ÷ the mean of all providers'
  busiest_over_mean_rows_now     the same at each sample, averaged over samples (an instantaneous max of
                                 60 counts averaging ~3 is high even for a balanced placement)
And the process: CPU seconds ÷ wall seconds of the run, and how late the event loop (which runs the
coordinator, the agents and the clients) woke a 100 ms sleep, p50 / p95: near 1.0 and a lag of tens of ms
mean the process was saturated, simulated time ran late and TTFT measured the lag, not the fleet.
Results go to scripts/results/prefix_routing.json with --json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
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
WORDS = ("data", "model", "route", "cache", "token", "prefix", "batch", "query", "answer", "history", "agent", "mac")


def user_message(conversation: int, turn: int, tokens: int) -> dict:
    """About `tokens` tokens (the fake counts 4 + characters ÷ 4), different per conversation and turn."""
    rng = random.Random(conversation * 1000 + turn)
    words = [rng.choice(WORDS) for _ in range(max(1, (tokens - 4) * 4 // 6))]
    return {"role": "user", "content": f"Conversation {conversation}, question {turn}: " + " ".join(words)}


async def turn(client: httpx.AsyncClient, history: list[dict]) -> tuple[float | None, str, dict]:
    started, ttft, text, usage = time.perf_counter(), None, [], {}
    body = {"model": GPT_OSS, "messages": history, "max_tokens": MAX_TOKENS, "stream": True,
            "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices", []):
                piece = choice["delta"].get("content") or ""
                if piece and ttft is None:
                    ttft = time.perf_counter() - started
                text.append(piece)
    return ttft, "".join(text), usage


async def conversation(client: httpx.AsyncClient, index: int, args: argparse.Namespace, turns: list[dict],
                       errors: list[str]) -> None:
    rng = random.Random(index)
    await asyncio.sleep(rng.uniform(0, args.ramp_s) * args.time_scale)
    history = [{"role": "system", "content": "You are a helpful assistant. Answer briefly and precisely."}]
    for k in range(args.turns):
        history.append(user_message(index, k, args.user_tokens))
        try:
            ttft, text, usage = await turn(client, history)
        except (httpx.HTTPError, RuntimeError) as exc:  # counted, and the conversation ends
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
            return
        turns.append({"turn": k, "ttft": ttft, "prompt_tokens": usage.get("prompt_tokens", 0),
                      "cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)})
        history.append({"role": "assistant", "content": text or "ok"})
        await asyncio.sleep(rng.uniform(0, args.think_s) * args.time_scale)


def rows_now(agents: list[SimAgent]) -> dict[int, int]:
    """Rows each warm gpt-oss slot holds (running + waiting), as its engine says, by the agent's memory (GB)
    and place: {(memory_gb, index): rows}."""
    rows = {}
    for index, agent in enumerate(agents):
        slot = next((s for s in agent.engine.snapshot().slots if s.model == GPT_OSS), None)
        if slot is not None and slot.kv_budget_bytes > 0:
            rows[(agent.memory_gb, index)] = slot.num_running + slot.num_waiting
    return rows


def routes(metrics_text: str) -> dict[str, float]:
    found = re.findall(r'darkbloom_prefix_routes_total\{model="[^"]+",outcome="(\w+)"\} ([\d.e+]+)', metrics_text)
    return {outcome: float(value) for outcome, value in found}


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 2) if ordered else None


def percentile_ms(values: list[float], q: float) -> float | None:
    return percentile([1000 * v for v in values], q)


async def warm_fleet(server, args: argparse.Namespace) -> list[SimAgent]:
    sizes = fleet_memory_gb(args.agents)
    agents = [await SimAgent(server.ws_url, memory_gb=sizes[i], preload=(GPT_OSS,), time_scale=args.time_scale)
              .start() for i in range(args.agents)]
    router = server.coordinator.router
    while True:  # every agent registered and every preload settled (loaded, or refused by its gate)
        await asyncio.sleep(0.2)
        settled = all(a.engine.snapshot().slot(GPT_OSS).state.value in ("idle", "cold", "failed") for a in agents)
        warm = sum(1 for _, o in router.registry.offers(GPT_OSS) if o.is_warm)
        loaded = sum(1 for a in agents if a.engine.snapshot().slot(GPT_OSS).kv_budget_bytes > 0)
        if settled and len(router.registry) == args.agents and warm == loaded:
            return agents


async def one_run(args: argparse.Namespace, prefix_routing: bool) -> dict:
    settings = CoordinatorSettings(prefix_routing=prefix_routing, queue_max_wait_s=600,
                                   prefix_affinity_slack_rows=args.slack_rows, prefix_affinity_max_load=args.max_load)
    async with running(build_app(Accounts.open(), settings)) as server:
        agents = await warm_fleet(server, args)
        samples: list[dict[tuple[int, int], int]] = []
        lags: list[float] = []
        turns: list[dict] = []
        errors: list[str] = []
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                rows = rows_now(agents)
                if sum(rows.values()):
                    samples.append(rows)
                asleep = time.perf_counter()
                await asyncio.sleep(0.1)
                lags.append(time.perf_counter() - asleep - 0.1)  # how late the event loop woke us

        cpu, wall = time.process_time(), time.perf_counter()
        sampler = asyncio.create_task(sample())
        limits = httpx.Limits(max_connections=args.conversations + 10)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=600, limits=limits) as client:
            await asyncio.gather(*(conversation(client, i, args, turns, errors) for i in range(args.conversations)))
        done.set()
        await sampler
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        counted = routes(server.coordinator.metrics.render().decode())
        for agent in agents:
            await agent.stop()
    return summarize(args, prefix_routing, turns, samples, counted, errors, (cpu, wall, lags))


def summarize(args, prefix_routing: bool, turns: list[dict], samples: list[dict], counted: dict[str, float],
              errors: list[str], process: tuple[float, float, list[float]]) -> dict:
    cpu, wall, lags = process
    later = [t for t in turns if t["turn"] > 0]
    firsts = [t for t in turns if t["turn"] == 0]
    routed = counted.get("held", 0) + counted.get("elsewhere", 0)
    prompt = sum(t["prompt_tokens"] for t in later)

    def ttfts(group: list[dict]) -> list[float]:
        return [t["ttft"] / args.time_scale for t in group if t["ttft"] is not None]

    places = sorted(samples[0]) if samples else []
    by_place = {place: statistics.mean(sample[place] for sample in samples) for place in places}
    averages = list(by_place.values())
    by_memory = {gb: round(statistics.mean(v for (g, _), v in by_place.items() if g == gb), 2)
                 for gb in sorted({g for g, _ in places})}
    samples = [list(sample.values()) for sample in samples]
    return {
        "prefix_routing": prefix_routing, "later_turns": len(later), "warm_providers": len(averages),
        "landed_on_prefix_pct": round(100 * sum(1 for t in later if t["cached_tokens"]) / len(later), 1) if later else None,
        "routed_to_holder_pct": round(100 * counted.get("held", 0) / routed, 1) if routed else None,
        "cached_token_share": round(sum(t["cached_tokens"] for t in later) / prompt, 3) if prompt else None,
        "mean_prompt_tokens_later": round(prompt / len(later)) if later else None,
        "busiest_over_mean_rows": round(max(averages) / statistics.mean(averages), 2) if averages else None,
        "busiest_over_mean_rows_now": round(statistics.mean(max(s) / statistics.mean(s) for s in samples), 2)
        if samples else None,
        "mean_rows_per_provider": round(statistics.mean(averages), 2) if averages else None,
        "mean_rows_by_memory_gb": by_memory,
        "ttft_p50_s": percentile(ttfts(later), 0.5), "ttft_p95_s": percentile(ttfts(later), 0.95),
        "first_turn_ttft_p50_s": percentile(ttfts(firsts), 0.5), "first_turn_ttft_p95_s": percentile(ttfts(firsts), 0.95),
        "process_cpu_over_wall": round(cpu / wall, 2), "wall_s": round(wall, 1),
        "loop_lag_p50_ms": round(1000 * statistics.median(lags), 1), "loop_lag_p95_ms": percentile_ms(lags, 0.95),
        "num_errors": len(errors), "errors": sorted(set(errors))[:5],
    }


async def measure(args: argparse.Namespace) -> dict:
    modes = {"with": True, "without": False}
    return {name: await one_run(args, modes[name]) for name in args.modes.split(",")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help=f"also write {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--agents", type=int, default=60)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--time-scale", type=float, default=2.0)
    parser.add_argument("--user-tokens", type=int, default=200)
    parser.add_argument("--think-s", type=float, default=2.0)
    parser.add_argument("--ramp-s", type=float, default=10.0)
    defaults = CoordinatorSettings()
    parser.add_argument("--slack-rows", type=int, default=defaults.prefix_affinity_slack_rows)
    parser.add_argument("--max-load", type=float, default=defaults.prefix_affinity_max_load)
    parser.add_argument("--modes", default="with,without", help="with prefix routing, without, or both (the report needs both)")
    args = parser.parse_args()
    configure_logging("auto", "error", stream=sys.stderr)
    result = asyncio.run(measure(args))
    result = {"command": (f"python scripts/bench_prefix_routing.py --json --agents {args.agents} --conversations "
                          f"{args.conversations} --turns {args.turns} --time-scale {args.time_scale} --user-tokens "
                          f"{args.user_tokens} --think-s {args.think_s} --ramp-s {args.ramp_s} --slack-rows "
                          f"{args.slack_rows} --max-load {args.max_load}"),
              "agents": args.agents, "conversations": args.conversations, "turns": args.turns,
              "max_tokens": MAX_TOKENS, "time_scale": args.time_scale, "user_tokens": args.user_tokens,
              "think_s": args.think_s, "ramp_s": args.ramp_s, "prefix_affinity_slack_rows": args.slack_rows,
              "prefix_affinity_max_load": args.max_load, **result}
    print(json.dumps(result, indent=2))
    if args.json:
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
