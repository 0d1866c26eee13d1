"""OpenAI's `logit_bias`: an additive bias on chosen tokens' logits, for the rows that ask only.

A logits processor (mlx-lm's per-row seam) that adds each bias at its token id: +100 all but forces a
token under greedy sampling, -100 all but bans it. The ids are checked against the model's vocabulary
before the request is admitted, so a bad id is the client's 400, not a failure inside the batch.

Public names: make_logit_bias, check_token_ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mlx.core as mx

from agent.errors import InvalidRequest


def check_token_ids(biases: Sequence[tuple[int, float]], vocab_size: int) -> None:
    outside = [token for token, _ in biases if token >= vocab_size]
    if outside:
        raise InvalidRequest(f"logit_bias names token id {outside[0]}, which is not in this model's vocabulary "
                             f"(ids 0..{vocab_size - 1})")


def make_logit_bias(biases: Sequence[tuple[int, float]]) -> Callable[[mx.array, mx.array], mx.array]:
    ids = mx.array([token for token, _ in biases], dtype=mx.int32)
    values = mx.array([bias for _, bias in biases], dtype=mx.float32)

    def add_bias(tokens: mx.array, logits: mx.array) -> mx.array:
        return logits.at[:, ids].add(values.astype(logits.dtype))

    return add_bias
