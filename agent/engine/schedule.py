"""The schedule of one model's continuous batch: which prompts prefill together and what each step does.

Both backends run this one object: the MLX batcher does each `Step` on tensors, the fake batch
sleeps for it. It holds the backend's rows (anything with `request_id` and `prompt_tokens`) and
decides only; no MLX, no asyncio, no clock. The rules:

- A prefill group takes the oldest waiting prompt and every later one that needs the same number of
  chunks, up to `max_prefill_rows`, so a group is never padded by more than one partial chunk.
- At most `max_prefill_groups` groups are in flight (each holds caches from its first chunk).
- A step is a decode step of every decoding row, then one turn of one group: the group with the
  fewest chunks left, so a short prompt is not stuck behind a long one, except every
  `oldest_every`-th turn, which goes to the oldest, so a long prompt still advances.
- A turn prefills one chunk; on its last chunk (or at once, for a one-token prompt) the group's first
  decode step feeds each row's last prompt token and the group joins the decoding rows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from agent.kvcost import PREFILL_CHUNK_TOKENS


class ScheduledRow(Protocol):
    @property
    def request_id(self) -> str: ...

    @property
    def prompt_tokens(self) -> int: ...


R = TypeVar("R", bound=ScheduledRow)


@dataclass(frozen=True, slots=True)
class ScheduleLimits:
    """The schedule's settings: the one place each of them is written."""

    chunk_tokens: int = PREFILL_CHUNK_TOKENS  # prompt tokens per row per prefill turn
    max_prefill_rows: int = 8  # rows prefilled together (all with the same number of chunks)
    max_prefill_groups: int = 4  # groups in flight
    oldest_every: int = 4  # every n-th prefill turn goes to the oldest group

    def __post_init__(self) -> None:
        for name in ("chunk_tokens", "max_prefill_rows", "max_prefill_groups", "oldest_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"ScheduleLimits.{name} must be at least 1, got {getattr(self, name)}")


def prefill_chunks(prompt_tokens: int, chunk: int = PREFILL_CHUNK_TOKENS) -> int:
    """How many prefill turns a prompt takes (its last token is fed by the first decode step)."""
    return -(-(prompt_tokens - 1) // chunk)


def pick_prefill_group(chunks_left: Sequence[int], turn: int, oldest_every: int = 4) -> int:
    """Which group (oldest first) gets turn number `turn` (from 1): the fewest chunks left, or the oldest."""
    if turn % oldest_every == 0:
        return 0
    return min(range(len(chunks_left)), key=chunks_left.__getitem__)


def take_group(waiting: list[R] | deque[R], limits: ScheduleLimits) -> list[R]:
    """Remove from `waiting` (oldest first) and return the rows of the next prefill group."""
    if not waiting:
        return []
    chunks = prefill_chunks(waiting[0].prompt_tokens, limits.chunk_tokens)
    rows = [row for row in waiting if prefill_chunks(row.prompt_tokens, limits.chunk_tokens) == chunks]
    rows = rows[: limits.max_prefill_rows]
    for row in rows:
        waiting.remove(row)
    return rows


def form_groups(rows: Iterable[R], limits: ScheduleLimits) -> list[list[R]]:
    """Every group `rows` would be prefilled in, in order, were they all waiting now."""
    waiting, groups = list(rows), []
    while waiting:
        groups.append(take_group(waiting, limits))
    return groups


@dataclass(slots=True, eq=False)
class PrefillGroup(Generic[R]):
    rows: list[R]
    num_chunks: int
    chunks_done: int = 0
    state: Any = None  # the backend's own: mlx-lm's PromptProcessingBatch, or the fake's KV replay

    @property
    def chunks_left(self) -> int:
        return self.num_chunks - self.chunks_done

    def chunk_span(self, row: R, chunk: int) -> tuple[int, int]:
        """The slice of `row`'s prompt tokens this group's next chunk feeds."""
        start = self.chunks_done * chunk
        return start, max(start, min(start + chunk, row.prompt_tokens - 1))


@dataclass(frozen=True, slots=True)
class Step(Generic[R]):
    """What the next step does, in this order."""

    decode: bool  # a decode step of every decoding row
    started: tuple[PrefillGroup[R], ...]  # groups formed for this step: the backend makes their caches
    group: PrefillGroup[R] | None  # the group that gets this step's prefill turn

    @property
    def has_chunk(self) -> bool:
        return self.group is not None and self.group.chunks_left > 0

    @property
    def joins(self) -> bool:
        """The turn ends the group's prefill: its first decode step, then into the decoding rows."""
        return self.group is not None and self.group.chunks_left <= 1


@dataclass(frozen=True, slots=True)
class Removed(Generic[R]):
    row: R
    place: Literal["waiting", "prefilling", "decoding"]
    group: PrefillGroup[R] | None = None  # when prefilling: the group it left (maybe now empty)
    index: int = -1  # when prefilling: its index in the group before it left


@dataclass(slots=True)
class Schedule(Generic[R]):
    limits: ScheduleLimits = field(default_factory=ScheduleLimits)
    waiting: deque[R] = field(default_factory=deque)
    groups: list[PrefillGroup[R]] = field(default_factory=list)
    decoding: dict[str, R] = field(default_factory=dict)  # by request_id, in the order they joined
    num_turns: int = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.groups or self.decoding)

    @property
    def prefilling(self) -> list[R]:
        return [row for group in self.groups for row in group.rows]

    def add(self, row: R) -> None:
        self.waiting.append(row)

    def next_step(self) -> Step[R]:
        """Form the groups there is room for and pick this step's prefill turn (a turn is counted once per call)."""
        started = []
        while self.waiting and len(self.groups) < self.limits.max_prefill_groups:
            rows = take_group(self.waiting, self.limits)
            started.append(PrefillGroup(rows, prefill_chunks(rows[0].prompt_tokens, self.limits.chunk_tokens)))
            self.groups.append(started[-1])
        group = None
        if self.groups:
            self.num_turns += 1
            chunks_left = [g.chunks_left for g in self.groups]
            group = self.groups[pick_prefill_group(chunks_left, self.num_turns, self.limits.oldest_every)]
        return Step(bool(self.decoding), tuple(started), group)

    def advance(self, group: PrefillGroup[R]) -> bool:
        """The backend ran `group`'s turn; True when the group joined the decoding rows."""
        if group.chunks_left > 0:
            group.chunks_done += 1
        if group.chunks_left > 0:
            return False
        self.groups.remove(group)
        self.decoding.update((row.request_id, row) for row in group.rows)
        return True

    def finish(self, request_ids: Iterable[str]) -> None:
        """Decoding rows that ended."""
        for request_id in request_ids:
            self.decoding.pop(request_id, None)

    def remove(self, request_id: str) -> Removed[R] | None:
        """Take a request out wherever it is (None: not here)."""
        for row in self.waiting:
            if row.request_id == request_id:
                self.waiting.remove(row)
                return Removed(row, "waiting")
        for group in self.groups:
            for index, row in enumerate(group.rows):
                if row.request_id == request_id:
                    del group.rows[index]
                    if not group.rows:
                        self.groups.remove(group)
                    return Removed(row, "prefilling", group, index)
        row = self.decoding.pop(request_id, None)
        return None if row is None else Removed(row, "decoding")

    def drop_group(self, group: PrefillGroup[R]) -> list[R]:
        """A group whose prefill failed: its rows leave the schedule."""
        if group in self.groups:
            self.groups.remove(group)
        return list(group.rows)

    def drop_decoding(self) -> list[R]:
        """A decode step that failed: every decoding row leaves."""
        rows, self.decoding = list(self.decoding.values()), {}
        return rows

    def clear(self) -> list[R]:
        """Every row, which all leave: waiting, then prefilling, then decoding."""
        rows = [*self.waiting, *self.prefilling, *self.decoding.values()]
        self.waiting.clear()
        self.groups, self.decoding = [], {}
        return rows
