"""One model's continuous batch, stepped by the MLX thread.

Built from mlx-lm's own pieces: `PromptProcessingBatch` prefills, `GenerationBatch` decodes, and
`extend` / `filter` move rows in and out, as BatchGenerator does. The loop around them is ours so
that a failure can be pinned on what failed: an exception in a request's own code (its logits
processors, sampler, detokenizer or channel splitter) ends that request only; an exception while
prefilling ends only the prefilling group; one in the shared decode step ends the rows of that step.
Nothing else is lost, and the thread goes on.

Which prompts prefill together and which group gets each step's chunk is the schedule's decision
(agent/engine/schedule.py, the same one the fake engine runs); this file does what it says on the
tensors: a group's `PromptProcessingBatch` is its schedule state, and its rows join the generation
batch together.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.generate import GenerationBatch, PromptProcessingBatch
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.sample_utils import greedy_sampler

from agent.catalog import ModelSpec
from agent.engine.batch_kv import BatchKV
from agent.engine.batch_mask import BatchMask
from agent.engine.chat import ChannelSplitter
from agent.engine.constrained import ConstrainedRow
from agent.engine.image_feed import ImageFeed, RowImages
from agent.engine.logprobs import LogprobReader
from agent.engine.mlx_cache_view import batch_shapes
from agent.engine.prefix_index import PrefixEntry
from agent.engine.prefix_store import PrefixStore
from agent.engine.sampling import Guard
from agent.engine.schedule import PrefillGroup, Schedule, ScheduleLimits, Step
from agent.engine.types import Delta, Event, Finish, FinishReason, Usage

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
    num_generated: int = 0
    logprobs: LogprobReader | None = None  # only for a request that asked (agent/engine/logprobs.py)
    markup_ids: frozenset[int] = frozenset()  # special tokens: never content, so never given logprobs
    grammar: ConstrainedRow | None = None  # a constrained request's matcher (masked by the batch: batch_mask.py)
    images: RowImages | None = None  # an image request's soft-token embeddings (fed by image_feed.py)
    reused: list[Any] | None = None  # caches standing for the first `cached_tokens` (agent/engine/prefix_store.py)
    cached_tokens: int = 0
    is_cacheable: bool = True  # its prompt's KV may be kept for later requests (not with images)
    prefix_chain: str | None = None  # its request's message chain, remembered with the captured prefix

    @property
    def prompt_tokens(self) -> int:
        """The tokens it still has to prefill, as the schedule groups and chunks them."""
        return len(self.prompt) - self.cached_tokens

    def usage(self) -> Usage:
        return Usage(len(self.prompt), self.num_generated, self.cached_tokens)

    def finish(self, reason: FinishReason, code: str | None = None, message: str | None = None) -> Finish:
        return Finish(reason, self.usage(), code, message)


@dataclass(slots=True)
class StepTiming:
    prefill_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_tokens: int = 0
    decode_seconds: float = 0.0


class Batcher:
    def __init__(self, model: Any, spec: ModelSpec, limits: ScheduleLimits = ScheduleLimits(),
                 image_token_id: int | None = None) -> None:
        self.model, self.spec, self.limits = model, spec, limits
        # The model as the batches call it: image rows' embeddings fed in prefill, constrained rows' masks applied.
        self.feed = None if image_token_id is None else ImageFeed(model, image_token_id)
        self.masked = BatchMask(self.feed or model)
        self.schedule: Schedule[Row] = Schedule(limits)
        self.generation = GenerationBatch.empty(self.masked, greedy_sampler)
        self.timing = StepTiming()
        self._steps = 0
        self.prefixes: PrefixStore | None = None  # set when the slot keeps a prefix cache
        self.captured: list[PrefixEntry] = []  # since the last report

    @property
    def has_work(self) -> bool:
        return self.schedule.has_work

    @property
    def prefilling(self) -> list[Row]:
        return self.schedule.prefilling

    @property
    def decoding(self) -> dict[int, Row]:
        """The decoding rows by uid (the generation batch's key)."""
        return {row.uid: row for row in self.schedule.decoding.values()}

    def add(self, row: Row) -> None:
        self.schedule.add(row)

    def remove(self, request_id: str, finish: Callable[[Row], Finish]) -> list[tuple[str, Event]]:
        """Take a request out wherever it is, freeing its caches now."""
        removed = self.schedule.remove(request_id)
        if removed is None:
            return []
        if removed.place == "prefilling":
            removed.group.state.filter([i for i in range(len(removed.group.rows) + 1) if i != removed.index])
        elif removed.place == "decoding":
            self._filter_generation({removed.row.uid})
        return [(request_id, finish(removed.row))]

    def remove_all(self, finish: Callable[[Row], Finish]) -> list[tuple[str, Event]]:
        rows = self.schedule.clear()
        self.generation = GenerationBatch.empty(self.masked, greedy_sampler)
        mx.clear_cache()
        return [(row.request_id, finish(row)) for row in rows]

    def step(self) -> list[tuple[str, Event]]:
        """The schedule's next step: one decode step of the generation batch, then one prefill turn."""
        events: list[tuple[str, Event]] = []
        step = self.schedule.next_step()
        for group in step.started:
            self._start_group(group, events)
        if step.decode:
            self._decode(events)
        if step.group is not None and step.group in self.schedule.groups:
            self._prefill(step, events)
        return events

    def _decode(self, events: list[tuple[str, Event]]) -> None:
        started = time.perf_counter()
        decoding = self.decoding
        try:
            with self.masked.stepping([decoding[uid].grammar for uid in self.generation.uids]):
                responses = self.generation.next()
        except Exception as exc:
            self._fail(self.schedule.drop_decoding(), "generation_error", exc, events)
            self.generation = GenerationBatch.empty(self.masked, greedy_sampler)
            mx.clear_cache()
            return
        self.timing.decode_seconds += time.perf_counter() - started
        self.timing.decode_tokens += len(responses)
        leaving: set[int] = set()
        for response in responses:
            row = decoding[response.uid]
            ended = False
            if row.guard.error is None:
                try:
                    ended = self._emit(row, response, events)
                except Exception as exc:  # the request's own detokenizer or splitter
                    row.guard.error = exc
            if row.guard.error is not None:
                events.append((row.request_id, row.finish(FinishReason.ERROR, "generation_error",
                                                          _describe(row.guard.error))))
                ended = True
            if ended:
                leaving.add(row.uid)
        finished_by_batch = {r.uid for r in responses if r.finish_reason is not None}  # the batch dropped them
        self._filter_generation(leaving - finished_by_batch)
        self.schedule.finish(decoding[uid].request_id for uid in leaving | finished_by_batch)
        self._steps += 1
        if self._steps % CLEAR_CACHE_EVERY_STEPS == 0:
            mx.clear_cache()

    def _emit(self, row: Row, response: GenerationBatch.Response, events: list[tuple[str, Event]]) -> bool:
        """Detokenize and split one token; True when the request has ended."""
        token, finish_reason = response.token, response.finish_reason
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
        ended = splitter.is_stopped or finish_reason in ("stop", "length")
        if ended:
            content += splitter.finish()  # a call still open closes (gemma's arguments are converted then)
        logprobs = () if row.logprobs is None else _logprobs(row, response, content, reasoning)
        events.append((row.request_id, Delta(content, reasoning, 1, logprobs=logprobs,
                                             tool_calls=splitter.take_tool_calls())))
        if splitter.is_stopped or finish_reason == "stop":
            reason = FinishReason.TOOL_CALLS if splitter.num_tool_calls else FinishReason.STOP
            events.append((row.request_id, row.finish(reason)))
            return True
        if finish_reason == "length":
            events.append((row.request_id, row.finish(FinishReason.LENGTH)))
            return True
        return False

    def _filter_generation(self, uids: set[int]) -> None:
        if uids:
            self.generation.filter([i for i, uid in enumerate(self.generation.uids) if uid not in uids])

    def _prefill(self, step: Step[Row], events: list[tuple[str, Event]]) -> None:
        group, chunk = step.group, self.limits.chunk_tokens
        started = time.perf_counter()
        try:
            if step.has_chunk:
                spans = [group.chunk_span(row, chunk) for row in group.rows]
                tokens = [row.prompt[row.cached_tokens + start:row.cached_tokens + end]
                          for row, (start, end) in zip(group.rows, spans)]
                with self._feeding(group.rows, spans):
                    group.state.prompt(tokens)
                self.timing.prefill_tokens += sum(len(row_tokens) for row_tokens in tokens)
            if step.joins:
                self._join(group)
            self.schedule.advance(group)
        except Exception as exc:
            self._fail(self.schedule.drop_group(group), "prefill_error", exc, events)
            mx.clear_cache()
        self.timing.prefill_seconds += time.perf_counter() - started

    def _feeding(self, rows: list[Row], spans: list[tuple[int, int]]):
        """The image features of this chunk's soft tokens, per row (a no-op for a model without vision)."""
        if self.feed is None:
            return contextlib.nullcontext()
        return self.feed.feeding([None if row.images is None else row.images.chunk(*span)
                                  for row, span in zip(rows, spans)])

    def _start_group(self, group: PrefillGroup[Row], events: list[tuple[str, Event]]) -> None:
        """The group's caches, empty until its first chunk."""
        rows = group.rows
        try:
            group.state = PromptProcessingBatch(
                self.masked, [row.uid for row in rows], [row.reused or make_prompt_cache(self.model) for row in rows],
                prefill_step_size=self.limits.chunk_tokens, samplers=[row.sampler for row in rows],
                fallback_sampler=greedy_sampler, logits_processors=[row.processors for row in rows],
                stop_sequences=[row.stop for row in rows], max_tokens=[row.max_tokens for row in rows],
            )
        except Exception as exc:
            self._fail(self.schedule.drop_group(group), "prefill_error", exc, events)
        for row in rows:
            row.reused = None  # merged into the group's own arrays

    def _join(self, group: PrefillGroup[Row]) -> None:
        """The group's first decode step (its last prompt tokens), then into the generation batch."""
        self._capture(group)
        with self.masked.stepping([row.grammar for row in group.rows]):
            generation = group.state.generate([[row.prompt[-1]] for row in group.rows])
        self.generation.extend(generation)
        for row in group.rows:
            row.images = None  # its features are in the caches now

    def _capture(self, group: PrefillGroup[Row]) -> None:
        """Keep each cacheable row's KV at the end of its prompt (all of it but the last token)."""
        if self.prefixes is None:
            return
        for index, row in enumerate(group.rows):
            if row.is_cacheable and len(row.prompt) > 1:
                self.captured.append(self.prefixes.capture(group.state, index, row.prompt[:-1], row.prefix_chain))

    def take_captured(self) -> list[PrefixEntry]:
        captured, self.captured = self.captured, []
        return captured

    def _fail(self, rows: list[Row], code: str, exc: BaseException, events: list[tuple[str, Event]]) -> None:
        message = _describe(exc)
        events.extend((row.request_id, row.finish(FinishReason.ERROR, code, message)) for row in rows)

    def used_bytes(self) -> int:
        groups = self.schedule.groups
        caches = [*self.generation.prompt_cache, *(c for group in groups for c in group.state.prompt_cache)]
        return sum(cache.nbytes for cache in caches)

    def batch_kv(self) -> BatchKV:
        """The generation batch's caches as the KV tracker's integers (read from the real caches)."""
        decoding = self.decoding
        rows = [decoding[uid] for uid in self.generation.uids]
        state = BatchKV(self.spec, [row.request_id for row in rows], [len(t) for t in self.generation.tokens])
        state.full, state.sliding = batch_shapes(self.generation.prompt_cache, window=self.spec.sliding_window)
        return state


def _logprobs(row: Row, response: GenerationBatch.Response, content: str, reasoning: str) -> tuple:
    """The entries of the tokens this step showed as content (an eos or a special token is never one)."""
    is_candidate = response.finish_reason != "stop" and response.token not in row.markup_ids
    entry = row.logprobs.entry(response.logprobs, response.token) if is_candidate else None
    splitter = row.splitter
    return row.logprobs.settle(entry, has_content=bool(content),
                               is_decided=bool(reasoning) or splitter.ended_marker or splitter.is_stopped)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
