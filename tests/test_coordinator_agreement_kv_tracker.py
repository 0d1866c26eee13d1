"""The two real deciders on one state: the engine's KVTracker.check and the coordinator's placement.

The agent's side is the real ledger (agent/engine/kv_tracker.py: its batch replay, padding and prefill
groups) holding rows decoding in the generation batch and rows admitted but still waiting for prefill,
in groups of different chunk counts. Its heartbeat is built by the real path (Slot.snapshot through the
provider's slot status) and its register by the real provider over an engine configured with the grid's
numbers; the coordinator's side is a real Router fed those frames, with the links quiet. Over a grid that
includes the places they can differ (rows mid-prefill, mixed chunk counts, near the safety margin, near
the row limit, a new row longer than the batch), the verdicts are equal where the coordinator can see
everything the agent sees, and elsewhere the coordinator errs only one way: it never admits what the
agent refuses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent.admission import Verdict, reservation_bytes, resolve_max_tokens, safety_margin_bytes
from agent.catalog import ModelSpec
from agent.coordinator.routing.placement import Ask
from agent.coordinator.routing.router import Router
from agent.daemon.handler import LinkHandler, MemoryReading
from agent.engine.batch_kv import BatchKV
from agent.engine.core import EngineConfig
from agent.engine.fake import FakeEngine
from agent.engine.kv_tracker import KVTracker
from agent.engine.schedule import ScheduleLimits
from agent.engine.slot import Slot
from agent.engine.stream import RequestStream
from agent.engine.types import Delta
from agent.wire.frames import Hardware, Heartbeat, MemoryStatus, SlotState
from tests.provider_support import GEMMA, GIB, GPT


@dataclass(frozen=True)
class Row:
    prompt: int
    max_tokens: int
    steps: int | None  # decode steps done in the generation batch; None: admitted, waiting for prefill


# States of one slot. Chunk counts at 512: 100 → 1, 700 → 2, 1500 → 3, 3000 → 6.
STATES = {
    "empty": (),
    "decoding": (Row(300, 256, 40), Row(300, 256, 40)),
    "mid_prefill": (Row(300, 256, 20), Row(1500, 512, None)),
    "mixed_chunks": (Row(3000, 128, 5), Row(100, 64, None), Row(700, 256, None), Row(1500, 128, None)),
    "long_beside_short": (Row(3000, 1024, 300), Row(120, 64, 30), Row(90, 2048, 30)),
    "short_batch": (Row(80, 64, 10), Row(90, 64, 10), Row(70, 32, 10)),
    "five_rows": tuple(Row(100, 64, 3) for _ in range(5)),  # the second config's row limit
}
REQUESTS = [(40, 32), (300, 256), (700, None), (1500, 4096), (6000, 512), (20_000, 100_000)]
BUDGET_SHARES = (0.97, 1.0, 1.03, 1.5)  # of the state's reservation plus a mid request's: near the margin
RATIOS = (0.7, 0.23)
CONFIGS = (EngineConfig(), EngineConfig(kv_safety_margin=0.12, max_num_seqs=5, default_max_tokens=900,
                                        schedule=ScheduleLimits(chunk_tokens=1024)))


def build_ledger(spec: ModelSpec, rows: tuple[Row, ...], config: EngineConfig, ratio: float) -> KVTracker:
    ledger = KVTracker(spec, 64 * GIB, max_num_seqs=1024, schedule=config.schedule)
    ledger.ratio.value = ratio
    batch = BatchKV(spec)
    for i, row in enumerate(rows):
        assert ledger.admit(f"s{i}", row.prompt, row.max_tokens).admitted
        if row.steps is not None:
            group, _ = BatchKV.prefilled(spec, [f"s{i}"], [row.prompt], config.prefill_chunk_tokens)
            batch.join(group)
    batch.step(max((row.steps or 0 for row in rows), default=0))
    for i, row in enumerate(rows):
        if row.steps:
            ledger.progress(f"s{i}", row.steps)
    ledger.reconcile(batch.nbytes, batch)
    ledger.max_num_seqs = config.max_num_seqs
    return ledger


def set_budget(ledger: KVTracker, budget: int, margin: float) -> None:
    """As the engine's rebalance does: margin first, then the budget."""
    ledger.safety_margin_bytes = safety_margin_bytes(budget, margin)
    ledger.set_budget(budget)


def heartbeat_of(spec: ModelSpec, ledger: KVTracker, provider: LinkHandler, seq: int) -> Heartbeat:
    """The real heartbeat path: an engine slot holding this ledger and one stream per row."""
    slot = Slot(spec.id, spec, state=SlotState.RUNNING if ledger.rows else SlotState.IDLE)
    slot.kv_tracker, slot.ratio = ledger, ledger.ratio
    for request_id, row in ledger.rows.items():
        stream = RequestStream(request_id, row.prompt_tokens, ledger.check("probe", 1, 1), _no_cancel)
        if row.generated_tokens:
            stream.push(Delta(content="x", num_tokens=row.generated_tokens))
        slot.streams[request_id] = stream
    status = provider._slot_status(slot.snapshot())
    memory = MemoryStatus(total_bytes=64 * GIB, available_bytes=32 * GIB, cap_bytes=57 * GIB)
    return Heartbeat(seq=seq, slots=(status,), memory=memory)


