"""Where a request can go: agent.admission run on every provider's view, ranked. Pure.

For each provider of the model, the slot is classified by residency, and a warm slot's view (last
heartbeat netted by the pending sends, see pending.py) is put through `admit_request`, the function
the agent itself runs, with the agent's own limits and ratio (agent_limits.py) and a bound on the batch
padding the agent's replay finds (`padded_view`):

    admit     warm, admission says yes            ranked: shortest queue, fewest rows, most trusted, least recently sent
    full      warm, admission says not now        (or it runs the agent's max_num_seqs rows, or the agent
                                                  refused one since its last heartbeat)
    overflow  warm and admits, but unproven and holding its `unproven_max_in_flight` requests: used only
              when no other slot admits (a sinkhole costs that many requests while others have room, and a
              fresh fleet is not starved while it proves itself)
    waiting   loading, or cold and fits (after load_gate beside what is loaded): capacity that can come
    never     cannot serve this request at all, with the reason (the 503's explanation), or quarantined

"Never" is decided on the prompt's floor estimate (estimate.py); a slot that says never only on the
conservative estimate is an uncertain option, tried after the sure ones: the agent tokenizes and
decides.

`lazy` is the request path: warm slots are checked in rank order and the first that admits ends the
search (one or two admission checks instead of one per provider: admit_request replays the engine's
cache allocation and costs 0.1–1 ms). When none admits, the search also ends once MAX_FULL_CHECKS of
the best-ranked slots said "full": the request can run somewhere later, so it is queued, and every
provider's next heartbeat or completion tries the queue against that provider. The router's dispatch gets
the same Placement from its index of slots by rank (warm_index.py, which runs `search` without the scan).

A provider's free KV is its claim; its reputation (reputation.py) is what it has shown. The claim orders
nothing: among slots of the same rows and trust tier the one sent a request least recently goes first (round
robin), so a new provider advertising 1000 GiB does not win a single tie, while admission itself still runs
on the claimed numbers.

Public names: Ask, Option, Placement, Residency, place, search, check, padded_view, classify, cold_gate,
alone_budget_bytes; slot_view is slot_rank.py's, the order warm slots are tried in.
"""

from __future__ import annotations

import itertools

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from agent.admission import (
    AdmissionDecision,
    LoadDecision,
    SlotKV,
    Verdict,
    admit_request,
    expected_output_tokens,
    load_gate,
    memory_cap_bytes,
    min_kv_budget_bytes,
    reservation_bytes,
    resolve_max_tokens,
)
from agent.coordinator.routing.holder_preference import prefer_holder
from agent.coordinator.routing.agent_limits import limits_of, margin_bytes, ratio_of
from agent.coordinator.routing.registry import Offer, ProviderRecord
from agent.coordinator.routing.slot_rank import by_turn_within_ties, queue_rank, rank, slot_view, unusable
from agent.coordinator.routing.reputation import ReputationBook
from agent.coordinator.settings import CoordinatorSettings
from agent.wire.frames import SlotState

MAX_FULL_CHECKS = 8


class Residency(StrEnum):
    RUNNING = "running"
    IDLE = "idle"
    LOADING = "loading"
    COLD_FITS = "cold_fits"
    COLD_NO_ROOM = "cold_no_room"  # fits this machine, not beside what it has loaded now
    DRAINING = "draining"
    NEVER_FITS = "never_fits"


@dataclass(frozen=True, slots=True)
class Ask:
    model: str
    prompt_tokens: int  # the conservative estimate
    floor_prompt_tokens: int
    max_tokens: int | None  # as requested
    num_images: int = 0  # image parts: only slots with vision can serve it


@dataclass(frozen=True, slots=True)
class Option:
    provider: ProviderRecord
    offer: Offer
    decision: AdmissionDecision
    prompt_tokens: int
    max_tokens: int
    is_uncertain: bool = False


