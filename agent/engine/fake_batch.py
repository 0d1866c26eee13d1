"""One model's simulated continuous batch (the fake engine's backend, per model).

It follows the real batcher's schedule step for step: a decode step of every decoding row, then one
prefill chunk of a group of prompts with the same chunk count, the group joining the batch after its
last chunk. The KV bytes come from the same integer replay the ledger uses, so they are the bytes
mlx-lm would hold for that schedule.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.catalog import ModelSpec
from agent.engine.backend import Deliver, Job, StepReport
from agent.engine.batch_kv import MAX_PREFILL_GROUPS, MAX_PREFILL_ROWS, BatchKV, pick_prefill_group, prefill_chunks
from agent.engine.fake_script import FakeTiming, script_tokens
from agent.engine.types import Delta, Event, Finish, FinishReason, Usage
from agent.kvcost import PREFILL_CHUNK_TOKENS, SequenceKV, engine_updates
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
    is_ready: bool = True  # False while a scripted first-token delay runs

    @property
    def request_id(self) -> str:
        return self.job.request.request_id

    @property
    def prompt_tokens(self) -> int:
        return self.job.prompt.num_tokens

    def finish(self, reason: FinishReason, code: str | None = None, message: str | None = None) -> Finish:
        return Finish(reason, Usage(self.prompt_tokens, self.generated), code, message)


@dataclass(slots=True, eq=False)
class _Group:
    rows: list[FakeRow]
    updates: deque[int]  # prefill chunks, then 1 (the first decode step, as it joins)
    replay: SequenceKV


class FakeBatch:
    def __init__(self, model: str, spec: ModelSpec, timing: FakeTiming, sleep: Callable[[float], Awaitable[None]],
                 deliver: Deliver, chunk: int = PREFILL_CHUNK_TOKENS) -> None:
        self.model, self.spec, self.timing, self.sleep, self.deliver = model, spec, timing, sleep, deliver
        self.chunk = chunk
        self.waiting: deque[FakeRow] = deque()
        self.groups: list[_Group] = []
        self._prefill_turns = 0
        self.decoding: dict[str, FakeRow] = {}
        self.batch = BatchKV(spec)
        self._task: asyncio.Task | None = None
        self._delays = TaskSet(f"fake-batch-{model}")  # scripted first-token delays

    def insert(self, job: Job) -> None:
        script, seed = job.prompt.payload
        reasoning, content = script_tokens(script, seed)
        row = FakeRow(job, reasoning, content, script.fail_after_tokens, script.error,
                      is_ready=script.first_token_delay_s <= 0)
        self.waiting.append(row)
        if not row.is_ready:
            self._delays.spawn(self._ready_after(row, script.first_token_delay_s), name=f"delay-{row.request_id}")
        self._wake()

    async def _ready_after(self, row: FakeRow, delay: float) -> None:
        await self.sleep(delay)
        row.is_ready = True
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
        rows = [*self.waiting, *(row for group in self.groups for row in group.rows), *self.decoding.values()]
        self.waiting.clear()
        self.groups, self.decoding, self.batch = [], {}, BatchKV(self.spec)
        self.deliver(self._report([(row.request_id, row.finish(FinishReason.CANCELLED, code, message))
                                   for row in rows]))

    def _take(self, request_id: str) -> FakeRow | None:
        for row in self.waiting:
            if row.request_id == request_id:
                self.waiting.remove(row)
                return row
        for group in self.groups:
            for row in group.rows:
                if row.request_id == request_id:
                    group.rows.remove(row)
                    if not group.rows:
                        self.groups.remove(group)
                    return row
        row = self.decoding.pop(request_id, None)
        if row is not None:
            self.batch.leave({request_id})
        return row

    def _wake(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"fake-batch-{self.model}")

    async def _run(self) -> None:
        while self.decoding or self.groups or any(row.is_ready for row in self.waiting):
            events: list[tuple[str, Event]] = []
            decode = await self._decode(events) if self.decoding else 0.0
            prefill_tokens, prefill_seconds = await self._prefill()
            self.deliver(self._report(events, prefill_tokens, prefill_seconds, decode))

    async def _decode(self, events: list[tuple[str, Event]]) -> float:
        seconds = self.timing.step_seconds(len(self.decoding))
        await self.sleep(seconds)
        self.batch.step(1)
        leaving = set()
        for request_id in list(self.batch.ids):
            row = self.decoding[request_id]
            finish = self._next_token(row, events)
            if finish is not None:
                events.append((request_id, finish))
                leaving.add(request_id)
        for request_id in leaving:
            del self.decoding[request_id]
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

    async def _prefill(self) -> tuple[int, float]:
        while len(self.groups) < MAX_PREFILL_GROUPS and self._start_group():
            pass
        if not self.groups:
            return 0, 0.0
        self._prefill_turns += 1
        group = self.groups[pick_prefill_group([len(g.updates) - 1 for g in self.groups], self._prefill_turns)]
        tokens = 0
        if len(group.updates) > 1:  # one chunk per turn; the last update is the first decode step
            tokens = group.updates.popleft() * len(group.rows)
            group.replay.update(tokens // len(group.rows))
        seconds = tokens / self.timing.prefill_tps
        if len(group.updates) == 1:
            seconds += self.timing.step_seconds(len(group.rows))
            joined, _ = BatchKV.prefilled(self.spec, [r.request_id for r in group.rows],
                                          [r.prompt_tokens for r in group.rows], self.chunk)
            self.batch.join(joined)
            self.decoding.update((row.request_id, row) for row in group.rows)
            self.groups.remove(group)
        await self.sleep(seconds)
        return tokens, seconds

    def _start_group(self) -> bool:
        ready = [row for row in self.waiting if row.is_ready]
        if not ready:
            return False
        chunks = prefill_chunks(ready[0].prompt_tokens, self.chunk)
        rows = [row for row in ready if prefill_chunks(row.prompt_tokens, self.chunk) == chunks][:MAX_PREFILL_ROWS]
        for row in rows:
            self.waiting.remove(row)
        longest = max(row.prompt_tokens for row in rows)
        updates = deque(engine_updates(longest, longest, self.chunk))
        self.groups.append(_Group(rows, updates, SequenceKV(self.spec, len(rows))))
        return True

    def _report(self, events: list[tuple[str, Event]], prefill_tokens: int = 0, prefill_seconds: float = 0.0,
                decode_seconds: float = 0.0) -> StepReport:
        used = self.batch.nbytes + sum(group.replay.nbytes for group in self.groups)
        decode_tokens = sum(1 for _, event in events if isinstance(event, Delta))
        return StepReport(self.model, events, used, self.batch.copy(), prefill_tokens, prefill_seconds,
                          decode_tokens, decode_seconds)
