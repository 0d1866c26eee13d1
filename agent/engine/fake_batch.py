"""One model's simulated continuous batch (the fake engine's backend, per model).

It runs the real batcher's schedule (agent/engine/schedule.py, the same object) and sleeps for each
step as its `FakeTiming` says: a decode step of every decoding row, then one prefill turn. The KV
bytes come from the same integer replay the KV tracker uses, so they are the bytes mlx-lm would hold for
that schedule. A row with a scripted first-token delay waits outside the schedule until it is ready.

A row that reuses a cached prefix (its job's `reuse`) prefills only the rest, as the real batcher's row
does; when a group joins the batch, each row whose job keeps its prefix is captured as a `PrefixEntry`
(the prompt's ids but the last, `kvcost.prefix_entry_bytes`, the request's chain key) for the slot's index.
While such a row prefills, its group's replay counts only the tokens it prefills, not the reused ones (the
real group merges the reused arrays), and once it joins it is counted as if its whole prompt were prefilled (the
sliding layers of a merged cache can differ from that by up to a window).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.catalog import ModelSpec
from agent.engine.backend import Deliver, Job, StepReport
from agent.engine.batch_kv import BatchKV
from agent.engine.fake_script import FakeTiming, script_tokens
from agent.engine.prefix_index import PrefixEntry
from agent.engine.schedule import Schedule, ScheduleLimits, Step
from agent.engine.types import Delta, Event, Finish, FinishReason, Usage
from agent.kvcost import SequenceKV, prefix_entry_bytes
from agent.tasks import TaskSet


@dataclass(slots=True, eq=False)
class FakeRow:
    job: Job
    reasoning: list[str]
    content: list[str]
    fail_after: int | None = None
    error: str = ""
    generated: int = 0
    text: str = ""  # content so far, for stop strings

    @property
    def request_id(self) -> str:
        return self.job.request.request_id

    @property
    def cached_tokens(self) -> int:
        return 0 if self.job.reuse is None else self.job.reuse.num_tokens

    @property
    def prompt_tokens(self) -> int:
        """The tokens it still has to prefill, as the schedule groups and chunks them."""
        return self.job.prompt.num_tokens - self.cached_tokens

    def finish(self, reason: FinishReason, code: str | None = None, message: str | None = None) -> Finish:
        return Finish(reason, Usage(self.job.prompt.num_tokens, self.generated, self.cached_tokens), code, message)


class FakeBatch:
    def __init__(self, model: str, spec: ModelSpec, timing: FakeTiming, sleep: Callable[[float], Awaitable[None]],
                 deliver: Deliver, limits: ScheduleLimits = ScheduleLimits()) -> None:
        self.model, self.spec, self.timing, self.sleep, self.deliver = model, spec, timing, sleep, deliver
        self.limits = limits
        self.schedule: Schedule[FakeRow] = Schedule(limits)  # a group's state: its KV replay (SequenceKV)
        self.delayed: list[FakeRow] = []  # rows whose scripted first-token delay still runs
        self.batch = BatchKV(spec)
        self._task: asyncio.Task | None = None
        self._delays = TaskSet(f"fake-batch-{model}")  # scripted first-token delays
        self.captured: list[PrefixEntry] = []  # prefixes kept since the last report
        self._next_entry_id = 0

    def insert(self, job: Job) -> None:
        script, seed, _ = job.prompt.payload
        reasoning, content = script_tokens(script, seed)
        row = FakeRow(job, reasoning, content, script.fail_after_tokens, script.error)
        if script.first_token_delay_s > 0:
            self.delayed.append(row)
            self._delays.spawn(self._ready_after(row, script.first_token_delay_s), name=f"delay-{row.request_id}")
            return
        self.schedule.add(row)
        self._wake()

    async def _ready_after(self, row: FakeRow, delay: float) -> None:
        await self.sleep(delay)
        if row in self.delayed:  # not cancelled meanwhile
            self.delayed.remove(row)
            self.schedule.add(row)
            self._wake()

    def cancel(self, request_id: str) -> None:
        row = self._take(request_id)
        if row is not None:
            report = self._report([(request_id, row.finish(FinishReason.CANCELLED))])
            asyncio.get_running_loop().call_soon(self.deliver, report)

    async def close(self, code: str, message: str) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._delays.close()
        rows = [*self.delayed, *self.schedule.clear()]
        self.delayed, self.batch = [], BatchKV(self.spec)
        self.deliver(self._report([(row.request_id, row.finish(FinishReason.CANCELLED, code, message))
                                   for row in rows]))

    def _take(self, request_id: str) -> FakeRow | None:
        for row in self.delayed:
            if row.request_id == request_id:
                self.delayed.remove(row)
                return row
        removed = self.schedule.remove(request_id)
        if removed is None:
            return None
        if removed.place == "prefilling":  # as the real group's filter: that row's caches go
            removed.group.state.batch_size = len(removed.group.rows)
        elif removed.place == "decoding":
            self.batch.leave({request_id})
        return removed.row

    def _wake(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"fake-batch-{self.model}")

    async def _run(self) -> None:
        while self.schedule.has_work:
            step = self.schedule.next_step()
            for group in step.started:
                group.state = SequenceKV(self.spec, len(group.rows))
            events: list[tuple[str, Event]] = []
            decode = await self._decode(events) if step.decode else 0.0
            prefill_tokens, prefill_seconds = await self._prefill(step)
            self.deliver(self._report(events, prefill_tokens, prefill_seconds, decode))

    async def _decode(self, events: list[tuple[str, Event]]) -> float:
        seconds = self.timing.step_seconds(len(self.schedule.decoding))
        await self.sleep(seconds)
        self.batch.step(1)
        leaving = set()
        for request_id in list(self.batch.ids):
            row = self.schedule.decoding[request_id]
            finish = self._next_token(row, events)
            if finish is not None:
                events.append((request_id, finish))
                leaving.add(request_id)
        self.schedule.finish(leaving)
        self.batch.leave(leaving)
        return seconds

    def _next_token(self, row: FakeRow, events: list[tuple[str, Event]]) -> Finish | None:
        if row.fail_after is not None and row.generated >= row.fail_after:
            return row.finish(FinishReason.ERROR, "generation_error", row.error)
        row.generated += 1
        index = row.generated - 1
        if index < len(row.reasoning):
            events.append((row.request_id, Delta("", row.reasoning[index], 1)))
        else:
            words = row.content or [" ok"]
            text = words[(index - len(row.reasoning)) % len(words)]
            stop = next((s for s in row.job.request.stop if s in row.text + text), None)
            if stop is not None:
                events.append((row.request_id, Delta((row.text + text).split(stop)[0][len(row.text):], "", 1)))
                return row.finish(FinishReason.STOP)
            row.text += text
            events.append((row.request_id, Delta(text, "", 1)))
        if row.generated >= row.job.max_tokens:
            return row.finish(FinishReason.LENGTH)
        if not row.job.request.ignore_eos and row.generated >= len(row.reasoning) + len(row.content):
            return row.finish(FinishReason.STOP)
        return None

    async def _prefill(self, step: Step[FakeRow]) -> tuple[int, float]:
        group = step.group
        if group is None or group not in self.schedule.groups:  # none, or all its rows cancelled meanwhile
            return 0, 0.0
        tokens = 0
        if step.has_chunk:  # every row's update is as wide as the longest row's (the rest is padding)
            longest = max(group.rows, key=lambda row: row.prompt_tokens)
            start, end = group.chunk_span(longest, self.limits.chunk_tokens)
            group.state.update(end - start)
            tokens = (end - start) * len(group.rows)
        seconds = tokens / self.timing.prefill_tps
        if step.joins:
            seconds += self.timing.step_seconds(len(group.rows))
            joined, _ = BatchKV.prefilled(self.spec, [r.request_id for r in group.rows],
                                          [r.job.prompt.num_tokens for r in group.rows], self.limits.chunk_tokens)
            self.batch.join(joined)
            self._capture(group.rows)
        self.schedule.advance(group)
        await self.sleep(seconds)
        return tokens, seconds

    def _capture(self, rows: list[FakeRow]) -> None:
        """Keep each row's prompt (all of it but the last token) whose job asked for it."""
        for row in rows:
            prompt = row.job.prompt
            if row.job.keep_prefix and len(prompt.token_ids) > 1:
                nbytes = prefix_entry_bytes(self.spec, prompt.num_tokens, self.limits.chunk_tokens, row.cached_tokens)
                self.captured.append(PrefixEntry(self._next_entry_id, prompt.token_ids[:-1], nbytes, 0,
                                                 chain=prompt.payload[2]))
                self._next_entry_id += 1

    def _report(self, events: list[tuple[str, Event]], prefill_tokens: int = 0, prefill_seconds: float = 0.0,
                decode_seconds: float = 0.0) -> StepReport:
        used = self.batch.nbytes + sum(group.state.nbytes for group in self.schedule.groups)
        decode_tokens = sum(1 for _, event in events if isinstance(event, Delta))
        captured, self.captured = self.captured, []
        return StepReport(self.model, events, used, self.batch.copy(), prefill_tokens, prefill_seconds,
                          decode_tokens, decode_seconds, captured)
