"""The one schedule both backends run (agent/engine/schedule.py), tested directly: grouping by chunk
count, the row and group caps, the shortest-first pick with the oldest's turn, joining, and removal."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.engine.schedule import (
    PrefillGroup,
    Schedule,
    ScheduleLimits,
    form_groups,
    pick_prefill_group,
    prefill_chunks,
)

CHUNK = 10
LIMITS = ScheduleLimits(chunk_tokens=CHUNK)


@dataclass(eq=False)
class FakeRow:
    request_id: str
    prompt_tokens: int


def rows(*prompt_tokens: int, prefix: str = "r") -> list[FakeRow]:
    return [FakeRow(f"{prefix}{i}", n) for i, n in enumerate(prompt_tokens)]


def ids(group: PrefillGroup | list[FakeRow]) -> list[str]:
    return [row.request_id for row in (group.rows if isinstance(group, PrefillGroup) else group)]


def run_turn(schedule: Schedule) -> tuple[str, ...]:
    """One step as a backend runs it; the ids of the group that had the turn."""
    step = schedule.next_step()
    assert step.group is not None
    turned = tuple(ids(step.group))
    schedule.advance(step.group)
    return turned


def test_a_prompt_takes_one_prefill_turn_per_chunk_of_all_its_tokens_but_the_last():
    assert [prefill_chunks(n, CHUNK) for n in (1, 2, 11, 12, 21)] == [0, 1, 1, 2, 2]


def test_a_group_takes_the_oldest_prompt_and_later_ones_with_the_same_chunk_count_only():
    schedule = Schedule(ScheduleLimits(chunk_tokens=CHUNK, max_prefill_groups=1))
    for row in rows(15, 40, 12, 21, 18):  # chunks: 2, 4, 2, 2, 2
        schedule.add(row)
    step = schedule.next_step()
    assert [ids(group) for group in step.started] == [["r0", "r2", "r3", "r4"]]
    assert ids(list(schedule.waiting)) == ["r1"]


def test_a_group_holds_at_most_max_prefill_rows_and_the_rest_form_the_next_group():
    schedule = Schedule(ScheduleLimits(chunk_tokens=CHUNK, max_prefill_rows=3))
    for row in rows(*[5] * 7):
        schedule.add(row)
    step = schedule.next_step()
    assert [ids(group) for group in step.started] == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r6"]]


def test_the_default_row_cap_is_eight():
    groups = form_groups(rows(*[5] * 10), ScheduleLimits())
    assert [len(group) for group in groups] == [8, 2]


def test_no_more_than_max_prefill_groups_are_in_flight_and_the_rest_wait_in_order():
    schedule = Schedule(ScheduleLimits(chunk_tokens=CHUNK, max_prefill_groups=2))
    for row in rows(5, 15, 25, 35):  # four chunk counts: four groups
        schedule.add(row)
    step = schedule.next_step()
    assert [ids(group) for group in step.started] == [["r0"], ["r1"]]
    assert ids(list(schedule.waiting)) == ["r2", "r3"]
    schedule.advance(step.group)  # r0 (one chunk) joins: room for one more group
    assert [ids(group) for group in schedule.next_step().started] == [["r2"]]


def test_the_group_with_the_fewest_chunks_left_goes_first_except_every_fourth_turn_the_oldest():
    assert pick_prefill_group([5, 1, 3], turn=1) == 1
    assert pick_prefill_group([5, 1, 3], turn=4) == 0
    assert pick_prefill_group([5, 1, 3], turn=6, oldest_every=3) == 0
    assert pick_prefill_group([5, 1, 1], turn=2) == 1  # a tie goes to the older


def test_a_long_prompt_still_advances_under_a_stream_of_short_ones():
    schedule = Schedule(LIMITS)
    schedule.add(FakeRow("long", 81))  # eight chunks
    turns = []
    for i in range(12):
        schedule.add(FakeRow(f"short{i}", 15))  # two chunks each, one new group every turn
        turns.append(run_turn(schedule))
    assert [n for n, turn in enumerate(turns, start=1) if turn == ("long",)] == [4, 8, 12]
    long_group = next(group for group in schedule.groups if ids(group) == ["long"])
    assert long_group.chunks_done == 3


def test_a_short_prompt_is_not_stuck_behind_a_long_prefill():
    schedule = Schedule(LIMITS)
    schedule.add(FakeRow("long", 81))
    assert run_turn(schedule) == ("long",)
    schedule.add(FakeRow("short", 5))
    assert run_turn(schedule) == ("short",)
    assert list(schedule.decoding) == ["short"]


def test_a_group_joins_the_decoding_rows_on_its_last_chunk_and_a_one_token_prompt_at_once():
    schedule = Schedule(LIMITS)
    schedule.add(FakeRow("one", 1))
    step = schedule.next_step()
    assert (step.decode, step.has_chunk, step.joins) == (False, False, True)
    assert schedule.advance(step.group) is True
    schedule.add(FakeRow("two", 21))  # two chunks
    first = schedule.next_step()
    assert (first.decode, first.has_chunk, first.joins) == (True, True, False)
    assert schedule.advance(first.group) is False
    last = schedule.next_step()
    assert (last.has_chunk, last.joins) == (True, True)
    assert schedule.advance(last.group) is True
    assert list(schedule.decoding) == ["one", "two"] and not schedule.groups


def test_the_chunks_of_a_group_feed_every_prompt_token_but_the_last_exactly_once():
    schedule = Schedule(LIMITS)
    group_rows = rows(23, 29)  # three chunks each: 10, 10, then 2 and 8
    for row in group_rows:
        schedule.add(row)
    fed: dict[str, list[tuple[int, int]]] = {row.request_id: [] for row in group_rows}
    while not schedule.decoding:
        step = schedule.next_step()
        if step.has_chunk:
            for row in step.group.rows:
                fed[row.request_id].append(step.group.chunk_span(row, CHUNK))
        schedule.advance(step.group)
    assert fed == {"r0": [(0, 10), (10, 20), (20, 22)], "r1": [(0, 10), (10, 20), (20, 28)]}


def test_a_step_decodes_only_when_rows_are_decoding_and_a_schedule_without_rows_has_no_work():
    schedule = Schedule(LIMITS)
    assert not schedule.has_work
    step = schedule.next_step()
    assert (step.decode, step.started, step.group) == (False, (), None)
    assert schedule.num_turns == 0  # an idle step is no prefill turn


def test_a_request_is_removed_from_wherever_it_is_and_an_emptied_group_goes():
    schedule = Schedule(ScheduleLimits(chunk_tokens=CHUNK, max_prefill_groups=1))
    for row in rows(5, 6, 25, 1):
        schedule.add(row)
    run_turn(schedule)  # r0 and r1 (one chunk) join; r2 and r3 wait
    schedule.next_step()  # r2 (three chunks) starts prefilling
    assert schedule.remove("nobody") is None
    waiting = schedule.remove("r3")
    assert (waiting.place, waiting.row.request_id) == ("waiting", "r3")
    decoding = schedule.remove("r1")
    assert decoding.place == "decoding" and list(schedule.decoding) == ["r0"]
    prefilling = schedule.remove("r2")
    assert (prefilling.place, prefilling.index, prefilling.group.rows) == ("prefilling", 0, [])
    assert not schedule.groups


def test_a_failed_group_or_decode_step_and_a_clear_take_their_rows_out():
    schedule = Schedule(ScheduleLimits(chunk_tokens=CHUNK, max_prefill_groups=1))
    for row in rows(5, 25, 35):
        schedule.add(row)
    run_turn(schedule)  # r0 decoding
    step = schedule.next_step()  # r1 prefilling, r2 waiting
    assert ids(schedule.drop_group(step.group)) == ["r1"] and not schedule.groups
    assert ids(schedule.drop_decoding()) == ["r0"] and not schedule.decoding
    assert ids(schedule.clear()) == ["r2"] and not schedule.has_work


def test_the_ledgers_grouping_is_the_schedules():
    pending = rows(5, 15, 6, 16, 7, *[8] * 8)
    schedule = Schedule(LIMITS)
    for row in pending:
        schedule.add(row)
    started = schedule.next_step().started
    assert [ids(group) for group in form_groups(pending, LIMITS)][:4] == [ids(group) for group in started]


@pytest.mark.parametrize("name", ["chunk_tokens", "max_prefill_rows", "max_prefill_groups", "oldest_every"])
def test_a_limit_below_one_is_refused_with_its_name(name):
    with pytest.raises(ValueError, match=f"ScheduleLimits.{name} must be at least 1"):
        ScheduleLimits(**{name: 0})


def test_the_schedule_is_pure_it_imports_no_mlx_no_asyncio_and_no_clock():
    path = Path(__file__).resolve().parent.parent / "agent" / "engine" / "schedule.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    roots = {name.split(".")[0] for name in imported}
    assert roots <= set(sys.stdlib_module_names) | {"agent"}
    assert not roots & {"asyncio", "time", "threading"}
    assert {name for name in imported if name.startswith("agent")} == {"agent.kvcost"}