@dataclass(slots=True)
class Placement:
    model: str
    admit: list[Option] = field(default_factory=list)
    uncertain: list[Option] = field(default_factory=list)
    overflow: list[Option] = field(default_factory=list)  # admits, but unproven and at its in-flight cap
    full: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, str] = field(default_factory=dict)
    never: dict[str, str] = field(default_factory=dict)
    too_large: set[str] = field(default_factory=set)  # of `never`: refused for the request's own size (oversize.py)
    num_unchecked: int = 0  # warm slots a lazy search did not need to check

    @property
    def best(self) -> Option | None:
        return next(iter(self.admit or self.uncertain or self.overflow), None)

    @property
    def can_ever(self) -> bool:
        return bool(self.admit or self.uncertain or self.overflow or self.full or self.waiting or self.num_unchecked)

    def why_never(self) -> str:
        if not self.never:
            return f"no connected provider serves {self.model}"
        by_reason: dict[str, int] = {}
        for reason in self.never.values():
            by_reason[reason] = by_reason.get(reason, 0) + 1
        parts = [reason if n == 1 else f"{reason} ({n} providers)" for reason, n in by_reason.items()]
        return f"no provider can serve this {self.model} request: " + "; ".join(parts)




def padded_view(offer: Offer, prompt_tokens: int, expected_tokens: int, chunk: int) -> tuple[SlotKV, int]:
    """The slot's view and the length a new row is padded to, so that admit_request bounds what the agent's
    batch replay (engine/kv_tracker.py) finds: the new row sits beside the longest row until that one ends, so
    it is padded to the longest row's end; and while it is the longest, each of the n rows beside it is
    padded to its length, so the others hold at least n rows of its size."""
    view, status, pending = slot_view(offer), offer.status, offer.pending
    pad = max(status.kv_longest_row_end_tokens or 0, pending.longest_end_tokens, pending.pad_to_tokens)
    reported_rows = status.num_running + status.num_waiting
    num_rows = reported_rows + pending.load_delta(reported_rows)
    if num_rows:
        others = num_rows * reservation_bytes(offer.spec, prompt_tokens, expected_tokens, chunk=chunk)
        view = replace(view, reserved_bytes=max(view.reserved_bytes, others))
    return view, pad


def classify(provider: ProviderRecord, offer: Offer, now: float, settings: CoordinatorSettings) -> tuple[Residency, str]:
    why_not = unusable(provider, offer)
    if why_not:
        draining = offer.entry.fits and offer.spec is not None
        return (Residency.DRAINING if draining else Residency.NEVER_FITS), why_not
    if offer.is_warm:
        status = offer.status
        busy = status.num_running + status.num_waiting + offer.pending.num_in_flight
        if status.state is SlotState.RUNNING or busy:
            return Residency.RUNNING, f"{status.num_running} running, {status.num_waiting} waiting"
        return Residency.IDLE, "loaded, no requests"
    if offer.is_loading(now, settings.load_timeout_s):
        return Residency.LOADING, "loading" if offer.state is SlotState.LOADING else "load_model sent"
    if offer.load_refused_until > now:
        return Residency.COLD_NO_ROOM, f"the agent refused or failed to load it: {offer.load_refusal}"
    gate = cold_gate(provider, offer)
    return (Residency.COLD_FITS if gate.fits else Residency.COLD_NO_ROOM), f"cold; {gate.reason}"


def cold_gate(provider: ProviderRecord, offer: Offer) -> LoadDecision:
    """load_gate, as the agent runs it, beside the models the last heartbeat shows loaded (cached per heartbeat)."""
    if offer.gate_cache is not None and offer.gate_cache[0] == provider.seq:
        return offer.gate_cache[1]
    hardware, heartbeat = provider.register.hardware, provider.heartbeat
    metal = hardware.metal_working_set_bytes
    reserve, available, engine, loaded = 0, None, None, 0
    if heartbeat is not None:
        # The heartbeat's cap is the agent's own: the operator reserve is what separates it from the formula.
        reserve = max(0, memory_cap_bytes(hardware.memory_bytes, 0, metal) - heartbeat.memory.cap_bytes)
        available, engine = heartbeat.memory.available_bytes, heartbeat.memory.engine_bytes
        loaded = sum(_held_bytes(other) for other in provider.offers.values() if other is not offer)
    decision = load_gate(offer.spec, total_memory_bytes=hardware.memory_bytes, loaded_bytes=loaded,
                         operator_reserve_bytes=reserve, available_bytes=available,
                         metal_limit_bytes=metal, engine_bytes=engine)
    offer.gate_cache = (provider.seq, decision)
    return decision


