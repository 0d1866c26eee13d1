"""The pending sends: what this coordinator has sent to one provider's slot since its last heartbeat.

A heartbeat is a snapshot of the agent's KV tracker when the agent built it. The coordinator's view of
the slot is that snapshot, corrected for what has happened since, so that it runs `admit_request` on
the numbers the agent will hold when the next request arrives:

    reserved_view = heartbeat.kv_reserved_bytes
                    + Σ reservation of entries the heartbeat does not count yet   (sent since)
                    − Σ reservation of entries it counts that have ended since    (credits)
    rows_view     = heartbeat running + waiting + entries not counted yet − credits (load_delta: the credits
                    take back at most the rows the heartbeat reported)

Which entries a heartbeat counts follows from one fact: an agent sends every frame down one websocket,
in the order it built them, and builds `inference_accepted` after it has admitted the request. So a
heartbeat received AFTER a request's `inference_accepted` was built after the admission and counts the
request (or the request ended before it, and its `inference_complete`/`inference_error` arrived first
and removed the entry). On each heartbeat, every accepted entry is therefore marked as counted by it.

    sent (not counted) ──accepted──▶ accepted (not counted) ──heartbeat──▶ counted
         │                                  │                                 │
         └─rejected: removed         complete/error: removed      complete/error: a credit until the
                                                                  next heartbeat (which no longer counts it)

What the view can get wrong, and which way:
- a heartbeat built between the agent's admission and its `accepted` counts the request while the
  entry is still pending: counted twice, the view is briefly conservative;
- an entry not yet accepted is counted at the coordinator's reservation, computed on its prompt
  estimate and the batch rows it can see; once accepted, at the reservation the agent reports. The
  estimate is not a bound (mlx-lm's 256-token cache steps make a shorter prompt reserve more now and
  then), and rows may have grown meanwhile, so for that moment the view can be off either way: the
  agent's answer is final, and a "full" refusal keeps the slot out until its next heartbeat;
- an entry the coordinator gave up on (client gone, timeout) keeps counting until the agent says it
  ended, or `cancel_grace_s` after the cancel.
tests/test_coordinator_agreement.py drives a simulated agent and a real router through FIFO links and
checks both: never less than the agent will hold in flight (given exact prompt counts and no batch
growth), and exactly the agent's numbers once the links are quiet; tests/test_coordinator_agreement_kv_tracker.py
compares the decisions placement takes on that view with the real engine KV tracker's.

Pure and synchronous; the router owns one per (provider, model).

Public names: PendingSends, PendingEntry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from agent.admission import SlotKV


@dataclass(slots=True)
class PendingEntry:
    request_id: str
    prompt_tokens: int
    expected_output_tokens: int
    reservation_bytes: int
    is_accepted: bool = False
    is_counted: bool = False  # the last heartbeat includes it
    num_chunks: int = 0
    abandoned_at: float | None = None  # the coordinator sent cancel at this time

    @property
    def tokens_now(self) -> int:
        """Its row's length in the agent's batch, as far as the coordinator can tell."""
        return self.prompt_tokens + self.num_chunks


@dataclass(slots=True)
class PendingSends:
    entries: dict[str, PendingEntry] = field(default_factory=dict)
    credits: dict[str, int] = field(default_factory=dict)  # ended, still counted by the last heartbeat
    seq: int = -1  # of the last heartbeat
    full_until_seq: int = -2  # the agent refused a request as full at this heartbeat seq
    on_change: Callable[[], None] | None = None  # told when load_delta may change (the router's warm_index.py)

    # -- reading
    def __contains__(self, request_id: str) -> bool:
        return request_id in self.entries

    def get(self, request_id: str) -> PendingEntry | None:
        return self.entries.get(request_id)

    @property
    def pending_bytes(self) -> int:
        return sum(e.reservation_bytes for e in self.entries.values() if not e.is_counted)

    @property
    def credit_bytes(self) -> int:
        return sum(self.credits.values())

    @property
    def num_in_flight(self) -> int:
        return len(self.entries)

    def load_delta(self, reported_rows: int) -> int:
        """Requests to add to a heartbeat's running + waiting (`reported_rows`): every send it has not counted,
        less the ended ones it did count. Those credits never take back more rows than it reported, so a
        heartbeat saying fewer rows than it had (a peer's bug or a lie) hides no send made after it."""
        return self.num_uncounted - min(len(self.credits), reported_rows)

    @property
    def num_uncounted(self) -> int:
        """Requests sent that no heartbeat has counted yet."""
        if not self.entries:  # most slots between a heartbeat and the next send: placement asks every one
            return 0
        return sum(1 for e in self.entries.values() if not e.is_counted)

    @property
    def pad_to_tokens(self) -> int:
        """The longest row the agent's batch holds: a new row is padded to it (DESIGN.md §3)."""
        return max((e.tokens_now for e in self.entries.values()), default=0)

    @property
    def longest_end_tokens(self) -> int:
        """The longest row it sent is expected to reach (its prompt and expected output)."""
        return max((e.prompt_tokens + e.expected_output_tokens for e in self.entries.values()), default=0)

    @property
    def is_marked_full(self) -> bool:
        return self.seq <= self.full_until_seq

    def view(self, budget_bytes: int, reserved_bytes: int, used_bytes: int, margin_bytes: int) -> SlotKV:
        """The heartbeat's numbers, netted as the module docstring says."""
        reserved = reserved_bytes + self.pending_bytes - self.credit_bytes
        return SlotKV(budget_bytes, max(0, reserved), used_bytes, margin_bytes)

    # -- changes
    def add(self, request_id: str, prompt_tokens: int, expected_output_tokens: int, reservation_bytes: int) -> None:
        self.entries[request_id] = PendingEntry(request_id, prompt_tokens, expected_output_tokens, reservation_bytes)
        self._changed()

    def accept(self, request_id: str, *, prompt_tokens: int | None, expected_output_tokens: int | None,
               reservation_bytes: int | None) -> PendingEntry | None:
        """The agent admitted it; its own numbers (it tokenized the prompt) replace the estimate."""
        entry = self.entries.get(request_id)
        if entry is None:
            return None
        entry.is_accepted = True
        entry.prompt_tokens = entry.prompt_tokens if prompt_tokens is None else prompt_tokens
        if expected_output_tokens is not None:
            entry.expected_output_tokens = expected_output_tokens
        if reservation_bytes is not None:
            entry.reservation_bytes = reservation_bytes
        return entry

    def chunk(self, request_id: str) -> PendingEntry | None:
        entry = self.entries.get(request_id)
        if entry is not None:
            entry.num_chunks += 1
        return entry

    def end(self, request_id: str) -> PendingEntry | None:
        """The agent said the request ended (complete, error, or rejected)."""
        entry = self.entries.pop(request_id, None)
        if entry is not None and entry.is_counted:
            self.credits[request_id] = entry.reservation_bytes
        if entry is not None:
            self._changed()
        return entry

    def abandon(self, request_id: str, now: float) -> PendingEntry | None:
        entry = self.entries.get(request_id)
        if entry is not None and entry.abandoned_at is None:
            entry.abandoned_at = now
        return entry

    def mark_full(self) -> None:
        """The agent refused a request as full: send it nothing more until its next heartbeat."""
        self.full_until_seq = self.seq

    def heartbeat(self, seq: int, now: float, cancel_grace_s: float) -> list[PendingEntry]:
        """A newer heartbeat arrived; returns the abandoned entries given up on for good."""
        self.seq = seq
        self.credits.clear()
        expired = []
        for entry in list(self.entries.values()):
            if entry.is_accepted:
                entry.is_counted = True
            if entry.abandoned_at is not None and now - entry.abandoned_at >= cancel_grace_s:
                expired.append(self.entries.pop(entry.request_id))
        self._changed()
        return expired

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
