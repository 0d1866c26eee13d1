"""A slot's cached prompt prefixes as the event loop sees them: token ids, exact bytes, LRU order, pins.

The tensors live on the MLX thread (agent/engine/prefix_store.py); this index decides. At the end of
each request's prompt the MLX thread captures the row's KV (the state after `prompt[:-1]`) and reports
it as a `PrefixEntry`; a new request's tokens are matched here against every entry:

    an entry that is a prefix of the new prompt      reused whole (exact for every layout)
    an entry sharing a shorter common prefix          reused up to it only if the entry can be cut back
                                                      that far exactly (`max_trim_tokens`: full layers
                                                      any amount; a sliding layer only while it still
                                                      holds a whole window of keys after the cut, see
                                                      prefix_store.py); otherwise refused, as inexact

Cutting back matters for templates whose generation prompt is not part of the next turn's history
(gemma-4 opens an empty thought channel after `model\n`): the next turn shares all of the prompt but
those few tokens, and a prefill leaves its sliding layers holding up to window - 1 + the last chunk's
tokens, so the cut is usually exact.

An entry a request reuses is pinned until that request ends, so eviction never takes it. Eviction is
least recently used first, and only of unpinned entries.

Pure: standard library only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PrefixEntry:
    id: int
    tokens: tuple[int, ...]  # the prompt tokens whose KV the entry holds
    nbytes: int  # what its arrays really occupy (measured on the MLX thread)
    max_trim_tokens: int  # how far every layer can be cut back to a shorter prefix exactly
    chain: str = ""  # the request's chain key (agent/wire/prefix_chain.py), reported as prefix_chains; "": unknown


@dataclass(frozen=True, slots=True)
class PrefixMatch:
    entry_id: int
    num_tokens: int  # prompt tokens whose KV is reused (the rest is prefilled)


@dataclass(slots=True)
class PrefixStats:
    num_lookups: int = 0
    num_hits: int = 0
    hit_tokens: int = 0
    num_evictions: int = 0

    @property
    def hit_rate(self) -> float:
        return self.num_hits / self.num_lookups if self.num_lookups else 0.0


def common_prefix_tokens(a: tuple[int, ...], b: list[int] | tuple[int, ...]) -> int:
    """Binary search on slice equality: the comparisons run in C (a per-token Python loop over long
    histories, for every entry, would stall the event loop)."""
    b = tuple(b[: len(a)])
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


def reusable_tokens(entry: PrefixEntry, prompt: list[int] | tuple[int, ...]) -> int:
    """Tokens of `prompt` the entry can stand for exactly (the last prompt token is always fed anew)."""
    usable = prompt[: len(prompt) - 1]
    common = common_prefix_tokens(entry.tokens, usable)
    if common == len(entry.tokens) or len(entry.tokens) - common <= entry.max_trim_tokens:
        return common
    return 0


@dataclass(slots=True)
class PrefixIndex:
    max_bytes: int  # the slot's limit on cached bytes (0: no cache)
    max_entries: int = 256  # every lookup compares against each entry
    min_reuse_tokens: int = 1
    max_reported_chains: int = 64  # the chain keys a snapshot reports (most recently used first)
    entries: OrderedDict[int, PrefixEntry] = field(default_factory=OrderedDict)  # least recently used first
    pins: dict[str, int] = field(default_factory=dict)  # request_id -> entry id it reuses
    stats: PrefixStats = field(default_factory=PrefixStats)
    cached_bytes: int = 0

    @property
    def pinned_ids(self) -> set[int]:
        return set(self.pins.values())

    @property
    def evictable_bytes(self) -> int:
        pinned = self.pinned_ids
        return sum(e.nbytes for i, e in self.entries.items() if i not in pinned)

    def chains(self) -> tuple[str, ...]:
        """The chain keys of the entries, most recently used first, at most `max_reported_chains`."""
        found: list[str] = []
        for entry in reversed(self.entries.values()):
            if entry.chain and entry.chain not in found:
                found.append(entry.chain)
                if len(found) >= self.max_reported_chains:
                    break
        return tuple(found)

    def match(self, prompt: list[int] | tuple[int, ...]) -> PrefixMatch | None:
        """The entry standing for the longest exact prefix of `prompt` (None: none); counts the lookup."""
        self.stats.num_lookups += 1
        best, best_tokens = None, 0
        for entry in self.entries.values():
            n = reusable_tokens(entry, prompt)
            if n > best_tokens:
                best, best_tokens = entry, n
        if best is None or best_tokens < self.min_reuse_tokens:
            return None
        return PrefixMatch(best.id, best_tokens)

    def pin(self, request_id: str, match: PrefixMatch) -> None:
        """The request reuses the entry: it is now the most recently used and cannot be evicted."""
        self.pins[request_id] = match.entry_id
        self.entries.move_to_end(match.entry_id)

    def count_hit(self, match: PrefixMatch) -> None:
        """An admitted request reuses `match` (a refused one is a lookup, not a hit)."""
        self.stats.num_hits += 1
        self.stats.hit_tokens += match.num_tokens

    def unpin(self, request_id: str) -> None:
        self.pins.pop(request_id, None)

    def add(self, entry: PrefixEntry) -> list[int]:
        """A captured prefix; returns the ids to drop (ones it makes redundant, then LRU ones over the limit)."""
        if entry.nbytes > self.max_bytes:
            return [entry.id]
        dropped = self._redundant(entry)
        for entry_id in dropped:
            self._remove(entry_id)
        self.entries[entry.id] = entry
        self.cached_bytes += entry.nbytes
        dropped += self.evict(self.cached_bytes - self.max_bytes)
        while len(self.entries) > self.max_entries and (oldest := self.evict(1)):
            dropped += oldest
        return dropped

    def evict(self, need_bytes: int) -> list[int]:
        """Free at least `need_bytes` by dropping unpinned entries, least recently used first (as many as there are)."""
        pinned, evicted, freed = self.pinned_ids, [], 0
        for entry_id in list(self.entries):
            if freed >= need_bytes:
                break
            if entry_id in pinned:
                continue
            freed += self.entries[entry_id].nbytes
            self._remove(entry_id)
            evicted.append(entry_id)
        self.stats.num_evictions += len(evicted)
        return evicted

    def clear(self) -> list[int]:
        ids = list(self.entries)
        self.entries.clear()
        self.pins.clear()
        self.cached_bytes = 0
        return ids

    def _redundant(self, entry: PrefixEntry) -> list[int]:
        """Unpinned entries the new one stands for exactly: its prefixes it can be cut back to."""
        pinned, n = self.pinned_ids, len(entry.tokens)
        return [i for i, e in self.entries.items() if i not in pinned and len(e.tokens) <= n
                and n - len(e.tokens) <= entry.max_trim_tokens and entry.tokens[:len(e.tokens)] == e.tokens]

    def _remove(self, entry_id: int) -> None:
        entry = self.entries.pop(entry_id)
        self.cached_bytes -= entry.nbytes
