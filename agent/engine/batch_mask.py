"""The model's output with every constrained row's grammar mask applied in one operation per step.

mlx-lm's per-row logits processors slice each row out of the batch's logits, keep a token buffer per
row and concatenate the rows again: for a grammar mask that bookkeeping cost more CPU than the mask
itself. Instead the batch's model is wrapped: while the batcher steps rows that have constraints, the
wrapper starts the forward pass (`async_eval`), reads the tokens the rows sampled last step (the
pass's own inputs, so no extra wait), lets each constrained row's matcher consume its token and write
its bitmask into one buffer (llguidance computes a mask without holding the GIL, so the event loop's
thread runs meanwhile), and applies the whole buffer with one `mx.where` while the model still runs.
A step with no constrained row, and every prefill, passes straight through. Unconstrained rows beside
constrained ones keep every logit (the `where` passes them through unchanged), so their tokens do not
depend on their neighbours.

The mask comes before the rows' own logits processors (penalties, logit_bias): each of ours keeps a
banned token at -inf, so the order does not change what may be sampled, nor the logprobs read after.
A matcher that fails marks only its row (its `Guard`), which then leaves the batch.

Public names: BatchMask, DEFAULT_MASK_THREADS.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import llguidance
import llguidance.numpy
import mlx.core as mx
import numpy as np

from agent.engine.constrained import ConstrainedRow

DEFAULT_MASK_THREADS: int | None = None  # llguidance's threads for a step's masks (None: its default)


class BatchMask:
    """A callable in the model's place: `model(inputs, cache=...)`, masked for the rows being stepped."""

    def __init__(self, model: Any, *, mask_threads: int | None = DEFAULT_MASK_THREADS) -> None:
        self.model = model
        self.executor = llguidance.LLExecutor(mask_threads)
        self._rows: Sequence[ConstrainedRow | None] = ()

    @contextmanager
    def stepping(self, rows: Sequence[ConstrainedRow | None]) -> Iterator[None]:
        """Mask the model calls made inside, for these rows in the batch's order (None: unconstrained)."""
        self._rows = rows if any(row is not None for row in rows) else ()
        try:
            yield
        finally:
            self._rows = ()

    def __call__(self, inputs: mx.array, cache: Any = None) -> mx.array:
        logits = self.model(inputs, cache=cache)
        rows = self._rows
        if not rows:
            return logits
        if len(rows) != logits.shape[0]:
            raise RuntimeError(f"{len(rows)} rows to mask, {logits.shape[0]} rows of logits")
        mx.async_eval(logits)  # the forward pass runs while the masks are computed below
        tokens = inputs[:, -1].tolist()  # each row's last token: what its matcher consumes next
        started = time.perf_counter()
        keep = self._keep(rows, tokens, logits.shape[-1])
        constrained = [row for row in rows if row is not None]
        per_token = (time.perf_counter() - started) / len(constrained)
        for row in constrained:
            if row.times is not None:
                row.times.add(per_token)
        return mx.where(mx.array(keep).reshape(logits.shape), logits, -mx.inf)

    def _keep(self, rows: Sequence[ConstrainedRow | None], tokens: list[int], width: int) -> np.ndarray:
        """Which logits each row keeps: its grammar's mask, or all of them for a row without one."""
        num_words = (next(row.vocab_size for row in rows if row is not None) + 31) // 32
        masks = np.zeros((len(rows), num_words), dtype=np.uint32)
        live = [(index, row) for index, row in enumerate(rows) if row is not None and row.guard.error is None]
        consumed = [(row.matcher, tokens[index]) for index, row in live if row.is_started]
        if consumed:  # a refused token leaves its matcher in an error state, which is_masked raises
            self.executor.consume_token_par(consumed)
        masked = []
        for index, row in live:
            row.is_started = True
            try:
                if row.is_masked():
                    masked.append((row.matcher, index))
                else:
                    row.write_eos_only(masks[index])
            except Exception as exc:  # this row's grammar only: the row leaves, the batch goes on
                row.guard.error = exc
        if masked:
            llguidance.numpy.fill_next_token_bitmask_par(self.executor, masked, masks.view(np.int32))
        for _, index in masked:
            if not masks[index].any():
                rows[index].guard.error = RuntimeError("the grammar allows no token here")
        bits = np.unpackbits(masks.view(np.uint8), axis=1, count=min(width, 32 * num_words), bitorder="little")
        keep = bits.view(bool)
        if keep.shape[1] < width:  # logits past the tokenizer's vocabulary: never a constrained row's token
            keep = np.pad(keep, ((0, 0), (0, width - keep.shape[1])))
        keep[[index for index, row in enumerate(rows) if row is None or row.guard.error is not None]] = True
        return keep
