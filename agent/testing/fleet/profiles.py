"""What the simulated fleet is made of: Mac memory sizes, per-model timing, and how long answers run.

Timing (simulated seconds; see the fake engine's FakeTiming):
  gpt-oss-20b  decode 60–74 tok/s per stream alone, +3 % step time per extra stream, prefill 1,500 tok/s,
               cold load 12 s
  gemma-4-26b  decode 40–60 tok/s per stream alone, +4.5 % per extra stream, prefill 700 tok/s, load 20 s
The decode rate grows with the machine (bigger Macs are Max/Ultra chips with more bandwidth). These are
assumptions for Apple Silicon, stated in PERFORMANCE.md, not measurements on a Mac.

Output length: a request with max_tokens M produces min(M, L) tokens, L drawn from a hash of its
messages (100–1,100 tokens, long-tailed): what chat answers look like, so max_tokens is a ceiling and
rarely the size of the answer (the whole point of reserving expected rather than worst-case output).

Public names: FLEET_MEMORY_GB, fleet_memory_gb, timing_for, sim_script, ModelTiming.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

from agent.engine.fake_script import FakeScript, FakeTiming
from agent.engine.types import GenerationRequest

GPT_OSS, GEMMA = "gpt-oss-20b", "gemma-4-26b"

# 60 Macs: a plausible owner mix, weighted to the common configurations (GB as Apple counts them).
FLEET_MEMORY_GB = (16,) * 6 + (24,) * 9 + (32,) * 9 + (36,) * 8 + (48,) * 9 + (64,) * 10 + (96,) * 4 + (128,) * 5


def fleet_memory_gb(num_agents: int) -> list[int]:
    """`num_agents` sizes in the same proportions as the 60-Mac mix, shuffled deterministically."""
    ordered = sorted(FLEET_MEMORY_GB)
    step = len(ordered) / max(1, num_agents)
    picks = [ordered[min(len(ordered) - 1, int(i * step))] for i in range(num_agents)]
    random.Random(7).shuffle(picks)  # mixed in any prefix, the same every run
    return picks


@dataclass(frozen=True, slots=True)
class ModelTiming:
    decode_tps_min: float
    decode_tps_max: float
    batch_slowdown: float
    prefill_tps: float
    load_seconds: float
    unload_seconds: float = 2.0


TIMINGS = {
    GPT_OSS: ModelTiming(60.0, 74.0, 0.03, 1500.0, 12.0),
    GEMMA: ModelTiming(40.0, 60.0, 0.045, 700.0, 20.0),
}


def timing_for(model: str, memory_gb: int) -> FakeTiming:
    """The model's timing on a Mac of this size: decode interpolated from 16 GB (slowest) to 128 GB."""
    t = TIMINGS.get(model, TIMINGS[GPT_OSS])
    share = min(1.0, max(0.0, (memory_gb - 16) / (128 - 16)))
    decode = t.decode_tps_min + share * (t.decode_tps_max - t.decode_tps_min)
    return FakeTiming(prefill_tps=t.prefill_tps, decode_tps=decode, batch_slowdown=t.batch_slowdown,
                      load_seconds=t.load_seconds, unload_seconds=t.unload_seconds)


def answer_tokens(request: GenerationRequest) -> int:
    """100–1,100 tokens, long-tailed (most answers are short), from a hash of the messages."""
    text = "\x00".join(f"{m['role']}:{m['content']}" for m in request.messages)
    u = (zlib.crc32(text.encode()) % 10_000) / 10_000
    return int(100 + 1000 * u**2)


def sim_script(request: GenerationRequest) -> FakeScript:
    return FakeScript(output_tokens=answer_tokens(request))
