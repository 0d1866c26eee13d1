"""Measure the engine against bare mlx-lm on the tiny models, and how the expected-output ratio adapts.

    python scripts/bench_engine.py [--json] [--variants gpt-oss-tiny gemma-4-tiny ...] [--repeats 7]

(about 7 minutes on a 2-core CPU; this machine's speed drifts by ±15 % between runs, so run it idle)

For each model: the same chat prompts, greedy, `ignore_eos` so every stream makes exactly
max_tokens tokens, at 1 and 8 concurrent streams, alternating
  bare    mlx-lm's BatchGenerator: insert every prompt, call next() until all are done (tokens only)
  engine  MLXEngine: submit every request, read every stream to its end (text, channels, asyncio)
Aggregate tok/s = generated tokens / wall time from the first insert or submit to the last token
(prefill included). Bare and engine runs alternate; engine ÷ bare is the median of the paired
ratios, tok/s figures are medians. Then a run whose outputs stop early
(an eos forced after 8 to 48 tokens of a 256 max_tokens) shows the expected-output ratio adapting,
and a tight KV budget shows it raised when the admitted rows outgrow it.

The first variant is the primary one: its numbers are the JSON's engine_vs_bare_1, engine_vs_bare_8
and batch_gain_8 (engine 8-stream ÷ engine 1-stream aggregate tok/s). Each variant also reports the
gain over the decode window alone (from the moment every stream has its first token), which leaves
out the 8 prompts' prefill. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

import mlx.core as mx  # noqa: E402
import mlx_lm  # noqa: E402
import structlog  # noqa: E402
from mlx_lm.generate import BatchGenerator  # noqa: E402

from agent.catalog import spec_from_model_dir  # noqa: E402
from agent.engine import Delta, EngineConfig, GenerationRequest, MLXEngine, RequestRefused  # noqa: E402
from agent.kvcost import kv_peak_bytes_at  # noqa: E402
from agent.testing.tiny_models import VARIANTS, can_write, is_up_to_date, write_all  # noqa: E402

QUESTIONS = ["What is the capital of France?", "Name three rivers in Europe.", "Why is the sky blue?",
             "Count from one to ten.", "Summarize the water cycle.", "What does a provider serve?",
             "How are keys and values cached?", "Say hello in plain English."]
TOKENS = {"gpt-oss-tiny": 256, "gemma-4-tiny": 48, "gpt-oss-tiny-wide": 32, "gemma-4-tiny-wide": 12}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def models_dir() -> Path:
    root = Path(os.environ.get("DARKBLOOM_TINY_MODELS") or Path(tempfile.gettempdir()) / "darkbloom-tiny-models")
    stale = [name for name in VARIANTS if can_write(name) and not is_up_to_date(root / name, name)]
    if stale:
        say(f"writing tiny models {stale} to {root}")
        write_all(root, stale)
    return root


def requests(name: str, streams: int, max_tokens: int, tag: str) -> list[GenerationRequest]:
    return [GenerationRequest(f"{tag}-{i}", name, ({"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},),
                        max_tokens=max_tokens, temperature=0.0, ignore_eos=True) for i in range(streams)]


@dataclass(frozen=True, slots=True)
class Rate:
    """Aggregate tok/s from the first insert or submit to the last token, and over the decode window only
    (from the moment every stream has its first token: no prefill in it)."""

    overall: float
    decode: float


def _rate(started: float, arrivals: list[tuple[float, str, int]]) -> Rate:
    first = {}
    for when, stream, _ in arrivals:
        first.setdefault(stream, when)
    all_started, ended = max(first.values()), max(when for when, _, _ in arrivals)
    decoded = sum(count for when, _, count in arrivals if when > all_started)
    total = sum(count for _, _, count in arrivals)
    return Rate(total / (ended - started), decoded / max(ended - all_started, 1e-9))


def bare_tps(model, prompts: list[list[int]], max_tokens: int) -> Rate:
    generator = BatchGenerator(model, prefill_step_size=512)
    started = time.perf_counter()
    unfinished = set(generator.insert(prompts, max_tokens=[max_tokens] * len(prompts)))
    arrivals = []
    while unfinished:
        responses = generator.next_generated()
        now = time.perf_counter()
        arrivals += [(now, response.uid, 1) for response in responses]
        unfinished -= {response.uid for response in responses if response.finish_reason is not None}
    generator.close()
    return _rate(started, arrivals)


async def engine_tps(engine: MLXEngine, batch: list[GenerationRequest]) -> Rate:
    started = time.perf_counter()
    arrivals: list[tuple[float, str, int]] = []

    async def read(stream) -> None:
        async for event in stream:
            if isinstance(event, Delta):
                arrivals.append((time.perf_counter(), stream.request_id, event.num_tokens))

    streams = [await engine.submit(request) for request in batch]
    await asyncio.gather(*(read(stream) for stream in streams))
    return _rate(started, arrivals)


async def measure(name: str, model_dir: Path, repeats: int) -> dict:
    max_tokens = TOKENS.get(name, 32)
    model, _ = mlx_lm.load(str(model_dir))
    results: dict[str, list[Rate]] = {"bare_1": [], "engine_1": [], "bare_8": [], "engine_8": []}
    async with MLXEngine({name: model_dir}) as engine:
        await engine.load(name)
        chat = engine.chat_format(name)
        await engine_tps(engine, requests(name, 2, 4, "warmup"))
        bare_tps(model, [chat.encode(r).token_ids for r in requests(name, 2, 4, "warmup")], 4)
        for repeat in range(repeats):
            for streams in (1, 8):
                batch = requests(name, streams, max_tokens, f"r{repeat}s{streams}")
                prompts = [chat.encode(request).token_ids for request in batch]
                # Alternate which goes first: this machine's speed drifts between runs.
                for kind in (("bare", "engine") if repeat % 2 == 0 else ("engine", "bare")):
                    rate = bare_tps(model, prompts, max_tokens) if kind == "bare" else await engine_tps(engine, batch)
                    results[f"{kind}_{streams}"].append(rate)
                bare, ours = results[f"bare_{streams}"][-1], results[f"engine_{streams}"][-1]
                say(f"  {name} repeat {repeat + 1}/{repeats}, {streams} stream(s): bare {bare.overall:.1f} tok/s "
                    f"({bare.decode:.1f} decoding), engine {ours.overall:.1f} tok/s ({ours.decode:.1f} decoding)")
    del model
    mx.clear_cache()
    overall = {key: statistics.median(r.overall for r in rates) for key, rates in results.items()}
    decode = {key: statistics.median(r.decode for r in rates) for key, rates in results.items()}
    paired = {n: statistics.median(e.overall / b.overall for e, b in zip(results[f"engine_{n}"], results[f"bare_{n}"]))
              for n in (1, 8)}
    return {
        "max_tokens": max_tokens, "repeats": repeats, **{f"{key}_tps": round(v, 1) for key, v in overall.items()},
        **{f"{key}_decode_tps": round(v, 1) for key, v in decode.items()},
        "engine_vs_bare_1": round(paired[1], 3), "engine_vs_bare_8": round(paired[8], 3),
        "batch_gain_8": round(overall["engine_8"] / overall["engine_1"], 2),
        "bare_batch_gain_8": round(overall["bare_8"] / overall["bare_1"], 2),
        "decode_batch_gain_8": round(decode["engine_8"] / decode["engine_1"], 2),
        "bare_decode_batch_gain_8": round(decode["bare_8"] / decode["bare_1"], 2),
    }


def eos_after(count: int, eos: int):
    """A logits processor that lets the model write `count` tokens, then forces its eos."""
    calls = 0

    def processor(tokens, logits):
        nonlocal calls
        calls += 1
        if calls <= count:
            return logits
        return mx.where(mx.arange(logits.shape[-1]) == eos, 0.0, -1e9).astype(logits.dtype)[None]

    return processor


async def ratio_run(name: str, model_dir: Path) -> dict:
    """Short outputs of long max_tokens: the ratio falls; then rows that outgrow a tight budget raise it."""
    rng = random.Random(3)
    async with MLXEngine({name: model_dir}) as engine:
        await engine.load(name)
        chat = engine.chat_format(name)
        eos = min(chat.tokenizer.eos_token_ids)
        observed = []
        for wave in range(4):
            batch = []
            for i in range(8):
                count = rng.randint(8, 48)
                observed.append(count / 256)
                batch.append(GenerationRequest(f"w{wave}-{i}", name, ({"role": "user", "content": QUESTIONS[i]},),
                                         max_tokens=256, temperature=0.0, logits_processors=(eos_after(count, eos),)))
            await engine_tps(engine, batch)
        falling = [round(change.value, 3) for change in engine.output_ratio(name).history]
        say(f"  ratio after {len(falling)} completions of 8 to 48 tokens of 256 (mean observed "
            f"{statistics.mean(observed):.3f}): 0.7 -> {falling[-1]}")
        prompt = len(chat.encode(requests(name, 1, 8, "p")[0]).token_ids)
    rows, length = 6, 400
    budget = int(rows * kv_peak_bytes_at(spec_from_model_dir(model_dir), prompt + length) / 0.95)
    async with MLXEngine({name: model_dir}, config=EngineConfig(max_kv_budget_bytes=budget)) as engine:
        await engine.load(name)
        ratio = engine.output_ratio(name)
        ratio.value = falling[-1]  # what the first run learned
        admitted, refused, most_used = [], 0, 0
        for i in range(40):
            try:
                admitted.append(await engine.submit(requests(name, 1, length, f"long{i}")[0]))
            except RequestRefused:
                refused += 1
        pending = {asyncio.ensure_future(stream.collect()) for stream in admitted}
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.05)
            most_used = max(most_used, engine.snapshot().slot(name).kv_used_bytes)
        raised = [round(change.value, 3) for change in ratio.history if change.reason == "memory_short"]
        say(f"  budget for {rows} rows of {length} tokens ({budget:,} B): admitted {len(admitted)} at ratio "
            f"{falling[-1]}, refused {refused}; they grew to {most_used:,} B; raised for memory: {raised}; "
            f"ratio after their completions {ratio.value:.3f}")
    return {"start": 0.7, "trace": falling, "mean_observed": round(statistics.mean(observed), 3),
            "tight_budget_bytes": budget, "admitted_at_low_ratio": len(admitted), "refused": refused,
            "most_used_bytes": most_used, "raised_for_memory": raised, "final": round(ratio.value, 3)}


async def main(args: argparse.Namespace) -> dict:
    root = models_dir()
    details = {}
    for name in args.variants:
        say(f"{name}: {args.repeats if name == args.variants[0] else 1} repeat(s)")
        details[name] = await measure(name, root / name, args.repeats if name == args.variants[0] else 1)
        say(f"  {name}: {details[name]}")
    ratio = await ratio_run(args.variants[0], root / args.variants[0])
    primary = details[args.variants[0]]
    return {"engine_vs_bare_1": primary["engine_vs_bare_1"], "engine_vs_bare_8": primary["engine_vs_bare_8"],
            "batch_gain_8": primary["batch_gain_8"], "primary": args.variants[0], "variants": details,
            "expected_output_ratio": ratio}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--variants", nargs="+", default=["gpt-oss-tiny", "gemma-4-tiny", "gpt-oss-tiny-wide",
                                                          "gemma-4-tiny-wide"],
                        choices=sorted(VARIANTS), help="the first is the primary one")
    parser.add_argument("--repeats", type=int, default=7, help="repeats of the primary variant (others: 1)")
    arguments = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings only
    outcome = asyncio.run(main(arguments))
    print(json.dumps(outcome) if arguments.json else json.dumps(outcome, indent=2))
