"""One model's continuous batch, stepped by the MLX thread.

Built from mlx-lm's own pieces: `PromptProcessingBatch` prefills, `GenerationBatch` decodes, and
`extend` / `filter` move rows in and out, as BatchGenerator does. The loop around them is ours so
that a failure can be pinned on what failed: an exception in a request's own code (its logits
processors, sampler, detokenizer or channel splitter) ends that request only; an exception while
prefilling ends only the prefilling group; one in the shared decode step ends the rows of that step.
Nothing else is lost, and the thread goes on.

Prefill groups take only requests whose prompts need the same number of 512-token chunks, so a
group is never padded by more than one partial chunk; its rows join the generation batch together.
Each step prefills one chunk of one group (`pick_prefill_group`: the shortest first, the oldest now
and then).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from mlx_lm.generate import GenerationBatch, PromptProcessingBatch
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.sample_utils import greedy_sampler

from agent.catalog import ModelSpec
from agent.engine.batch_kv import MAX_PREFILL_GROUPS, MAX_PREFILL_ROWS, BatchKV, pick_prefill_group, prefill_chunks
from agent.engine.chat import ChannelSplitter
from agent.engine.mlx_cache_view import batch_shapes
from agent.engine.sampling import Guard
from agent.engine.types import Delta, Event, Finish, FinishReason, Usage
from agent.kvcost import PREFILL_CHUNK_TOKENS

CLEAR_CACHE_EVERY_STEPS = 512  # as BatchGenerator: give MLX's buffer cache back now and then


@dataclass(slots=True, eq=False)
class Row:
    """One admitted request on the MLX thread."""

    request_id: str
    uid: int
    prompt: list[int]
    max_tokens: int
    sampler: Callable[[mx.array], mx.array]
    processors: list[Any]
    stop: Any  # mlx_lm StopSequences
    detokenizer: Any  # mlx_lm StreamingDetokenizer
    splitter: ChannelSplitter
    guard: Guard
    to_prefill: list[int] = field(default_factory=list)
    num_generated: int = 0

    def usage(self) -> Usage:
        return Usage(len(self.prompt), self.num_generated)

    def finish(self, reason: FinishReason, code: str | None = None, message: str | None = None) -> Finish:
        return Finish(reason, self.usage(), code, message)


@dataclass(slots=True, eq=False)
class PrefillGroup:
    rows: list[Row]
    batch: PromptProcessingBatch

    def chunks_left(self, chunk: int) -> int:
        return -(-max(len(row.to_prefill) for row in self.rows) // chunk)


@dataclass(slots=True)
class StepTiming:
    prefill_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_tokens: int = 0
    decode_seconds: float = 0.0


class Batcher:
    def __init__(self, model: Any, spec: ModelSpec, *, chunk: int = PREFILL_CHUNK_TOKENS,
                 max_prefill_rows: int = MAX_PREFILL_ROWS) -> None:
        self.model, self.spec, self.chunk, self.max_prefill_rows = model, spec, chunk, max_prefill_rows
        self.waiting: deque[Row] = deque()
        self.groups: list[PrefillGroup] = []
        self.generation = GenerationBatch.empty(model, greedy_sampler)
        self.decoding: dict[int, Row] = {}
        self.timing = StepTiming()
        self._steps = 0
        self._prefill_turns = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.groups or self.decoding)

    @property
    def prefilling(self) -> list[Row]:
        return [row for group in self.groups for row in group.rows]

    def add(self, row: Row) -> None:
        row.to_prefill = row.prompt[:-1]
        self.waiting.append(row)

    def remove(self, request_id: str, finish: Callable[[Row], Finish]) -> list[tuple[str, Event]]:
        """Take a request out wherever it is, freeing its caches now."""
        for row in self.waiting:
            if row.request_id == request_id:
                self.waiting.remove(row)
                return [(request_id, finish(row))]
        for group in self.groups:
            for index, row in enumerate(group.rows):
                if row.request_id == request_id:
                    keep = [i for i in range(len(group.rows)) if i != index]
                    group.batch.filter(keep)
                    group.rows = [group.rows[i] for i in keep]
                    if not group.rows:
                        self.groups.remove(group)
                    return [(request_id, finish(row))]
        for row in self.decoding.values():
            if row.request_id == request_id:
                self._drop_decoding({row.uid})
                return [(request_id, finish(row))]
        return []

    def remove_all(self, finish: Callable[[Row], Finish]) -> list[tuple[str, Event]]:
        rows = [*self.waiting, *self.prefilling, *self.decoding.values()]
        self.waiting.clear()
        self.groups, self.decoding = [], {}
        self.generation = GenerationBatch.empty(self.model, greedy_sampler)
        mx.clear_cache()
        return [(row.request_id, finish(row)) for row in rows]

    def step(self) -> list[tuple[str, Event]]:
        """One decode step of the generation batch, then one prefill chunk (or a group joining)."""
        events: list[tuple[str, Event]] = []
        if self.decoding:
            self._decode(events)
        if self.groups or self.waiting:
            self._prefill(events)
        return events

    def _decode(self, events: list[tuple[str, Event]]) -> None:
        started = time.perf_counter()
        try:
            responses = self.generation.next()
        except Exception as exc:
            self._fail(list(self.decoding.values()), "generation_error", exc, events)
            self.decoding = {}
            self.generation = GenerationBatch.empty(self.model, greedy_sampler)
            mx.clear_cache()
            return
        self.timing.decode_seconds += time.perf_counter() - started
        self.timing.decode_tokens += len(responses)
        leaving: set[int] = set()
        for response in responses:
            row = self.decoding[response.uid]
            ended = False
            if row.guard.error is None:
                try:
                    ended = self._emit(row, response.token, response.finish_reason, events)
                except Exception as exc:  # the request's own detokenizer or splitter
                    row.guard.error = exc
            if row.guard.error is not None:
                events.append((row.request_id, row.finish(FinishReason.ERROR, "generation_error",
                                                          _describe(row.guard.error))))
                ended = True
            if ended:
                leaving.add(row.uid)
        finished_by_batch = {r.uid for r in responses if r.finish_reason is not None}
        for uid in finished_by_batch:
            self.decoding.pop(uid, None)
        self._drop_decoding(leaving - finished_by_batch)
        self._steps += 1
        if self._steps % CLEAR_CACHE_EVERY_STEPS == 0:
            mx.clear_cache()

    def _emit(self, row: Row, token: int, finish_reason: str | None, events: list[tuple[str, Event]]) -> bool:
        """Detokenize and split one token; True when the request has ended."""
        row.num_generated += 1
        detokenizer, splitter = row.detokenizer, row.splitter
        if finish_reason == "stop":  # an eos or a stop sequence: its text is never shown
            detokenizer.finalize()
            content, reasoning = splitter.feed(detokenizer.last_segment)
        else:
            detokenizer.add_token(token)
            if finish_reason == "length":
                detokenizer.finalize()
            content, reasoning = splitter.feed(detokenizer.last_segment)
            if finish_reason == "length":
                more_content, more_reasoning = splitter.flush()
                content, reasoning = content + more_content, reasoning + more_reasoning
        events.append((row.request_id, Delta(content, reasoning, 1)))
        if splitter.is_stopped or finish_reason == "stop":
            events.append((row.request_id, row.finish(FinishReason.STOP)))
            return True
        if finish_reason == "length":
            events.append((row.request_id, row.finish(FinishReason.LENGTH)))
            return True
        return False

    def _drop_decoding(self, uids: set[int]) -> None:
        if not uids:
            return
        keep = [i for i, uid in enumerate(self.generation.uids) if uid not in uids]
        self.generation.filter(keep)
        for uid in uids:
            self.decoding.pop(uid, None)

    def _prefill(self, events: list[tuple[str, Event]]) -> None:
        while self.waiting and len(self.groups) < MAX_PREFILL_GROUPS:
            self.groups.append(self._start_group())
        self._prefill_turns += 1
        group = self.groups[pick_prefill_group([g.chunks_left(self.chunk) for g in self.groups], self._prefill_turns)]
        started = time.perf_counter()
        try:
            if group.chunks_left(self.chunk):
                chunk = [row.to_prefill[: self.chunk] for row in group.rows]
                for row in group.rows:
                    del row.to_prefill[: self.chunk]
                group.batch.prompt(chunk)
                self.timing.prefill_tokens += sum(len(tokens) for tokens in chunk)
            if not group.chunks_left(self.chunk):
                self.groups.remove(group)
                self._join(group)
        except Exception as exc:
            self._fail(group.rows, "prefill_error", exc, events)
            if group in self.groups:
                self.groups.remove(group)
            mx.clear_cache()
        self.timing.prefill_seconds += time.perf_counter() - started

    def _start_group(self) -> PrefillGroup:
        first = self.waiting.popleft()
        chunks = prefill_chunks(len(first.prompt), self.chunk)
        rows = [first]
        for row in list(self.waiting):
            if len(rows) == self.max_prefill_rows:
                break
            if prefill_chunks(len(row.prompt), self.chunk) == chunks:
                self.waiting.remove(row)
                rows.append(row)
        batch = PromptProcessingBatch(
            self.model, [row.uid for row in rows], [make_prompt_cache(self.model) for _ in rows],
            prefill_step_size=self.chunk, samplers=[row.sampler for row in rows], fallback_sampler=greedy_sampler,
            logits_processors=[row.processors for row in rows], stop_sequences=[row.stop for row in rows],
            max_tokens=[row.max_tokens for row in rows],
        )
        return PrefillGroup(rows, batch)

    def _join(self, group: PrefillGroup) -> None:
        """The group's first decode step (its last prompt tokens), then into the generation batch."""
        generation = group.batch.generate([[row.prompt[-1]] for row in group.rows])
        self.generation.extend(generation)
        self.decoding.update((row.uid, row) for row in group.rows)

    def _fail(self, rows: list[Row], code: str, exc: BaseException, events: list[tuple[str, Event]]) -> None:
        message = _describe(exc)
        events.extend((row.request_id, row.finish(FinishReason.ERROR, code, message)) for row in rows)

    def used_bytes(self) -> int:
        caches = [*self.generation.prompt_cache, *(c for group in self.groups for c in group.batch.prompt_cache)]
        return sum(cache.nbytes for cache in caches)

    def batch_kv(self) -> BatchKV:
        """The generation batch's caches as the ledger's integers (read from the real caches)."""
        rows = [self.decoding[uid] for uid in self.generation.uids]
        state = BatchKV(self.spec, [row.request_id for row in rows], [len(t) for t in self.generation.tokens])
        state.full, state.sliding = batch_shapes(self.generation.prompt_cache, window=self.spec.sliding_window)
        return state


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
