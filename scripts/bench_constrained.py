"""What constrained decoding costs: 8 streams all under a JSON schema ÷ 8 streams unconstrained, one run.

    python scripts/bench_constrained.py [--json] [--variant gpt-oss-tiny] [--streams 8] [--max-tokens 128] [--repeats 3]

(about a minute on a 2-core CPU.) Both halves sample (temperature 1, one seed per stream) the same chat
prompts on the narrow tiny model, alternating unconstrained and constrained runs; each run's aggregate
tok/s is generated tokens ÷ wall time from the first submit to the last token (prefill included). The
unconstrained rows ignore eos, and the constrained rows' schema (an object holding an array of at least 256
strings) cannot close within max_tokens, so both make the same number of tokens (checked: the run stops if
not; an earlier version let random weights close `{"items":[]}` early, so a quarter of the constrained
rows' tokens were never made and the ratio measured that, not the masks). The ratio is the median of the
paired ratios (the 1-minute load average before and after is recorded: on a shared machine the constrained
rows' extra CPU work is what suffers first); the mask time is a step's time on the MLX thread consuming the last tokens and computing the
grammar masks (while the forward pass runs) ÷ its constrained rows, p50 and p99 over every run, and the
process's CPU time per generated token (less skewed by other processes than wall time).
Results go to scripts/results/constrained.json with --json.
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
from bench_engine import QUESTIONS, models_dir, say  # noqa: E402

from agent.engine import GenerationRequest, MLXEngine  # noqa: E402
from agent.engine.constraint import JsonConstraint  # noqa: E402
from agent.wire.response_format import schema_text  # noqa: E402

# minItems: the array cannot close within max_tokens (an empty `{"items":[]}` is 7 tokens, and random weights
# pick `]` soon enough), so every constrained row runs to max_tokens as every unconstrained one does.
LISTING = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"}, "minItems": 256}},
           "required": ["items"], "additionalProperties": False}
RESULTS = ROOT / "scripts" / "results" / "constrained.json"


def requests(name: str, streams: int, max_tokens: int, tag: str, *, is_constrained: bool) -> list[GenerationRequest]:
    constraint = JsonConstraint(schema_text(LISTING)) if is_constrained else None
    return [GenerationRequest(f"{tag}-{i}", name, ({"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},),
                              max_tokens=max_tokens, temperature=1.0, seed=i, ignore_eos=not is_constrained,
                              constraint=constraint) for i in range(streams)]


async def aggregate_tps(engine: MLXEngine, batch: list[GenerationRequest]) -> tuple[float, float, int]:
    """Aggregate tok/s, the process's CPU milliseconds per generated token, and the tokens generated."""
    started, cpu_started = time.perf_counter(), time.process_time()
    streams = [await engine.submit(request) for request in batch]
    completions = await asyncio.gather(*(stream.collect() for stream in streams))
    num_tokens = sum(c.finish.usage.completion_tokens for c in completions)
    return (num_tokens / (time.perf_counter() - started), 1000 * (time.process_time() - cpu_started) / num_tokens,
            num_tokens)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(name: str, streams: int, max_tokens: int, repeats: int) -> dict:
    load_before = os.getloadavg()[0]
    async with MLXEngine({name: models_dir() / name}) as engine:
        await engine.load(name)
        times = engine.backend.grammar_cache(name).mask_times
        await aggregate_tps(engine, requests(name, streams, 8, "warm", is_constrained=True))  # compile, warm up
        times.seconds.clear()
        free, constrained = [], []
        for repeat in range(repeats):
            free.append(await aggregate_tps(engine, requests(name, streams, max_tokens, f"f{repeat}",
                                                             is_constrained=False)))
            constrained.append(await aggregate_tps(engine, requests(name, streams, max_tokens, f"c{repeat}",
                                                                    is_constrained=True)))
            say(f"{name} run {repeat + 1}/{repeats}: {free[-1][0]:.1f} tok/s free, {constrained[-1][0]:.1f} constrained")
        mask_us = [seconds * 1e6 for seconds in times.seconds]
    made = {run[2] for run in free + constrained}
    if len(made) != 1:  # unequal work would make the ratio about the rows' lengths, not the masks
        raise SystemExit(f"the runs made different numbers of tokens ({sorted(made)}): the ratio would not compare")
    return {
        "variant": name, "streams": streams, "max_tokens": max_tokens, "repeats": repeats,
        "tokens_per_run": made.pop(),
        "free_tps": round(statistics.median(t for t, _, _ in free), 1),
        "constrained_tps": round(statistics.median(t for t, _, _ in constrained), 1),
        "constrained_vs_free": round(statistics.median(c[0] / f[0] for c, f in zip(constrained, free)), 3),
        "cpu_ms_per_token_free": round(statistics.median(ms for _, ms, _ in free), 2),
        "cpu_ms_per_token_constrained": round(statistics.median(ms for _, ms, _ in constrained), 2),
        "mask_us_p50": round(percentile(mask_us, 0.50), 1), "mask_us_p99": round(percentile(mask_us, 0.99), 1),
        "num_masks": len(mask_us),
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],  # a shared machine skews the ratio
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help=f"also write {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--variant", default="gpt-oss-tiny")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # warnings and errors only
    result = asyncio.run(measure(args.variant, args.streams, args.max_tokens, args.repeats))
    result["command"] = "python " + " ".join(["scripts/bench_constrained.py", *sys.argv[1:]])
    print(json.dumps(result, indent=2))
    if args.json:
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
