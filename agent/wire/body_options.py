"""The chat body's output options beyond sampling: logprobs, logit_bias, metadata and store, with OpenAI's bounds.

    top_logprobs   0..20 alternatives per token (OpenAI's range); only with `logprobs: true`
    logit_bias     token id (a decimal string, as JSON keys are) -> an additive bias in -100..100, at most
                   300 entries (OpenAI's limit); whether an id is in the model's vocabulary only the agent
                   knows, and it refuses the request if one is not
    metadata       at most 16 string pairs, keys ≤ 64 and values ≤ 512 characters (OpenAI's limits): the
                   consumer's own labels, never forwarded to a provider (agent/coordinator/privacy.py)
    store          `false` (or absent) only: completions are not stored here, so `true` is refused
                   rather than accepted and silently not kept

Public names: MAX_TOP_LOGPROBS, MAX_LOGIT_BIAS_ENTRIES, MAX_LOGIT_BIAS, MAX_TOKEN_ID, MAX_METADATA_PAIRS,
TopLogprobs, LogitBias, Metadata, token_biases.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

MAX_TOP_LOGPROBS = 20
MAX_LOGIT_BIAS_ENTRIES = 300
MAX_LOGIT_BIAS = 100.0
MAX_TOKEN_ID = 2**31 - 1  # above every vocabulary; the agent checks the model's own
MAX_METADATA_PAIRS = 16


def _token_id(key: str) -> str:
    if not (key.isascii() and key.isdigit()) or int(key) > MAX_TOKEN_ID:
        raise ValueError(f"logit_bias keys are token ids (decimal strings 0..{MAX_TOKEN_ID}), not {key[:40]!r}")
    return key


TopLogprobs = Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)]
TokenIdKey = Annotated[str, Field(min_length=1, max_length=10), AfterValidator(_token_id)]
Bias = Annotated[float, Field(ge=-MAX_LOGIT_BIAS, le=MAX_LOGIT_BIAS)]
LogitBias = Annotated[dict[TokenIdKey, Bias], Field(max_length=MAX_LOGIT_BIAS_ENTRIES)]
Metadata = Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
                     Field(max_length=MAX_METADATA_PAIRS)]


def token_biases(logit_bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    """The body's logit_bias as (token id, bias) pairs, sorted by id; zero biases dropped (they change nothing)."""
    return tuple(sorted((int(key), bias) for key, bias in (logit_bias or {}).items() if bias != 0))
