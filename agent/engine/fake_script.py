"""What the fake engine's requests say and how long its work takes (see agent/engine/fake.py)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from agent.engine.types import GenerationRequest

WORDS = ("the", "model", "answers", "quickly", "and", "every", "token", "arrives", "in", "order", "with",
         "its", "own", "stream", "while", "others", "share", "batch")


@dataclass(frozen=True, slots=True)
class FakeTiming:
    prefill_tps: float = 2000.0  # prompt tokens per second
    decode_tps: float = 50.0  # tokens per second of one stream alone
    batch_slowdown: float = 0.05  # each further stream in the batch slows every stream by this fraction
    load_seconds: float = 5.0
    unload_seconds: float = 0.5

    def step_seconds(self, num_streams: int) -> float:
        return (1.0 + self.batch_slowdown * max(0, num_streams - 1)) / self.decode_tps


@dataclass(frozen=True, slots=True)
class FakeScript:
    """What one request does. Text is split into one token per word (each with its leading space)."""

    content: str | None = None  # None: deterministic words from a hash of the messages
    reasoning: str = ""
    output_tokens: int | None = None  # stop after this many (None: 16 to 63, from the hash); max_tokens first → length
    fail_after_tokens: int | None = None  # end with an error event after this many tokens
    error: str = "scripted failure"
    first_token_delay_s: float = 0.0


def script_seed(request: GenerationRequest) -> int:
    text = "\x00".join(f"{m['role']}:{m['content']}" for m in request.messages)
    return zlib.crc32(text.encode())


def script_tokens(script: FakeScript, seed: int) -> tuple[list[str], list[str]]:
    """(reasoning tokens, content tokens) the request will produce, before any limit."""
    reasoning = [f" {word}" for word in script.reasoning.split()]
    if script.content is not None:
        content = [f" {word}" for word in script.content.split()]
    else:
        count = script.output_tokens if script.output_tokens is not None else 16 + seed % 48
        content = [f" {WORDS[(seed + i) % len(WORDS)]}" for i in range(max(0, count - len(reasoning)))]
    return reasoning, content
