"""What a dialect's translation costs beside chat completions: the same request, asked round-robin in each
dialect through the real coordinator and one simulated agent on loopback (scripted timing, no MLX), so the
difference is the coordinator's translation and writing. Reports the median request time per dialect and its
ratio to chat completions, streamed and not, the pure translation time of a 20-turn history, and per streamed
token, how many body writes the coordinator made and how many SSE events it wrote (counted by an ASGI wrapper
around the app; the simulated agent runs fast, so several tokens often arrive in one read and are merged).

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


class WriteCounter:
    """ASGI middleware: each path's non-empty response body writes, and the SSE events in them."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]

        async def counted(message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                WRITES[path] = WRITES.get(path, 0) + 1
                EVENTS[path] = EVENTS.get(path, 0) + message["body"].count(b"\n\n")
            await send(message)

        await self.app(scope, receive, counted)


WRITES: dict[str, int] = {}
EVENTS: dict[str, int] = {}


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


async def completion_tokens(base_url: str) -> int:
    """The tokens one request streams (every dialect asks for the same: MAX_TOKENS of the simulated agent)."""
    path, body, headers = bodies(False)["chat"]
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        response = await http.post(path, json=body, headers=headers)
    return response.json()["usage"]["completion_tokens"]


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
    app = build_app(Accounts.open(), settings)
    app.add_middleware(WriteCounter)
    async with running(app) as server:
        agent = await SimAgent(server.ws_url, memory_gb=128, preload=(GPT_OSS,), time_scale=0.0005).start()
        while not server.coordinator.router.registry.offers(GPT_OSS):
            await asyncio.sleep(0.01)
        try:
            await request_times(server.base_url, 5, stream=False)  # warm-up
            result = {}
            for stream in (False, True):
                WRITES.clear()
                EVENTS.clear()
                times = await request_times(server.base_url, num_requests, stream)
                medians = {name: statistics.median(ts) * 1000 for name, ts in times.items()}
                result["streamed" if stream else "whole"] = {
                    name: {"median_ms": round(ms, 2), "vs_chat": round(ms / medians["chat"], 3)}
                    for name, ms in medians.items()}
            writes, events = dict(WRITES), dict(EVENTS)  # of the streamed round
            tokens = await completion_tokens(server.base_url)
            result["per_streamed_token"] = {
                name: {"writes": round(writes.get(path, 0) / (num_requests * tokens), 3),
                       "sse_events": round(events.get(path, 0) / (num_requests * tokens), 3)}
                for name, (path, _, _) in bodies(True).items()}
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
