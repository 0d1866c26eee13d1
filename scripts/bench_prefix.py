"""What the prefix cache saves: a 10-turn conversation's time to first token with the cache ÷ without, one run.

    python scripts/bench_prefix.py [--json] [--variant gpt-oss-tiny-wide] [--turns 10] [--turn-tokens 200]
                                   [--repeats 3]

Two engines on the same tiny model at the real attention widths (where prefill dominates), one with the
prefix cache and one without, take the same chat conversation turn by turn, alternating (turn k with the
cache, then turn k without), so a shared machine's load falls on both alike. Each turn adds a user
message that grows the prompt by about `--turn-tokens` tokens (the assistant's short greedy replies are
part of the history; both engines' replies are checked equal, as text). TTFT is submit → first
generated token on the engine. Per turn the ratio is the median over `--repeats` conversations, each
with its own opening words. Results go to scripts/results/prefix.json with --json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout
sys.path.insert(0, str(ROOT / "scripts"))

import structlog  # noqa: E402
from bench_engine import models_dir, say  # noqa: E402

from agent.engine import Delta, GenerationRequest, MLXEngine  # noqa: E402
from agent.engine.core import EngineConfig  # noqa: E402

RESULTS = ROOT / "scripts" / "results" / "prefix.json"
WORDS = (" the", " a", " sea", " one", " of", " and", " to", " in")
REPLY_TOKENS = 4


def user_text(turn: int, repeat: int, num_words: int) -> str:
    return f"Turn {turn} of talk {repeat}:" + "".join(WORDS[(turn * 3 + repeat + i) % len(WORDS)]
                                                      for i in range(num_words))


async def one_turn(engine: MLXEngine, model: str, request_id: str, history: list[dict]):
    """TTFT (s), the reply, and its usage."""
    request = GenerationRequest(request_id, model, tuple(history), temperature=0.0, max_tokens=REPLY_TOKENS,
                                ignore_eos=True)
    started = time.perf_counter()
    stream = await engine.submit(request)
    ttft, content = None, []
    async for event in stream:
        if isinstance(event, Delta):
            if ttft is None and event.num_tokens:
                ttft = time.perf_counter() - started
            content.append(event.content)
        else:
            return ttft, "".join(content), event.usage


async def conversation(engines: dict[str, MLXEngine], model: str, repeat: int, turns: int, words: int) -> list[dict]:
    histories = {name: [] for name in engines}
    rows = []
    for turn in range(1, turns + 1):
        row: dict = {"turn": turn}
        replies = {}
        for name, engine in engines.items():
            histories[name].append({"role": "user", "content": user_text(turn, repeat, words)})
            ttft, reply, usage = await one_turn(engine, model, f"{name}-{repeat}-{turn}", histories[name])
            histories[name].append({"role": "assistant", "content": reply or "ok"})
            row[name] = {"ttft_s": ttft, "prompt_tokens": usage.prompt_tokens, "cached_tokens": usage.cached_tokens}
            replies[name] = reply
        if len(set(replies.values())) != 1:
            raise SystemExit(f"turn {turn}: the cached engine's reply differs from the uncached one's: {replies}")
        rows.append(row)
    return rows


async def measure(model: str, turns: int, turn_tokens: int, repeats: int) -> dict:
    root = models_dir()
    configs = {"cached": EngineConfig(), "uncached": EngineConfig(max_prefix_cache_bytes=0)}
    engines = {name: MLXEngine({model: root / model}, config=config) for name, config in configs.items()}
    for engine in engines.values():
        await engine.start()
        await engine.load(model)
    words = turn_tokens - 50  # the turn label, the template's turn markers and the short reply make up the rest
    try:
        await conversation(engines, model, -1, 2, words)  # warm-up: both engines compile their shapes
        talks = [await conversation(engines, model, repeat, turns, words) for repeat in range(repeats)]
    finally:
        for engine in engines.values():
            await engine.stop()
    per_turn = []
    for index in range(turns):
        rows = [talk[index] for talk in talks]
        ratios = [r["cached"]["ttft_s"] / r["uncached"]["ttft_s"] for r in rows]
        per_turn.append({
            "turn": index + 1, "prompt_tokens": rows[0]["cached"]["prompt_tokens"],
            "cached_tokens": rows[0]["cached"]["cached_tokens"],
            "ttft_cached_ms": round(1000 * statistics.median(r["cached"]["ttft_s"] for r in rows), 1),
            "ttft_uncached_ms": round(1000 * statistics.median(r["uncached"]["ttft_s"] for r in rows), 1),
            "ratio": round(statistics.median(ratios), 3),
        })
    return {"variant": model, "turns": turns, "turn_tokens": turn_tokens, "repeats": repeats,
            "reply_tokens": REPLY_TOKENS, "per_turn": per_turn, "ratio_turn_last": per_turn[-1]["ratio"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help=f"also write {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--variant", default="gpt-oss-tiny-wide")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--turn-tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # warnings and errors only
    load_before = os.getloadavg()[0]
    say(f"{args.turns} turns on {args.variant}, with and without the prefix cache ...")
    result = asyncio.run(measure(args.variant, args.turns, args.turn_tokens, args.repeats))
    command = (f"python scripts/bench_prefix.py --json --variant {args.variant} --turns {args.turns} "
               f"--turn-tokens {args.turn_tokens} --repeats {args.repeats}")
    result = {"command": command, **result,
              "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)]}  # a shared machine skews it
    print(json.dumps(result, indent=2))
    if args.json:
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
