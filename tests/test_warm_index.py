"""The router's warm index (routing/warm_index.py) gives the Placement a scan of every offer gives: on random
fleets, changed by heartbeats, sends, ends, reputations and departures, the indexed choice, its reasons and
its counts equal placement.place's."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings, strategies as st

from agent.coordinator.routing.exchange import Exchange
from agent.coordinator.routing.placement import Ask, Placement, place
from agent.coordinator.routing.reputation import Outcome
from agent.coordinator.routing.router import Router
from agent.coordinator.routing.warm_index import place_indexed
from agent.coordinator.settings import CoordinatorSettings
from agent.wire.chat_body import ChatCompletionBody, ChatMessage
from agent.wire.frames import Hardware, Heartbeat, MemoryStatus, Register, SlotState, SlotStatus
from agent.wire.protocol import PROTOCOL_VERSION
from tests.provider_support import GEMMA, GIB, GPT, entry_for

BODY = ChatCompletionBody(messages=(ChatMessage(role="user", content="hi"),))
STATES = [SlotState.RUNNING, SlotState.RUNNING, SlotState.IDLE, SlotState.COLD, SlotState.LOADING, SlotState.FAILED]


class Fleet:
    def __init__(self, rng: random.Random) -> None:
        self.rng, self.now = rng, 1000.0
        self.router = Router(CoordinatorSettings(), clock=lambda: self.now)
        self.providers, self.num_sent = [], 0

    def connect(self) -> None:
        rng, memory = self.rng, self.rng.choice([16, 24, 32, 64, 128]) * GIB
        register = Register(protocol_version=PROTOCOL_VERSION, agent_version="test",
                            hardware=Hardware(chip="M4", memory_bytes=memory, gpu_cores=10),
                            models=(entry_for(GPT, fits=rng.random() < 0.9, fit_reason="too small"),
                                    entry_for(GEMMA, fits=memory >= 32 * GIB, fit_reason="cap")))
        provider = self.router.connect(register, lambda frame: None)
        self.providers.append(provider)
        self.heartbeat(provider)

    def heartbeat(self, provider) -> None:
        rng, slots = self.rng, []
        for model in (GPT.id, GEMMA.id):
            state = rng.choice(STATES)
            budget = rng.choice([0, 2, 8, 40]) * GIB if state in (SlotState.RUNNING, SlotState.IDLE) else 0
            running = rng.randint(0, 3) if state is SlotState.RUNNING else 0
            slots.append(SlotStatus(model=model, state=state, num_running=running,
                                    num_waiting=rng.choice([0, 0, 0, 1]), kv_budget_bytes=budget,
                                    kv_reserved_bytes=int(budget * rng.choice([0, 0.5, 0.97, 1.0])),
                                    modalities=rng.choice([("text",), ("text", "image")])))
        memory = provider.memory_bytes
        self.router.receive(provider, Heartbeat(seq=provider.seq + 1, slots=tuple(slots), draining=rng.random() < 0.05,
                                                memory=MemoryStatus(total_bytes=memory, available_bytes=memory // 2,
                                                                    cap_bytes=int(memory * 0.9))))

    def change(self) -> None:
        """One thing that happens to a fleet between decisions."""
        rng, live = self.rng, [p for p in self.providers if p.is_connected]
        provider = rng.choice(live) if live else None
        what = rng.randrange(7)
        if provider is None or what == 0:
            self.connect()
        elif what == 1:
            self.heartbeat(provider)
        elif what == 2:  # a send: its pending entry, then perhaps its end
            offer = provider.offers[rng.choice([GPT.id, GEMMA.id])]
            self.num_sent += 1
            offer.pending.add(f"s{self.num_sent}", 100, 50, rng.choice([0, GIB]))
            if rng.random() < 0.5:
                offer.pending.end(f"s{self.num_sent}")
        elif what == 3:
            for _ in range(rng.choice([1, 3])):  # three failures quarantine it
                self.router.reputation.record(provider.provider_id, Outcome.ERROR, detail="test")
        elif what == 4:
            for _ in range(rng.randint(1, 20)):
                self.router.reputation.record(provider.provider_id, Outcome.FIRST_TOKEN)
        elif what == 5:
            self.router.disconnect(provider, "test")
        else:
            self.now += rng.choice([1.0, 400.0])  # quarantines end, trust decays

    def ask(self) -> tuple[Ask, dict[str, str], str | None]:
        rng = self.rng
        prompt = rng.choice([50, 2_000, 30_000, 200_000])
        ask = Ask(rng.choice([GPT.id, GEMMA.id]), prompt, prompt // 3, rng.choice([None, 64, 4_096, 32_768]),
                  num_images=int(rng.random() < 0.15))
        ids = [p.provider_id for p in self.providers]
        exclude = {pid: "refused it before" for pid in rng.sample(ids, min(len(ids), rng.randint(0, 2)))}
        return ask, exclude, rng.choice([None, *ids[-3:]])


def summary(placement: Placement) -> tuple:
    def options(found):
        return [(o.provider.provider_id, o.decision, o.prompt_tokens, o.max_tokens, o.is_uncertain) for o in found]

    return (options(placement.admit), options(placement.uncertain), options(placement.overflow),
            list(placement.full.items()), list(placement.waiting.items()), list(placement.never.items()),
            sorted(placement.too_large), placement.num_unchecked)


def assert_same_placement(fleet: Fleet) -> None:
    router, (ask, exclude, preferred) = fleet.router, fleet.ask()
    scanned = place(router.registry.offers(ask.model), ask, router.settings, now=fleet.now, exclude=exclude,
                    reputation=router.reputation, preferred=preferred)
    indexed = place_indexed(router.warm.model(ask.model), ask, router.settings, now=fleet.now, exclude=exclude,
                            reputation=router.reputation, preferred=preferred)
    assert summary(indexed) == summary(scanned)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.integers(1, 30))
def test_the_indexed_placement_equals_the_full_scan_on_random_fleets(rng, num_providers):
    fleet = Fleet(rng)
    for _ in range(num_providers):
        fleet.connect()
    for _ in range(12):
        assert_same_placement(fleet)
        for _ in range(rng.randint(1, 6)):
            fleet.change()


def test_a_dispatch_files_its_slot_again_so_the_next_decision_sees_its_new_rank():
    fleet = Fleet(random.Random(3))
    for _ in range(20):
        fleet.connect()
    for i in range(40):  # each commit adds a pending send: the slot's rank changes under the index
        ask = Ask(GPT.id, 500, 200, 256)
        fleet.router.try_dispatch(Exchange(f"r{i}", BODY, ask, 0.0))
        assert_same_placement(fleet)


def test_an_empty_model_places_nowhere_with_the_scans_reason():
    router = Router(CoordinatorSettings())
    ask = Ask(GPT.id, 100, 30, 64)
    indexed = place_indexed(router.warm.model(GPT.id), ask, router.settings, now=0.0)
    assert summary(indexed) == summary(place([], ask, router.settings, now=0.0))
    assert indexed.why_never() == f"no connected provider serves {GPT.id}"


def test_an_identity_that_reconnects_is_indexed_once_by_its_new_link_and_leaves_with_it():
    fleet = Fleet(random.Random(5))
    register = Register(protocol_version=PROTOCOL_VERSION, agent_version="test",
                        hardware=Hardware(chip="M4", memory_bytes=64 * GIB, gpu_cores=10), models=(entry_for(GPT),))
    router = fleet.router
    old = router.connect(register, lambda frame: None, provider_id="prov-identity", identity_id="identity")
    new = router.connect(register, lambda frame: None, provider_id="prov-identity", identity_id="identity")
    index = router.warm.model(GPT.id)
    assert [m.provider for m in index.members.values()] == [new] and old.offers[GPT.id].on_change is None
    status = SlotStatus(model=GPT.id, state=SlotState.IDLE, kv_budget_bytes=8 * GIB)
    for provider in (old, new):  # the replaced link's late heartbeat changes nothing the index holds
        router.receive(provider, Heartbeat(seq=provider.seq + 1, slots=(status,), memory=MemoryStatus(
            total_bytes=64 * GIB, available_bytes=32 * GIB, cap_bytes=57 * GIB)))
    assert fleet.router.try_dispatch(Exchange("r1", BODY, Ask(GPT.id, 100, 30, 64), 0.0)).best.provider is new
    router.disconnect(new, "test")
    assert not router.warm.model(GPT.id).members
