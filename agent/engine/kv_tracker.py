"""A slot's live KV tracker: what admitted requests will need, what the caches really hold.

    budget      the slot's KV budget from the load gate
    reserved    the most the admitted rows will hold together, running the real batch forward until
                each row has produced its expected output (padding to the longest row included)
    used        the bytes the caches really hold now, reconciled from the engine after every step
    cached      the prefix cache's entries (agent/engine/prefix_index.py): held beside the rows, and
                evictable: admission evicts least recently used unpinned entries before it refuses,
                and entries that no longer fit beside the rows are evicted when the rows grow

Every request passes `agent.admission.admit_request` against these numbers before it may enter the
batch (`check`, then `admit` commits). A row that outgrows its expected output is expected to run as
long again (up to max_tokens), and when the rows' expected peak no longer fits the budget the
expected-output ratio is raised: admission stops rather than a stream being evicted.

Pure: no MLX. The real and the fake engine both keep one per loaded slot.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import structlog

from agent.admission import AdmissionDecision, SlotKV, Verdict, admit_request, expected_output_tokens, reservation_bytes
from agent.catalog import ModelSpec
from agent.engine.batch_kv import BatchKV, PendingRow, predicted_peak_bytes
from agent.engine.prefix_index import PrefixEntry, PrefixIndex, PrefixMatch
from agent.engine.ratio import OutputRatio
from agent.engine.schedule import ScheduleLimits
from agent.kvcost import prefix_entry_bytes

log = structlog.get_logger(__name__)

RECOMPUTE_EVERY_REPORTS = 16  # the predicted peak only falls as rows advance; refresh it now and then


@dataclass(slots=True)
class TrackedRow:
    request_id: str
    prompt_tokens: int
    max_tokens: int
    expected_output_tokens: int
    generated_tokens: int = 0

    def outgrow(self, cached_tokens: int) -> bool:
        """A row that outgrows its expected output is expected to run as long again, up to max_tokens."""
        done = max(self.generated_tokens, cached_tokens - self.prompt_tokens)
        grown = self.expected_output_tokens
        while grown <= done and grown < self.max_tokens:
            grown = min(self.max_tokens, 2 * grown)
        changed, self.expected_output_tokens = grown != self.expected_output_tokens, grown
        return changed

    def end_tokens(self, cached_tokens: int | None = None) -> int:
        """Tokens its caches will hold when it is expected to finish (at least one more than now)."""
        done = self.generated_tokens if cached_tokens is None else cached_tokens - self.prompt_tokens
        return self.prompt_tokens + max(self.expected_output_tokens, done + 1)


class KVTracker:
    def __init__(
        self,
        spec: ModelSpec,
        budget_bytes: int,
        *,
        safety_margin_bytes: int = 0,
        ratio: OutputRatio | None = None,
        max_num_seqs: int | None = None,  # the engine passes its EngineConfig's; None: no row limit
        schedule: ScheduleLimits = ScheduleLimits(),  # the engine's, so the replay groups and chunks as it does
        max_prefix_cache_bytes: int = 0,  # the prefix cache's limit (0: none kept)
        max_prefix_cache_entries: int = 256,
        max_reported_prefix_chains: int = 64,
    ) -> None:
        self.spec = spec
        self.budget_bytes = budget_bytes
        self.safety_margin_bytes = safety_margin_bytes
        self.ratio = ratio or OutputRatio(model=spec.id)
        self.max_num_seqs = max_num_seqs
        self.schedule = schedule
        self.chunk = schedule.chunk_tokens
        self.rows: dict[str, TrackedRow] = {}
        self.batch = BatchKV(spec)
        self.used_bytes = 0
        self.is_overcommitted = False
        self._reserved: int | None = 0
        self._reports_since_compute = 0
        self.prefixes = PrefixIndex(max_prefix_cache_bytes, max_prefix_cache_entries,
                                    max_reported_chains=max_reported_prefix_chains)
        self.evicted: list[int] = []  # entries dropped from the index, for the engine to drop on the MLX thread

    def keeps_prefix(self, prompt_tokens: int, cached_tokens: int = 0) -> bool:
        """Whether a prompt's KV would fit the prefix cache's limit once captured: a capture copies the
        prompt's KV on the MLX thread, so one that would be dropped at once is not made."""
        limit = self.prefixes.max_bytes
        return limit > 0 and prefix_entry_bytes(self.spec, prompt_tokens, self.chunk, cached_tokens) <= limit

    @property
    def reserved_bytes(self) -> int:
        if self._reserved is None:
            self._reserved = self._predict()
            self._reports_since_compute = 0
        return self._reserved

    @property
    def longest_row_end_tokens(self) -> int:
        """The tokens the longest admitted row is expected to hold when it ends: a new row is padded to it
        while they share the batch, which the coordinator, seeing no rows, must count too."""
        cached = dict(zip(self.batch.ids, self.batch.tokens))
        return max((row.end_tokens(cached.get(row.request_id)) for row in self.rows.values()), default=0)

    def slot_kv(self) -> SlotKV:
        return SlotKV(self.budget_bytes, self.reserved_bytes, self.used_bytes, self.safety_margin_bytes,
                      self.prefixes.cached_bytes)

    def check(self, request_id: str, prompt_tokens: int, max_tokens: int, *,
              as_evicted: bool = False) -> AdmissionDecision:
        """What admission says about this request now; commits nothing. `as_evicted`: as if every unpinned
        prefix were evicted, which `admit` would do before refusing."""
        cached = self.prefixes.cached_bytes - (self.prefixes.evictable_bytes if as_evicted else 0)
        ratio = self.ratio.value
        expected = expected_output_tokens(max_tokens, ratio, self.ratio.clip)
        if self.max_num_seqs is not None and len(self.rows) >= self.max_num_seqs:
            return AdmissionDecision(Verdict.FULL, f"{self.spec.id} is running its limit of {self.max_num_seqs} "
                                     f"requests", 0, expected, self.slot_kv().free_bytes)
        candidate = PendingRow(request_id, prompt_tokens, prompt_tokens + expected)
        with_candidate = self._predict(candidate)
        pad = max(self.batch.tokens, default=0)
        own = reservation_bytes(self.spec, prompt_tokens, expected, pad_to_tokens=pad, chunk=self.chunk)
        # admit_request checks own <= budget - margin - max(reserved, used); with the others' reservation
        # taken as (peak with the candidate - own), that is: the batch's peak with it must fit, and so
        # must its own row beside what the caches really hold now.
        slot = SlotKV(self.budget_bytes, max(0, with_candidate - own), self.used_bytes, self.safety_margin_bytes,
                      cached)
        decision = admit_request(self.spec, slot, prompt_tokens=prompt_tokens, max_tokens=max_tokens, ratio=ratio,
                                 clip=self.ratio.clip, pad_to_tokens=pad, chunk=self.chunk)
        unpadded = reservation_bytes(self.spec, prompt_tokens, expected, chunk=self.chunk)
        if decision.verdict is Verdict.FULL and own > unpadded:
            decision = replace(decision, reason=f"{decision.reason} (its row is padded to the batch's longest row, "
                                                f"{pad} tokens)")
        return decision

    def admit(self, request_id: str, prompt_tokens: int, max_tokens: int,
              reuse: PrefixMatch | None = None) -> AdmissionDecision:
        """Admit if it fits, evicting cached prefixes (least recently used, never a pinned one) before refusing.

        The entry `reuse` names is pinned first, so making room never takes the prefix this request starts from.
        """
        if reuse is not None:
            self.prefixes.pin(request_id, reuse)
        decision = self.check(request_id, prompt_tokens, max_tokens)
        while decision.verdict is Verdict.FULL and not self._at_row_limit and (freed := self.prefixes.evict(1)):
            self.evicted += freed
            decision = self.check(request_id, prompt_tokens, max_tokens)
        if decision.admitted:
            self.rows[request_id] = TrackedRow(request_id, prompt_tokens, max_tokens, decision.expected_output_tokens)
            self._reserved = None
            if reuse is not None:
                self.prefixes.count_hit(reuse)
        else:
            self.prefixes.unpin(request_id)
        return decision

    @property
    def _at_row_limit(self) -> bool:
        return self.max_num_seqs is not None and len(self.rows) >= self.max_num_seqs

    def add_prefixes(self, entries: list[PrefixEntry]) -> None:
        """Prefixes the engine captured: kept within the cache's limit and beside what the rows need."""
        for entry in entries:
            self.evicted += self.prefixes.add(entry)
        self._fit_prefixes()

    def take_evicted(self) -> list[int]:
        evicted, self.evicted = self.evicted, []
        return evicted

    def _fit_prefixes(self) -> None:
        """Evict what no longer fits beside the rows: the rows' room comes first."""
        over = -self.slot_kv().free_bytes
        if over > 0:
            self.evicted += self.prefixes.evict(over)

    def progress(self, request_id: str, num_tokens: int) -> None:
        row = self.rows.get(request_id)
        if row is not None:
            row.generated_tokens += num_tokens

    def release(self, request_id: str, *, observed: bool, completion_tokens: int = 0) -> None:
        """A request left the slot; `observed` if its length says something (finished by stop or length)."""
        self.prefixes.unpin(request_id)
        row = self.rows.pop(request_id, None)
        if row is None:
            return
        self._reserved = None
        if observed:
            self.ratio.observe(completion_tokens, row.max_tokens)

    def reconcile(self, used_bytes: int, batch: BatchKV) -> None:
        """The engine's real state after a step: cache bytes and the generation batch's shape."""
        changed = batch.ids != self.batch.ids
        self.used_bytes, self.batch = used_bytes, batch
        self._reports_since_compute += 1
        if changed or self._reports_since_compute >= RECOMPUTE_EVERY_REPORTS or self._outgrown():
            self._reserved = None
        self._fit_prefixes()
        self._check_overcommit()

    def set_budget(self, budget_bytes: int) -> None:
        """A new share of the machine's KV room: a smaller one stops admission, it says nothing of outputs."""
        self.budget_bytes = budget_bytes
        self._fit_prefixes()
        limit = budget_bytes - self.safety_margin_bytes
        self.is_overcommitted = max(self.reserved_bytes, self.used_bytes) > limit

    def _check_overcommit(self) -> None:
        limit = self.budget_bytes - self.safety_margin_bytes
        short = max(self.reserved_bytes, self.used_bytes) > limit
        if short and not self.is_overcommitted:
            log.warning("kv.short", model=self.spec.id, reserved_bytes=self.reserved_bytes, used_bytes=self.used_bytes,
                        limit_bytes=limit)
            self.ratio.raise_for_memory()
        self.is_overcommitted = short

    def _outgrown(self) -> bool:
        rows = self.rows
        changed = False
        for row_id, tokens in zip(self.batch.ids, self.batch.tokens):
            row = rows.get(row_id)
            if row is not None and tokens >= row.prompt_tokens + row.expected_output_tokens:
                changed |= row.outgrow(tokens)
        return changed

    def _predict(self, candidate: PendingRow | None = None) -> int:
        cached = dict(zip(self.batch.ids, self.batch.tokens))
        ends: dict[str, int] = {}
        pending: list[PendingRow] = []
        for row in self.rows.values():
            if row.request_id in cached:
                ends[row.request_id] = row.end_tokens(cached[row.request_id])
            else:
                pending.append(PendingRow(row.request_id, row.prompt_tokens, row.end_tokens()))
        if candidate is not None:
            pending.append(candidate)
        return predicted_peak_bytes(self.batch, ends, pending, self.schedule)