def alone_budget_bytes(provider: ProviderRecord, offer: Offer) -> int:
    """The KV budget the model would have loaded alone on this machine (cached: it never changes)."""
    if offer.alone_budget_bytes is None:
        offer.alone_budget_bytes = load_gate(
            offer.spec, total_memory_bytes=provider.memory_bytes,
            metal_limit_bytes=provider.register.hardware.metal_working_set_bytes).kv_budget_bytes
    return offer.alone_budget_bytes


def _held_bytes(offer: Offer) -> int:
    # What a loaded slot keeps when another model loads, as the engine counts it: weights, activation
    # reserve, and its KV minimum or what its requests have committed, whichever is more.
    status = offer.status
    if status is None or offer.spec is None or status.state not in (SlotState.LOADING, SlotState.IDLE,
                                                                     SlotState.RUNNING, SlotState.UNLOADING):
        return 0
    if offer.min_kv_bytes is None:
        offer.min_kv_bytes = min_kv_budget_bytes(offer.spec)
    committed = max(status.kv_reserved_bytes, status.kv_used_bytes)
    weights = status.weights_bytes or offer.spec.weights_bytes
    return weights + offer.spec.activation_reserve_bytes + max(offer.min_kv_bytes, committed)


def check(offer: Offer, ask: Ask, *, prompt_tokens: int | None = None, view: SlotKV | None = None) -> AdmissionDecision:
    """admit_request with the agent's limits on the provider's view (or on `view`, e.g. an empty slot)."""
    spec, limits, ratio = offer.spec, limits_of(offer), ratio_of(offer)
    prompt = ask.prompt_tokens if prompt_tokens is None else prompt_tokens
    max_tokens = resolve_max_tokens(ask.max_tokens, prompt, spec.max_context, limits.default_max_tokens)
    chunk, pad = limits.prefill_chunk_tokens, 0
    if view is None:
        expected = expected_output_tokens(max_tokens, ratio, limits.output_clip_tokens)
        view, pad = padded_view(offer, prompt, expected, chunk)
    return admit_request(spec, view, prompt_tokens=prompt, max_tokens=max_tokens, ratio=ratio,
                         clip=limits.output_clip_tokens, pad_to_tokens=pad, chunk=chunk)


def place(offers: Iterable[tuple[ProviderRecord, Offer]], ask: Ask, settings: CoordinatorSettings, *, now: float,
          exclude: dict[str, str] | None = None, lazy: bool = True,
          reputation: ReputationBook | None = None, preferred: str | None = None) -> Placement:
    """`preferred`: the provider holding the request's prefix, tried first while its cached prefix outweighs its
    load (affinity.py: settings.prefix_affinity_slack_rows and prefix_affinity_max_load)."""
    placement = Placement(ask.model)
    exclude = exclude or {}
    warm: list[tuple[tuple, ProviderRecord, Offer]] = []
    others: list[tuple[ProviderRecord, Offer]] = []
    tier_now = reputation.clock() if reputation is not None else 0.0  # read once: this loop may see 1,000
    for provider, offer in offers:
        pid = provider.provider_id
        why_not = unusable(provider, offer) or _quarantined(provider, reputation) or _blind(offer, ask)
        if pid in exclude:
            placement.never[pid] = exclude[pid]
        elif why_not:
            placement.never[pid] = why_not
        elif offer.is_warm:
            tier = reputation.tier(pid, tier_now) if reputation is not None else 0
            warm.append((queue_rank(offer, tier), provider, offer))
        else:
            others.append((provider, offer))
    warm.sort(key=lambda item: item[0])
    first = prefer_holder(warm, preferred, settings.prefix_affinity_slack_rows, settings.prefix_affinity_max_load)
    num_warm = len(warm) + (first is not None)
    return search(placement, ask, settings, first, num_warm, by_turn_within_ties(warm), others, now=now,
                  lazy=lazy, reputation=reputation)