async def _no_cancel(request_id: str) -> bool:
    return False


def agent_provider(config: EngineConfig) -> LinkHandler:
    engine = FakeEngine({GPT.id: GPT, GEMMA.id: GEMMA}, memory_bytes=64 * GIB, config=config)
    hardware = Hardware(chip="Test M4", memory_bytes=64 * GIB, gpu_cores=10)
    return LinkHandler(engine, {GPT.id: GPT, GEMMA.id: GEMMA}, hardware, lambda: MemoryReading(64 * GIB, 32 * GIB))


def coordinator_verdict(router: Router, provider_id: str, model: str, prompt: int, max_tokens: int | None) -> Verdict:
    placement = router.placement(Ask(model, prompt, prompt, max_tokens))
    if any(option.provider.provider_id == provider_id and not option.is_uncertain for option in placement.admit):
        return Verdict.ADMIT
    if provider_id in placement.never:
        return Verdict.NEVER
    assert provider_id in placement.full, placement
    return Verdict.FULL


@dataclass
class Case:
    spec: str
    state: str
    config: int
    budget_share: float
    ratio: float
    prompt: int
    max_tokens: int | None
    agent: Verdict
    coordinator: Verdict


def run_grid() -> list[Case]:
    cases = []
    for config_index, config in enumerate(CONFIGS):
        agent = agent_provider(config)
        register = agent.register_frame()
        for spec in (GPT, GEMMA):
            for state, rows in STATES.items():
                for ratio in RATIOS:
                    ledger = build_ledger(spec, rows, config, ratio)
                    mid = reservation_bytes(spec, 300, 256, chunk=config.prefill_chunk_tokens)
                    for share in BUDGET_SHARES:
                        budget = math.ceil((ledger.reserved_bytes + mid) * share / (1 - config.kv_safety_margin))
                        set_budget(ledger, budget, config.kv_safety_margin)
                        router = Router()
                        provider = router.connect(register, lambda frame: None)
                        router.receive(provider, heartbeat_of(spec, ledger, agent, seq=1))
                        for prompt, max_tokens in REQUESTS:
                            resolved = resolve_max_tokens(max_tokens, prompt, spec.max_context,
                                                          config.default_max_tokens)
                            theirs = ledger.check("new", prompt, resolved).verdict
                            ours = coordinator_verdict(router, provider.provider_id, spec.id, prompt, max_tokens)
                            cases.append(Case(spec.id, state, config_index, share, ratio, prompt, max_tokens,
                                              theirs, ours))
    return cases


CASES = run_grid()


def test_the_coordinator_never_admits_what_the_real_ledger_refuses():
    wrong = [case for case in CASES if case.coordinator is Verdict.ADMIT and case.agent is not Verdict.ADMIT]
    assert not wrong, wrong[:5]


def test_on_an_empty_slot_the_two_deciders_give_the_same_verdict():
    empty = [case for case in CASES if case.state == "empty"]
    assert empty and all(case.agent is case.coordinator for case in empty), \
        [case for case in empty if case.agent is not case.coordinator][:5]


def test_a_request_that_can_never_fit_is_refused_as_never_by_both():
    for case in CASES:
        assert (case.agent is Verdict.NEVER) == (case.coordinator is Verdict.NEVER), case


def test_at_the_agents_row_limit_both_say_full_and_one_row_below_both_admit():
    at_limit = [case for case in CASES if case.state == "five_rows" and case.config == 1]  # max_num_seqs=5
    assert at_limit and all(case.agent is case.coordinator is not Verdict.ADMIT for case in at_limit)
    assert any(case.agent is Verdict.FULL for case in at_limit)
    below = [case for case in CASES if case.state == "mixed_chunks" and case.config == 1]  # four rows
    assert any(case.agent is case.coordinator is Verdict.ADMIT for case in below)


def test_the_grid_covers_admits_and_refusals_in_every_state_and_mostly_agrees():
    for state in set(STATES) - {"five_rows"}:
        here = [case for case in CASES if case.state == state]
        assert any(c.agent is c.coordinator is Verdict.ADMIT for c in here), state  # not refusing everything
        if state != "empty":  # an empty slot that cannot hold a request never will: never, not full
            assert any(c.agent is Verdict.FULL for c in here), state  # near the margin the agent says full
    agreed = sum(case.agent is case.coordinator for case in CASES)
    assert agreed >= 0.85 * len(CASES), f"{agreed} of {len(CASES)}"
