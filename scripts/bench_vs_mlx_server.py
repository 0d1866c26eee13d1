#!/usr/bin/env python3
"""Side by side with mlx-lm's own server: the same tiny model, the same prompts, the same load.

    scripts/bench_vs_mlx_server.py [--model gpt-oss-tiny] [--concurrency 8] [--max-tokens 128] [--rounds 3]
                                   [--json]

One after the other in one run: `python -m mlx_lm.server --model DIR` (what a Mac owner would run), then
our coordinator + one agent serving DIR (`darkbloom-agent coordinator`, `darkbloom-agent start --model
DIR`), each through the same client (httpx, here). Each phase: a warm-up request, then `--rounds`
rounds of `--concurrency` concurrent greedy (temperature 0) chat completions, non-streaming, then the
same streaming; every request has its own prompt (so mlx_lm.server's prompt cache cannot serve one from
another) and both servers get the same prompts. Reported per phase and mode: aggregate completion tok/s
(usage.completion_tokens of the round ÷ its wall time, median of rounds) and TTFT p50 (streaming: the
first event with text; non-streaming: the whole response). The model is a random-weight tiny model on
this CPU, so the figures compare the serving stacks, not a Mac.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLI = str(Path(sys.executable).parent / "darkbloom-agent")
READY_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_dir(name: str) -> Path:
    from agent.testing.tiny_models import is_up_to_date, write_tiny_model

    root = Path(os.environ.get("DARKBLOOM_TINY_MODELS") or ROOT / ".cache" / "tiny-models")
    if not is_up_to_date(root / name, name):
        write_tiny_model(name, root)
    return root / name


def wait_for(url: str, ready, processes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise SystemExit(f"{process.args[:3]} exited with {process.returncode}")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200 and ready(response.json()):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} was not ready within {READY_TIMEOUT_S} s")


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


# ---- the load -------------------------------------------------------------------------------------

def prompt(round_: int, i: int, stream: bool) -> list[dict]:
    return [{"role": "user", "content": f"Request {i} of round {round_} ({'stream' if stream else 'whole'}): "
                                        "write a short story about a lighthouse keeper."}]


async def one(http: httpx.AsyncClient, model: str, messages: list[dict], max_tokens: int,
              stream: bool) -> tuple[int, float]:
    """(completion tokens, first-token seconds: the whole response when not streaming)."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0, "stream": stream}
    started = time.perf_counter()
    if not stream:
        response = await http.post("/v1/chat/completions", json=body)
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"], time.perf_counter() - started
    body["stream_options"] = {"include_usage": True}
    first, tokens = None, 0
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices") or ():
                delta = choice.get("delta") or {}
                if first is None and any(delta.get(k) for k in ("content", "reasoning", "reasoning_content")):
                    first = time.perf_counter() - started
    return tokens, first if first is not None else time.perf_counter() - started


async def load(base_url: str, model: str, concurrency: int, max_tokens: int, rounds: int) -> dict:
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    results = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as http:
        await one(http, model, prompt(-1, 0, False), max_tokens, False)  # warm-up: compile, caches
        for stream in (False, True):
            rates, ttfts, tokens = [], [], 0
            for r in range(rounds):
                started = time.perf_counter()
                done = await asyncio.gather(*(one(http, model, prompt(r, i, stream), max_tokens, stream)
                                              for i in range(concurrency)))
                elapsed = time.perf_counter() - started
                round_tokens = sum(n for n, _ in done)
                rates.append(round_tokens / elapsed)
                ttfts += [t for _, t in done]
                tokens += round_tokens
            results["streaming" if stream else "non_streaming"] = {
                "tok_s": round(statistics.median(rates), 1), "ttft_p50_ms": round(statistics.median(ttfts) * 1000, 1),
                "completion_tokens": tokens}
    return results


# ---- the two servers ------------------------------------------------------------------------------

def run_mlx_server(directory: Path, args) -> dict:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlx_lm.server", "--model", str(directory), "--port", str(port),
                               "--log-level", "WARNING"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", lambda data: True, [server])
        return asyncio.run(load(f"http://127.0.0.1:{port}", str(directory), args.concurrency, args.max_tokens,
                                args.rounds))
    finally:
        stop([server])


def run_ours(directory: Path, args) -> dict:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DARKBLOOM_STATUS_PATH": str(ROOT / ".cache" / "bench-vs-mlx-status.json"),
           "DARKBLOOM_LOG_LEVEL": "warning"}
    coordinator = subprocess.Popen([CLI, "coordinator", "--port", str(port), "--log-level", "warning"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agent = subprocess.Popen([CLI, "start", "--coordinator", f"ws://127.0.0.1:{port}/ws/provider", "--token", "local",
                              "--model", str(directory)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def warm(report: dict) -> bool:
            return any(row["model"] == args.model and row["providers"]["idle"] + row["providers"]["running"]
                       for row in report["data"])
        wait_for(f"{base_url}/v1/models/capacity", warm, [coordinator, agent])
        return asyncio.run(load(base_url, args.model, args.concurrency, args.max_tokens, args.rounds))
    finally:
        stop([agent, coordinator])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt-oss-tiny", help="a tiny model (agent/testing/tiny_models.py)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    directory = model_dir(args.model)
    mlx = run_mlx_server(directory, args)
    ours = run_ours(directory, args)
    ratios = {mode: {"tok_s": round(ours[mode]["tok_s"] / mlx[mode]["tok_s"], 3),
                     "ttft_p50": round(ours[mode]["ttft_p50_ms"] / mlx[mode]["ttft_p50_ms"], 3)} for mode in mlx}
    result = {"model": args.model, "concurrency": args.concurrency, "max_tokens": args.max_tokens,
              "rounds": args.rounds, "mlx_lm_server": mlx, "ours": ours, "ours_vs_mlx_lm_server": ratios}
    print(json.dumps(result, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
