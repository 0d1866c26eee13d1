"""What a dialect's translation costs beside chat completions: the same request, asked round-robin in each
dialect through the real coordinator and one simulated agent on loopback (scripted timing, no MLX), so the
difference is the coordinator's translation and writing. Reports the median request time per dialect and its
ratio to chat completions, streamed and not, and the pure translation time of a 20-turn history.

    python scripts/bench_dialects.py [--requests 200] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.coordinator.core import Coordinator  # noqa: E402
from agent.coordinator.billing.accounts import Accounts  # noqa: E402
from agent.coordinator.dialects import messages_request, responses_request  # noqa: E402
from agent.coordinator.dialects.strict_body import checked, validated  # noqa: E402
from agent.coordinator.http.app import build_app, running  # noqa: E402
from agent.coordinator.settings import CoordinatorSettings  # noqa: E402
from agent.testing.fleet.agent import SimAgent  # noqa: E402
from agent.testing.fleet.profiles import GPT_OSS  # noqa: E402

MAX_TOKENS = 32
BEARER = {"Authorization": "Bearer local"}


def bodies(stream: bool) -> dict[str, tuple[dict, dict]]:
    question = [{"role": "user", "content": "Say hello."}]
    return {
        "chat": ("/v1/chat/completions", {"model": GPT_OSS, "messages": question, "max_tokens": MAX_TOKENS,
                                          "stream": stream}, BEARER),
        "responses": ("/v1/responses", {"model": GPT_OSS, "input": "Say hello.", "max_output_tokens": MAX_TOKENS,
                                        "stream": stream}, BEARER),
        "messages": ("/v1/messages", {"model": GPT_OSS, "messages": question, "max_tokens": MAX_TOKENS,
                                      "stream": stream}, {"x-api-key": "local"}),
        "completions": ("/v1/completions", {"model": GPT_OSS, "prompt": "Say hello.", "max_tokens": MAX_TOKENS,
                                            "stream": stream}, BEARER),
    }


async def request_times(base_url: str, num_requests: int, stream: bool) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in bodies(stream)}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        for _ in range(num_requests):
            for name, (path, body, headers) in bodies(stream).items():  # round-robin: the same load for each
                started = time.perf_counter()
                response = await http.post(path, json=body, headers=headers)
                response.raise_for_status()
                times[name].append(time.perf_counter() - started)
    return times


def translation_us(num_repeats: int = 2000) -> dict[str, float]:
    """A 20-turn history (10 user, 10 assistant) translated and checked, per dialect, in microseconds."""
    coordinator = Coordinator(Accounts.open(), CoordinatorSettings(), catalog={})
    coordinator.known_models = lambda: [GPT_OSS]  # translation only: no provider, no routing
    coordinator.router.registry.num_providers = lambda model: 1
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " * 20} for i in range(20)]
    raw = {"chat": {"model": GPT_OSS, "messages": turns},
           "responses": {"model": GPT_OSS, "input": turns},
           "messages": {"model": GPT_OSS, "max_tokens": 64, "messages": turns}}
    steps = {"chat": lambda: coordinator.validate(raw["chat"]),
             "responses": lambda: checked(coordinator, responses_request.to_chat(
                 validated(responses_request.ResponsesBody, raw["responses"])), "Responses"),
             "messages": lambda: checked(coordinator, messages_request.to_chat(
                 validated(messages_request.MessagesBody, raw["messages"])), "Messages")}
    out = {}
    for name, step in steps.items():
        started = time.perf_counter()
        for _ in range(num_repeats):
            step()
        out[name] = round((time.perf_counter() - started) / num_repeats * 1e6, 1)
    return out


async def main(num_requests: int) -> dict:
    settings = CoordinatorSettings(heartbeat_interval_s=0.2, missed_heartbeats=10)
    async with running(build_app(Accounts.open(), settings)) as server:
        agent = await SimAgent(server.ws_url, memory_gb=128, preload=(GPT_OSS,), time_scale=0.0005).start()
        while not server.coordinator.router.registry.offers(GPT_OSS):
            await asyncio.sleep(0.01)
        try:
            await request_times(server.base_url, 5, stream=False)  # warm-up
            result = {}
            for stream in (False, True):
                times = await request_times(server.base_url, num_requests, stream)
                medians = {name: statistics.median(ts) * 1000 for name, ts in times.items()}
                result["streamed" if stream else "whole"] = {
                    name: {"median_ms": round(ms, 2), "vs_chat": round(ms / medians["chat"], 3)}
                    for name, ms in medians.items()}
        finally:
            await agent.stop()
    return {"requests_per_dialect": num_requests, "max_tokens": MAX_TOKENS, **result,
            "translation_us_20_turns": translation_us()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # warnings and errors only
    report = asyncio.run(main(args.requests))
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
