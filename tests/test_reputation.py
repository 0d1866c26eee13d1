"""Reputation: trust rises with what a provider shows and falls fast with its failures; quarantine and its expiry."""

from __future__ import annotations

from dataclasses import replace

from agent.coordinator.routing.reputation import Outcome, ReputationBook
from agent.coordinator.settings import CoordinatorSettings

SETTINGS = CoordinatorSettings(quarantine_after_failures=3, quarantine_window_s=60.0, quarantine_s=30.0,
                               max_quarantine_s=100.0, reputation_half_life_s=600.0,
                               proven_after_first_tokens=2, unproven_max_in_flight=1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def book(settings: CoordinatorSettings = SETTINGS) -> tuple[ReputationBook, FakeClock]:
    clock = FakeClock()
    reputations = ReputationBook(settings, clock)
    reputations.track("p", is_identity=True)
    return reputations, clock


def succeed(reputations: ReputationBook, provider_id: str = "p", times: int = 1) -> None:
    for _ in range(times):
        reputations.record(provider_id, Outcome.FIRST_TOKEN, ttft_s=0.5)
        reputations.record(provider_id, Outcome.COMPLETED)


def test_a_new_provider_starts_with_low_but_nonzero_trust():
    reputations, _ = book()
    assert 0.0 < reputations.trust("p") <= 0.25
    assert reputations.trust("never-seen") == reputations.trust("p")


def test_successes_raise_trust_and_one_failure_costs_more_than_one_success_gains():
    reputations, _ = book()
    start = reputations.trust("p")
    succeed(reputations, times=10)
    proven = reputations.trust("p")
    assert proven > 0.8 > start
    reputations.record("p", Outcome.TIMEOUT)
    gain_per_success = (proven - start) / 20
    assert proven - reputations.trust("p") > 3 * gain_per_success  # a failure undoes several successes
    assert reputations.tier("p") == 3 and book()[0].tier("p") == 1


def test_failures_lower_trust_fast_and_time_forgives_them_by_half_lives():
    reputations, clock = book()
    for outcome in (Outcome.TIMEOUT, Outcome.STALLED):
        reputations.record("p", outcome)
    low = reputations.trust("p")
    assert low < 0.1
    clock.now += SETTINGS.reputation_half_life_s * 20
    assert reputations.trust("p") > 0.24  # decayed back to the prior


def test_three_failures_within_the_window_quarantine_with_a_reason_and_the_quarantine_expires():
    reputations, clock = book()
    for outcome in (Outcome.TIMEOUT, Outcome.ENDED):
        reputations.record("p", outcome, detail="no first token")
    assert reputations.quarantine_reason("p") == ""
    reputations.record("p", Outcome.ERROR, detail="engine failed")
    reason = reputations.quarantine_reason("p")
    assert reason.startswith("quarantined for 30 s more after 3 failures") and reason.endswith("(last: error)")
    assert reputations.view("p").last_failure == "error: engine failed"  # the detail, for operators only
    assert reputations.num_quarantined() == 1
    clock.now += 30.1
    assert reputations.quarantine_reason("p") == "" and reputations.num_quarantined() == 0


def test_failures_spread_wider_than_the_window_do_not_quarantine():
    reputations, clock = book()
    for _ in range(5):
        reputations.record("p", Outcome.TIMEOUT)
        clock.now += 31.0
    assert reputations.quarantine_reason("p") == ""


def test_a_repeat_quarantine_doubles_up_to_the_maximum():
    reputations, clock = book()
    lengths = []
    for _ in range(4):
        for _ in range(3):
            reputations.record("p", Outcome.TIMEOUT)
        lengths.append(reputations.get("p").quarantined_until - clock.now)
        clock.now = reputations.get("p").quarantined_until + 1
    assert lengths == [30.0, 60.0, 100.0, 100.0]


def test_failures_while_quarantined_do_not_extend_it_and_lost_links_never_quarantine():
    reputations, clock = book()
    for _ in range(10):
        reputations.record("p", Outcome.LINK_LOST)
    assert reputations.quarantine_reason("p") == "" and reputations.trust("p") < 0.1
    for _ in range(3):
        reputations.record("p", Outcome.TIMEOUT)
    until = reputations.get("p").quarantined_until
    for _ in range(6):
        reputations.record("p", Outcome.TIMEOUT)
    assert reputations.get("p").quarantined_until == until


def test_an_unproven_provider_holds_a_bounded_number_of_requests_until_it_shows_first_tokens():
    reputations, _ = book()
    assert reputations.max_in_flight("p") == 1
    succeed(reputations)
    assert reputations.max_in_flight("p") == 1
    succeed(reputations)
    assert reputations.max_in_flight("p") is None


def test_the_book_is_bounded_and_forgets_the_least_recently_seen_first():
    reputations, _ = book(replace(SETTINGS, max_reputations=3))
    for name in ("a", "b", "c", "d"):
        reputations.track(name, is_identity=False)
    assert len(reputations) == 3 and reputations.get("p") is None and reputations.get("d") is not None
    for _ in range(10_000):
        reputations.record("d", Outcome.TIMEOUT)
    assert len(reputations.get("d").recent_failures) <= SETTINGS.quarantine_after_failures


def test_an_unknown_outcome_name_counts_as_an_error_and_untracked_providers_are_ignored():
    reputations, _ = book()
    assert Outcome.of("something_new") is Outcome.ERROR and Outcome.of("stalled") is Outcome.STALLED
    reputations.record("not-tracked", Outcome.TIMEOUT)
    assert reputations.get("not-tracked") is None


def test_a_view_round_trips_through_restore_with_its_quarantine_left():
    reputations, clock = book()
    succeed(reputations, times=3)
    for _ in range(3):
        reputations.record("p", Outcome.STALLED)
    view = reputations.view("p")
    assert view.outcomes == {"first_token": 3, "completed": 3, "stalled": 3} and view.quarantine_left_s == 30.0
    restored, later = book()
    later.now += 5000
    restored.restore("p", view)
    assert restored.view("p").model_copy(update={"quarantine_left_s": 30.0}) == view
    assert restored.quarantine_reason("p").startswith("quarantined for 30 s")


# -- placement reads it (a real Router, frames in by hand, no sockets)
GIB = 2**30


def router_with(*budgets_gib: int, settings: CoordinatorSettings = SETTINGS):
    from agent.coordinator.routing.router import Router
    from tests.provider_support import GPT
    from tests.test_coordinator_agreement import heartbeat, register

    clock = FakeClock()
    router = Router(settings, clock=clock)
    providers = []
    for budget in budgets_gib:
        provider = router.connect(register(GPT), lambda frame: None)
        router.receive(provider, heartbeat(1, GPT.id, budget * GIB, 0, 0))
        providers.append(provider)
    return router, clock, providers


def ask():
    from agent.coordinator.routing.placement import Ask
    from tests.provider_support import GPT

    return Ask(GPT.id, prompt_tokens=100, floor_prompt_tokens=40, max_tokens=64)


def test_placement_skips_a_quarantined_provider_with_the_quarantine_as_its_reason():
    router, _, (liar, honest) = router_with(1000, 8)
    for _ in range(3):
        router.reputation.record(liar.provider_id, Outcome.TIMEOUT, detail="no first token")
    placement = router.placement(ask(), lazy=False)
    assert placement.best.provider is honest
    assert placement.never[liar.provider_id].startswith("quarantined for 30 s")
    router.disconnect(honest, "gone")
    alone = router.placement(ask(), lazy=False)
    assert not alone.can_ever and "quarantined" in alone.why_never()


def test_a_proven_provider_outranks_a_newcomers_bigger_claim_but_the_claim_still_decides_admission():
    router, _, (newcomer, proven) = router_with(1000, 8)
    assert router.placement(ask()).best.provider is newcomer  # equals: the claim decides
    succeed(router.reputation, proven.provider_id, times=4)
    placement = router.placement(ask(), lazy=False)
    assert [option.provider for option in placement.admit] == [proven, newcomer]


def test_an_unproven_provider_at_its_cap_is_an_overflow_used_only_when_no_other_slot_admits():
    from agent.coordinator.routing.exchange import Exchange
    from tests.test_coordinator_agreement import body

    router, _, (newcomer, other) = router_with(1000, 8)
    exchange = Exchange("r1", body(64), ask(), created_at=0.0)
    assert router.try_dispatch(exchange).best.provider is newcomer  # cap 1: it now holds its one request
    placement = router.placement(ask(), lazy=False)
    assert placement.best.provider is other and [o.provider for o in placement.overflow] == [newcomer]
    router.disconnect(other, "gone")
    assert router.placement(ask(), lazy=False).best.provider is newcomer