def search(placement: Placement, ask: Ask, settings: CoordinatorSettings,
           first: tuple[tuple, ProviderRecord, Offer] | None, num_warm: int,
           ordered: Iterable[tuple[ProviderRecord, Offer]], others: list[tuple[ProviderRecord, Offer]], *,
           now: float, lazy: bool, reputation: ReputationBook | None) -> Placement:
    """The checks, once the warm slots are in rank order (`first`, the preferred one, before `ordered`) and the
    others in the registry's: what `place` runs after its scan, and warm_index.place_indexed after its index."""
    for i, (provider, offer) in enumerate(ordered if first is None else itertools.chain([first[1:]], ordered)):
        if lazy and len(placement.full) >= MAX_FULL_CHECKS:
            placement.num_unchecked = num_warm - i + len(others)
            return placement
        _check_warm(placement, provider, offer, ask, reputation)
        if lazy and placement.admit:
            placement.num_unchecked = num_warm - i - 1 + len(others)
            return placement
    if lazy and placement.full:
        placement.num_unchecked = len(others)  # it can run here later: enough to queue it
        return placement
    for provider, offer in others:
        residency, reason = classify(provider, offer, now, settings)
        _potential(placement, provider, offer, residency, reason, ask)
    placement.uncertain.sort(key=lambda option: rank(option.offer))
    return placement




def _blind(offer: Offer, ask: Ask) -> str:
    """Why this slot cannot take the request's images: loaded text-only, or it would load without vision."""
    if not ask.num_images:
        return ""
    if offer.is_warm:
        return "" if "image" in offer.status.modalities else f"{offer.model} is loaded text-only there"
    vision = offer.entry.vision
    if vision is None:
        return f"{offer.model} has no vision there"
    return "" if vision.fits else f"{offer.model} would load text-only there: {vision.fit_reason}"








def _quarantined(provider: ProviderRecord, reputation: ReputationBook | None) -> str:
    return reputation.quarantine_reason(provider.provider_id) if reputation is not None else ""


def _unproven_cap(provider: ProviderRecord, reputation: ReputationBook | None) -> bool:
    """Whether an unproven provider holds as many requests as it may before others are preferred."""
    cap = reputation.max_in_flight(provider.provider_id) if reputation is not None else None
    return cap is not None and sum(offer.pending.num_in_flight for offer in provider.offers.values()) >= cap


def _check_warm(placement: Placement, provider: ProviderRecord, offer: Offer, ask: Ask,
                reputation: ReputationBook | None = None) -> None:
    pid = provider.provider_id
    limit = limits_of(offer).max_num_seqs
    if rank(offer)[1] >= limit:
        placement.full[pid] = f"{offer.model} is running its limit of {limit} requests"
        return
    decision = check(offer, ask)
    if decision.verdict is Verdict.NEVER:
        floor = check(offer, ask, prompt_tokens=ask.floor_prompt_tokens)
        if floor.verdict is Verdict.NEVER:
            placement.never[pid] = floor.reason
            placement.too_large.add(pid)
            return
        if floor.verdict is Verdict.FULL or offer.pending.is_marked_full:
            placement.full[pid] = floor.reason
            return
        placement.uncertain.append(_option(provider, offer, floor, ask, ask.floor_prompt_tokens, True))
    elif offer.pending.is_marked_full:
        placement.full[pid] = "refused a request as full since its last heartbeat"
    elif decision.verdict is Verdict.FULL:
        placement.full[pid] = decision.reason
    else:
        capped = _unproven_cap(provider, reputation)
        (placement.overflow if capped else placement.admit).append(
            _option(provider, offer, decision, ask, ask.prompt_tokens, False))


def _potential(placement: Placement, provider: ProviderRecord, offer: Offer, residency: Residency, reason: str,
               ask: Ask) -> None:
    """A loading or cold slot: could it serve this request once loaded? Its budget then, on the floor."""
    status = offer.status
    budget = status.kv_budget_bytes if status is not None and status.kv_budget_bytes else \
        alone_budget_bytes(provider, offer)
    empty = SlotKV(budget, 0, 0, margin_bytes(offer, budget))
    decision = check(offer, ask, prompt_tokens=ask.floor_prompt_tokens, view=empty)
    if decision.verdict is Verdict.NEVER:
        placement.never[provider.provider_id] = decision.reason
        placement.too_large.add(provider.provider_id)
    else:
        placement.waiting[provider.provider_id] = f"{residency.value}: {reason}"


def _option(provider: ProviderRecord, offer: Offer, decision: AdmissionDecision, ask: Ask, prompt_tokens: int,
            uncertain: bool) -> Option:
    max_tokens = resolve_max_tokens(ask.max_tokens, prompt_tokens, offer.spec.max_context,
                                    limits_of(offer).default_max_tokens)
    return Option(provider, offer, decision, prompt_tokens, max_tokens, uncertain)
