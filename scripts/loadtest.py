"""An external OpenAI-compatible load test (httpx; a base URL and ONE key, nothing else).

    python scripts/loadtest.py --base-url http://127.0.0.1:8000/v1 --key KEY --time-scale 0.5 \
        [--matrix full|quick] [--sustained-s 240] [--out scripts/results/loadtest.json]

Burst matrix (gpt-oss-20b): max_tokens × concurrency = 512 × 8/16/32/64, 4096 × 8/16/32, 32768 × 4/8/16,
each cell `--rounds` requests per worker, on top of background loops (gpt-oss short, gemma long) from
the same key. Then a sustained mixed run (gpt-oss short + gemma long) sampling /v1/models/capacity
every 3 s. Times are reported in SIMULATED seconds (real ÷ time_scale), tok/s in simulated tok/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadtest_support import Tally, capacity_row, median, pct  # noqa: E402

from agent.testing.fleet.sse import stream_chat  # noqa: E402

GPT, GEMMA = "gpt-oss-20b", "gemma-4-26b"
FULL = [(512, 8), (512, 16), (512, 32), (512, 64), (4096, 8), (4096, 16), (4096, 32),
        (32768, 4), (32768, 8), (32768, 16)]
QUICK = [(512, 8), (4096, 8), (32768, 4)]
LONG_PROMPT = "Summarise the following design notes carefully. " + "lorem ipsum dolor sit amet " * 300  # ~2k tokens


def body(model: str, max_tokens: int, n: int, long: bool = False) -> dict:
    text = (LONG_PROMPT if long else "Explain briefly, request ") + str(n)
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.n = args, 0
        root = args.base_url.rstrip("/").removesuffix("/v1")
        self.http = httpx.AsyncClient(base_url=root, timeout=httpx.Timeout(900, connect=10),
                                      limits=httpx.Limits(max_connections=400))

    def next_n(self) -> int:
        self.n += 1
        return self.n

    async def one(self, tally: Tally, model: str, max_tokens: int, long: bool = False, log: list | None = None):
        started = time.monotonic()
        result = await stream_chat(self.http, body(model, max_tokens, self.next_n(), long), key=self.args.key)
        tally.add(result)
        if log is not None:
            log.append({"t": started, "model": model, "ttft_s": result.ttft_s, "status": result.status,
                        "class": tally.results[-1][1], "tokens": result.num_chunks})
        if result.status == 429 and result.retry_after:  # a well-behaved client honours Retry-After
            await asyncio.sleep(min(float(result.retry_after), 5))

    async def loop(self, tally: Tally, stop: asyncio.Event, model: str, max_tokens: int, long: bool = False,
                   log: list | None = None) -> None:
        while not stop.is_set():
            await self.one(tally, model, max_tokens, long, log)

    async def cell(self, max_tokens: int, concurrency: int) -> dict:
        tally, started = Tally(), time.monotonic()

        async def worker() -> None:
            for _ in range(self.args.rounds):
                await self.one(tally, GPT, max_tokens)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        summary = tally.summary(time.monotonic() - started, self.args.time_scale)
        summary["capacity_after"] = capacity_row(await self.capacity())
        return {"max_tokens": max_tokens, "concurrency": concurrency, **summary}

    async def capacity(self) -> dict:
        response = await self.http.get("/v1/models/capacity", headers={"Authorization": f"Bearer {self.args.key}"})
        return response.json()

    async def matrix(self, cells: list[tuple[int, int]]) -> dict:
        stop, background = asyncio.Event(), Tally()
        loops = [asyncio.create_task(self.loop(background, stop, GPT, 256)) for _ in range(2)]
        loops += [asyncio.create_task(self.loop(background, stop, GEMMA, 2048, long=True)) for _ in range(2)]
        rows = []
        for max_tokens, concurrency in cells:
            row = await self.cell(max_tokens, concurrency)
            print(json.dumps({k: row[k] for k in ("max_tokens", "concurrency", "requests", "error_pct", "classes",
                                                  "ttft_p50_s", "ttft_p95_s", "cluster_tok_s")}), flush=True)
            rows.append(row)
        stop.set()
        await asyncio.gather(*loops)
        return {"cells": rows, "background": background.summary(1.0, self.args.time_scale)}

    async def sustained(self, seconds: float) -> dict:
        stop, gpt, gemma, log, samples = asyncio.Event(), Tally(), Tally(), [], []
        t0 = time.monotonic()
        loops = [asyncio.create_task(self.loop(gpt, stop, GPT, 512, log=log)) for _ in range(self.args.gpt_workers)]
        loops += [asyncio.create_task(self.loop(gemma, stop, GEMMA, 8192, long=True, log=log))
                  for _ in range(self.args.gemma_workers)]
        while time.monotonic() - t0 < seconds:
            samples.append({"t": time.monotonic() - t0, **capacity_row(await self.capacity())})
            await asyncio.sleep(3)
        stop.set()
        await asyncio.gather(*loops)
        wall = time.monotonic() - t0
        for entry in log:
            entry["t"] -= t0
        out = {"seconds": wall, "samples": samples, "requests": log,
               "gpt": gpt.summary(wall, self.args.time_scale), "gemma": gemma.summary(wall, self.args.time_scale)}
        for model in (GPT, GEMMA):
            warm = [s[model]["warm"] for s in samples if model in s]
            out[f"{model}_warm"] = {"median": median(warm), "min": min(warm, default=None),
                                    "max": max(warm, default=None)}
            ttfts = [e["ttft_s"] / self.args.time_scale for e in log if e["model"] == model and e["ttft_s"]]
            out[f"{model}_ttft"] = {"p50": pct(ttfts, 0.5), "p95": pct(ttfts, 0.95)}
        return out


async def main(args: argparse.Namespace) -> None:
    runner = Runner(args)
    out: dict = {"args": vars(args) | {"key": "<redacted>"}, "started": time.time()}
    if args.matrix != "none":
        out["matrix"] = await runner.matrix(FULL if args.matrix == "full" else QUICK)
    if args.sustained_s > 0:
        out["sustained"] = await runner.sustained(args.sustained_s)
        s = out["sustained"]
        print(json.dumps({k: v for k, v in s.items() if k.endswith(("_warm", "_ttft"))}), flush=True)
    await runner.http.aclose()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="burst matrix + sustained run against an OpenAI-compatible API")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--time-scale", type=float, default=0.5, help="the fleet's; converts times to simulated")
    parser.add_argument("--matrix", choices=("full", "quick", "none"), default="full")
    parser.add_argument("--rounds", type=int, default=3, help="requests per worker per cell")
    parser.add_argument("--sustained-s", type=float, default=180, help="real seconds (0: skip)")
    parser.add_argument("--gpt-workers", type=int, default=24)
    parser.add_argument("--gemma-workers", type=int, default=16)
    parser.add_argument("--out", default="scripts/results/loadtest.json")
    asyncio.run(main(parser.parse_args()))
