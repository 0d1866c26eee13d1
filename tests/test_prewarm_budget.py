"""Pre-warm plans from heartbeats keep to their share of a core (router.prewarm, settings.prewarm_max_core_share):
a plan reads every provider of its model, so in a large fleet heartbeats plan less often than every
prewarm_heartbeat_interval_s, and a burst of queued requests plans once, not once each. The router's clock is
a fake one here; a plan's cost is timed by the process."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.coordinator.routing.exchange import Exchange
from agent.coordinator.routing.placement import Ask
from agent.coordinator.routing.router import Router
from agent.wire.chat_body import ChatCompletionBody, ChatMessage
from tests.provider_support import FAST, GIB, GPT
from tests.test_coordinator_agreement import heartbeat, register

STEP_S = 0.125  # between heartbeats: exact in binary, so the fake clock's sums are too


def plans(router: Router) -> float:
    return router.metrics.registry.get_sample_value("darkbloom_prewarm_plan_seconds_count", {"model": GPT.id}) or 0.0


@pytest.mark.parametrize(("core_share", "expected_plans"), [(1.0, 10), (1e-9, 1)])
def test_heartbeats_plan_every_interval_while_a_plan_is_cheap_and_no_more_than_their_share_of_a_core_when_not(
        core_share, expected_plans):
    now = [0.0]
    router = Router(replace(FAST, prewarm_heartbeat_interval_s=0.25, prewarm_max_core_share=core_share),
                    catalog={GPT.id: GPT}, clock=lambda: now[0])
    providers = [router.connect(register(GPT), lambda frame: None) for _ in range(8)]
    assert plans(router) == 0
    for seq in range(1, 21):  # 2.5 s of heartbeats, one every 0.125 s
        now[0] += STEP_S
        router.receive(providers[seq % len(providers)], heartbeat(seq, GPT.id, 8 * GIB, 0, 0))
    # Every second heartbeat is 0.25 s after the last plan: 10 plans while a plan costs less than a quarter of
    # a second of a core; with a share of a billionth, the first plan's microseconds put the next past 2.5 s.
    assert plans(router) == expected_plans


@pytest.mark.parametrize(("core_share", "expected_plans"), [(1.0, 1 + 3), (0.0, 1 + 3), (1e-9, 1)])
async def test_each_queued_request_plans_while_plans_are_cheap_and_a_burst_does_not_rescan_the_fleet_when_not(
        core_share, expected_plans):
    now = [0.0]
    router = Router(replace(FAST, prewarm_max_core_share=core_share), catalog={GPT.id: GPT}, clock=lambda: now[0])
    full = router.connect(register(GPT), lambda frame: None)
    router.receive(full, heartbeat(1, GPT.id, 8 * GIB, 8 * GIB, 8 * GIB))  # its KV all reserved: it plans once
    assert plans(router) == 1
    body = ChatCompletionBody(messages=(ChatMessage(role="user", content="hi"),), max_tokens=16)
    for i in range(3):  # a burst, at one instant: each is queued behind the full slot
        submission = router.submit(Exchange(f"r-{i}", body, Ask(GPT.id, 8, 16, None), created_at=now[0]))
        assert submission.waiter is not None
    assert plans(router) == expected_plans
