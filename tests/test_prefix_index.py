"""The prefix index and its place in the slot's ledger (pure: no MLX): which prefix is reused, which is
refused as inexact, and LRU eviction before any refusal, never of a prefix a request is using."""

from __future__ import annotations

from agent.admission import Verdict, reservation_bytes
from agent.catalog import load_catalog
from agent.engine.kv_tracker import KVTracker
from agent.engine.prefix_index import PrefixEntry, PrefixIndex, PrefixMatch, reusable_tokens

SPEC = load_catalog()["gpt-oss-20b"]
MIB = 1024**2


def entry(entry_id: int, tokens, nbytes: int = MIB, max_trim: int = 0) -> PrefixEntry:
    return PrefixEntry(entry_id, tuple(tokens), nbytes, max_trim)


def test_an_entry_that_is_a_prefix_is_reused_whole_and_the_last_prompt_token_is_always_fed_anew():
    cached = entry(1, range(10))
    assert reusable_tokens(cached, list(range(15))) == 10
    assert reusable_tokens(cached, list(range(11))) == 10
    assert reusable_tokens(cached, list(range(10))) == 0  # it would stand for the last token too: not a prefix


def test_a_shorter_common_prefix_is_reused_only_as_far_as_the_entry_can_be_cut_back_exactly():
    prompt = [*range(6), 99, 100, 101]
    assert reusable_tokens(entry(1, range(10), max_trim=4), prompt) == 6
    assert reusable_tokens(entry(1, range(10), max_trim=3), prompt) == 0  # a wrapped sliding layer: refused


def test_the_longest_reusable_prefix_wins_and_a_miss_is_counted_as_a_lookup():
    index = PrefixIndex(max_bytes=10 * MIB)
    for cached in (entry(1, range(4)), entry(2, range(8)), entry(3, [*range(6), 50], max_trim=0)):
        index.add(cached)
    assert index.match(list(range(20))) == PrefixMatch(2, 8)
    assert index.match([7, 7, 7]) is None
    assert index.stats.num_lookups == 2 and index.stats.num_hits == 0


def test_a_trimmable_entry_replaces_the_prefixes_it_stands_for_and_a_new_one_the_same_tokens():
    index = PrefixIndex(max_bytes=10 * MIB)
    index.add(entry(1, range(4)))
    index.add(entry(2, range(4)))
    assert list(index.entries) == [2]
    assert index.add(entry(3, range(9), max_trim=9)) == [2]
    assert list(index.entries) == [3] and index.cached_bytes == MIB


def test_the_cache_keeps_to_its_limit_by_evicting_the_least_recently_used_never_a_pinned_one():
    index = PrefixIndex(max_bytes=3 * MIB)
    for i in range(3):
        index.add(entry(i, [i] * 5))
    index.pin("r", PrefixMatch(0, 5))  # the oldest, but in use (and now the most recently used)
    assert index.add(entry(3, [3] * 5)) == [1]
    assert index.evict(10 * MIB) == [2, 3]  # everything it may take; 0 stays
    assert list(index.entries) == [0] and index.cached_bytes == MIB and index.stats.num_evictions == 3
    index.unpin("r")
    assert index.evict(1) == [0] and index.cached_bytes == 0


def test_an_entry_larger_than_the_limit_is_dropped_at_once():
    index = PrefixIndex(max_bytes=MIB)
    assert index.add(entry(1, range(3), nbytes=2 * MIB)) == [1]
    assert index.cached_bytes == 0 and not index.entries


def tracker_holding_prefixes(num_entries: int, entry_bytes: int, budget: int) -> KVTracker:
    tracker = KVTracker(SPEC, budget, max_prefix_cache_bytes=budget)
    tracker.add_prefixes([entry(i, [i] * 100, entry_bytes) for i in range(num_entries)])
    assert tracker.take_evicted() == [] and tracker.prefixes.cached_bytes == num_entries * entry_bytes
    return tracker


def test_a_slot_full_of_cached_prefixes_admits_a_new_request_after_evicting_just_enough_of_the_oldest():
    own = reservation_bytes(SPEC, 4000, 700)
    budget = 2 * own
    tracker = tracker_holding_prefixes(8, budget // 8, budget)
    before = tracker.check("probe", 4000, 1000)
    assert before.verdict is Verdict.FULL  # no room beside the cache as it is
    decision = tracker.admit("r", 4000, 1000)
    evicted = tracker.take_evicted()
    assert decision.admitted and tracker.slot_kv().free_bytes >= 0
    assert evicted == list(range(len(evicted))) and 0 < len(evicted) < 8  # oldest first, not all of them
    one_fewer = tracker_holding_prefixes(8 - len(evicted) + 1, budget // 8, budget)
    assert one_fewer.check("r", 4000, 1000).verdict is Verdict.FULL  # just enough were evicted
    assert tracker.prefixes.cached_bytes == (8 - len(evicted)) * (budget // 8)


def test_admission_never_evicts_the_prefix_the_request_reuses_and_refuses_when_only_pinned_ones_are_left():
    own = reservation_bytes(SPEC, 4000, 700)
    tracker = tracker_holding_prefixes(1, own, own + own // 2)
    reuse = PrefixMatch(0, 100)
    decision = tracker.admit("r", 4000, 1000, reuse)
    assert decision.verdict is Verdict.FULL and tracker.take_evicted() == []
    assert list(tracker.prefixes.entries) == [0] and not tracker.prefixes.pins  # refused: unpinned again
    tracker.prefixes.pin("running", reuse)
    assert not tracker.admit("r", 4000, 1000).admitted and tracker.take_evicted() == []
    tracker.release("running", observed=False)
    assert tracker.admit("r", 4000, 1000).admitted and tracker.take_evicted() == [0]


def test_a_shrinking_budget_evicts_cached_prefixes_before_it_stops_admission():
    tracker = tracker_holding_prefixes(4, MIB, 8 * MIB)
    tracker.set_budget(2 * MIB)
    assert tracker.take_evicted() == [0, 1] and tracker.prefixes.cached_bytes == 2 * MIB
    assert not tracker.is_overcommitted


def test_the_common_prefix_is_found_at_every_position_and_the_entry_count_is_bounded():
    base = tuple(range(50))
    for n in (0, 1, 17, 49, 50):
        assert reusable_tokens(entry(1, base, max_trim=50), [*base[:n], 999, 998]) == min(n, 50)
    index = PrefixIndex(max_bytes=100 * MIB, max_entries=3)
    evicted = [i for k in range(5) for i in index.add(entry(k, [k] * 4))]
    assert evicted == [0, 1] and list(index.entries) == [2, 3, 4]
