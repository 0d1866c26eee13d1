"""The holder of a request's prefix is preferred while its overlap outweighs its load (routing/holder_preference.py)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.coordinator.routing.holder_preference import prefer_holder
from agent.coordinator.settings import CoordinatorSettings

SETTINGS = CoordinatorSettings()
SLACK, MAX_LOAD = SETTINGS.prefix_affinity_slack_rows, SETTINGS.prefix_affinity_max_load


@dataclass
class Provider:
    provider_id: str


def fleet(rows: dict[str, int], waiting: dict[str, int] | None = None) -> list:
    """Warm slots as placement sorts them: (waiting rows, rows, trust) first."""
    waiting = waiting or {}
    warm = [((waiting.get(p, 0), n, 0), Provider(p), p) for p, n in rows.items()]
    return sorted(warm, key=lambda item: item[0])


def preferred(rows: dict[str, int], holder: str | None, waiting: dict[str, int] | None = None) -> bool:
    warm = fleet(rows, waiting)
    taken = prefer_holder(warm, holder, SLACK, MAX_LOAD)
    assert len(warm) == len(rows) - (taken is not None)  # taken out of the list, or left in it
    return taken is not None and taken[2] == holder


def test_a_holder_within_the_slack_of_the_least_busy_and_near_the_mean_is_preferred():
    assert preferred({"a": 2, "b": 1, "c": 1, "d": 2}, "a")


def test_a_holder_more_than_the_slack_busier_than_the_least_busy_is_not_preferred():
    assert not preferred({"a": 4, "b": 1, "c": 3, "d": 4}, "a")


def test_a_holder_past_max_load_times_the_mean_is_not_preferred_even_within_the_slack():
    # Within 2 rows of the least busy, but with this request 3 rows against a mean of 3/7 (+ 1): 3 > 1.5 × 1.43.
    assert not preferred({"a": 2, **{f"idle{i}": 0 for i in range(6)}}, "a")


def test_a_holder_with_a_longer_prefill_queue_than_the_slack_allows_is_not_preferred():
    assert not preferred({"a": 3, "b": 3, "c": 3}, "a", waiting={"a": 3})


def test_no_holder_or_a_holder_not_warm_here_changes_nothing():
    assert not preferred({"a": 0, "b": 0}, None)
    assert not preferred({"a": 0, "b": 0}, "gone")
