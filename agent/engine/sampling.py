"""Per-request sampling inside a shared batch: samplers, logits processors and stop sequences.

mlx-lm's BatchGenerator takes one sampler and one list of logits processors per sequence, so each
request keeps its own temperature, top_p, top_k, penalties and stops. Seeds are per request too:
mlx-lm's samplers draw from MLX's one global random state (so its server runs seeded requests one at
a time); here a sampling request draws from its own key, split once per token, so a seeded request
gets the same tokens whatever it is batched with. Greedy requests share mlx-lm's `greedy_sampler`
object, which lets the batch sample them all in one call.

A request's own code (its logits processors and sampler) runs inside the batch's step; `Guard`
catches what it raises and marks only that request failed, so the step and the others go on.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
from mlx_lm.generate import StopSequences
from mlx_lm.sample_utils import apply_top_k, apply_top_p, greedy_sampler, make_logits_processors

from agent.engine.logit_bias import make_logit_bias
from agent.engine.types import GenerationRequest

Sampler = Callable[[mx.array], mx.array]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


@dataclass(slots=True)
class Guard:
    """Holds the first exception a request's own code raised during a step."""

    error: BaseException | None = None

    def processor(self, processor: LogitsProcessor) -> LogitsProcessor:
        def guarded(tokens: mx.array, logits: mx.array) -> mx.array:
            if self.error is not None:
                return logits
            try:
                processed = processor(tokens, logits)
                if processed.shape != logits.shape:  # would fail the whole batch's concatenation
                    raise ValueError(f"a logits processor returned shape {processed.shape}, not {logits.shape}")
                return processed
            except Exception as exc:
                self.error = exc
                return logits

        return guarded

    def sampler(self, sampler: Sampler) -> Sampler:
        def guarded(logprobs: mx.array) -> mx.array:
            if self.error is None:
                try:
                    return sampler(logprobs)
                except Exception as exc:
                    self.error = exc
            return greedy_sampler(logprobs)  # a placeholder token; the request leaves before it is used

        return guarded


def make_sampler(request: GenerationRequest) -> Sampler:
    if request.temperature == 0:
        return greedy_sampler
    seed = request.seed if request.seed is not None else secrets.randbits(63)
    key = mx.random.key(seed)
    inverse_temperature = 1.0 / request.temperature
    top_p, top_k = request.top_p, request.top_k

    def sample(logprobs: mx.array) -> mx.array:
        nonlocal key
        if 0.0 < top_p < 1.0:
            logprobs = apply_top_p(logprobs, top_p)
        if top_k > 0:
            logprobs = apply_top_k(logprobs, top_k)
        key, draw = mx.random.split(key)
        return mx.random.categorical(logprobs * inverse_temperature, key=draw)

    return sample


def make_processors(request: GenerationRequest) -> list[LogitsProcessor]:
    processors = make_logits_processors(
        presence_penalty=request.presence_penalty or None, frequency_penalty=request.frequency_penalty or None
    )
    if request.logit_bias:
        processors.append(make_logit_bias(request.logit_bias))
    return processors + list(request.logits_processors)


def make_stop_sequences(tokenizer, request: GenerationRequest) -> StopSequences:
    """Token-level stops (eos, unless ignored, and each stop string as the tokenizer encodes it)."""
    sequences: list[tuple[int, ...]] = [] if request.ignore_eos else [(token,) for token in tokenizer.eos_token_ids]
    sequences += [tuple(tokenizer.encode(word, add_special_tokens=False)) for word in request.stop]
    return StopSequences([sequence for sequence in sequences if sequence])
