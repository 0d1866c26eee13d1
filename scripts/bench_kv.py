#!/usr/bin/env python3
"""How far the KV prediction is from the bytes mlx-lm really allocates, measured on the tiny models.

    DARKBLOOM_TINY_MODELS=DIR python scripts/bench_kv.py [--json]

Loads each tiny model with mlx-lm and, after every prefill and decode step, compares the prediction
with the sum of the real caches' `nbytes`:
  one sequence, batched    agent.kvcost.engine_kv_trace vs mlx-lm's BatchGenerator (rows prefilled together)
  continuous batching      agent.engine.batch_kv.BatchKV replayed from the schedule vs our Batcher's
                           generation batch, as rows join at different lengths, finish and are cancelled
  predicted peak           agent.engine.batch_kv.predicted_peak_bytes (what the ledger reserves) vs the
                           most the batch then holds: a bound, so its slack is reported, not an error
The result is the largest absolute difference seen, with how many steps were compared; the models are
written to DIR first if they are missing (as the tests do).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx_lm  # noqa: E402

from agent.catalog import spec_from_model_dir  # noqa: E402
from agent.engine.batch_kv import BatchKV, PendingRow, predicted_peak_bytes  # noqa: E402
from agent.engine.schedule import ScheduleLimits  # noqa: E402
from agent.engine.batcher import Batcher  # noqa: E402
from agent.engine.chat import ChatFormat  # noqa: E402
from agent.engine.types import FinishReason  # noqa: E402
from agent.kvcost import engine_kv_trace  # noqa: E402
from agent.testing.tiny_models import VARIANTS, is_up_to_date, write_all  # noqa: E402
from tests.test_engine_batch_kv import CHUNK, Mirror, make_row  # noqa: E402  (the tests' own step mirror)
from tests.test_kvcost_engine import observed_trace  # noqa: E402

NARROW_MODELS = ("gpt-oss-tiny", "gemma-4-tiny")
WIDE_MODELS = ("gpt-oss-tiny-wide", "gemma-4-tiny-wide")  # the real head counts, head dims and windows
# Prompt lengths on both sides of the 256-token cache steps and the 512-token prefill chunks.
NARROW_PROMPTS = (1, 2, 40, 255, 256, 257, 300, 511, 513, 1100)
WIDE_PROMPTS = (1, 129, 257)
BATCHES = ((7, 33), (24, 300, 513), (1, 1, 1))
DECODE_TOKENS = 20
# (step, uid, prompt tokens, max tokens): rows joining a running batch across chunks, steps and windows.
ARRIVALS = {0: [(1, 5, 40), (2, 70, 12)], 3: [(3, 20, 30)], 9: [(4, 300, 25), (5, 290, 8)], 14: [(6, 2, 50)]}
CANCEL_AT = {20: "r3"}
PEAK_ROWS = ((11, 40, 30), (12, 150, 6), (13, 9, 60), (14, 75, 20))
MAX_STEPS = 200


def trace_errors(model, spec, prompt_lengths: tuple[int, ...], max_tokens: int) -> list[int]:
    """|predicted − real| after every BatchGenerator step for rows prefilled together."""
    observed = observed_trace(model, list(prompt_lengths), max_tokens)
    longest = max(prompt_lengths)
    predicted = engine_kv_trace(spec, longest, longest + max_tokens - 1, batch_size=len(prompt_lengths))
    if len(observed) != len(predicted):
        raise SystemExit(f"{prompt_lengths}: {len(observed)} real steps, {len(predicted)} predicted")
    return [abs(p - o) for p, o in zip(predicted, observed, strict=True)]


def continuous_errors(batcher: Batcher) -> list[int]:
    """|replayed − real| after every step of our Batcher as rows join, finish and are cancelled."""
    mirror, errors = Mirror(batcher), []
    for step in range(MAX_STEPS):
        for uid, prompt, max_tokens in ARRIVALS.get(step, []):
            batcher.add(make_row(batcher.chat, uid, prompt, max_tokens))
        if step in CANCEL_AT:
            batcher.remove(CANCEL_AT[step], lambda row: row.finish(FinishReason.CANCELLED))
            mirror.replay.leave({CANCEL_AT[step]})
        if not batcher.has_work and step > max(ARRIVALS):
            return errors
        mirror.step()
        errors.append(abs(mirror.replay.nbytes - mirror.generation_bytes()))
    raise SystemExit(f"the batch still had work after {MAX_STEPS} steps")


def peak_bound(batcher: Batcher) -> dict[str, int]:
    rows = [PendingRow(f"r{uid}", p, p + m) for uid, p, m in PEAK_ROWS]
    predicted = predicted_peak_bytes(BatchKV(batcher.spec), {}, rows, ScheduleLimits(chunk_tokens=CHUNK))
    for uid, prompt, max_tokens in PEAK_ROWS:
        batcher.add(make_row(batcher.chat, uid, prompt, max_tokens))
    observed = 0
    while batcher.has_work:
        batcher.step()
        observed = max(observed, batcher.used_bytes())
    return {"predicted_peak_bytes": predicted, "observed_peak_bytes": observed,
            "slack_bytes": predicted - observed}


def measure_model(model_dir: Path, prompts: tuple[int, ...], *, batching: bool) -> dict:
    model, tokenizer = mlx_lm.load(str(model_dir))
    spec = spec_from_model_dir(model_dir)
    errors = {"one sequence": [e for n in prompts for e in trace_errors(model, spec, (n,), DECODE_TOKENS)],
              "batched": [e for lengths in BATCHES for e in trace_errors(model, spec, lengths, 3)]}
    result: dict = {}
    if batching:
        batcher = Batcher(model, spec, ScheduleLimits(chunk_tokens=CHUNK))
        batcher.chat = ChatFormat(tokenizer, json.loads((model_dir / "config.json").read_text())["model_type"])
        errors["continuous batching"] = continuous_errors(batcher)
        result["peak_bound"] = peak_bound(batcher)
    result["cases"] = {name: {"steps_compared": len(e), "max_error_bytes": max(e)} for name, e in errors.items()}
    return result


def measure(models_dir: Path) -> dict:
    started = time.monotonic()
    stale = [name for name in VARIANTS if not is_up_to_date(models_dir / name, name)]
    if stale:
        write_all(models_dir, stale)
    models = {name: measure_model(models_dir / name, NARROW_PROMPTS, batching=True) for name in NARROW_MODELS}
    models |= {name: measure_model(models_dir / name, WIDE_PROMPTS, batching=False) for name in WIDE_MODELS}
    cases = [case for m in models.values() for case in m["cases"].values()]
    return {"max_error_bytes": max(case["max_error_bytes"] for case in cases),
            "steps_compared": sum(case["steps_compared"] for case in cases),
            "min_peak_slack_bytes": min(m["peak_bound"]["slack_bytes"] for m in models.values() if "peak_bound" in m),
            "models": models, "seconds": round(time.monotonic() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=os.environ.get("DARKBLOOM_TINY_MODELS"),
                        help="the tiny models' directory (default: $DARKBLOOM_TINY_MODELS, else a temporary one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        result = measure(Path(args.models) if args.models else Path(scratch))
    if args.json:
        print(json.dumps(result))
        return
    for name, m in result["models"].items():
        for case, row in m["cases"].items():
            print(f"{name:20} {case:20} {row['steps_compared']:>5} steps  max error {row['max_error_bytes']:,} B")
    print(f"max error {result['max_error_bytes']:,} B over {result['steps_compared']:,} steps; "
          f"predicted peak above the real peak by at least {result['min_peak_slack_bytes']:,} B")


if __name__ == "__main__":
    main()
