"""The memory gate: may a model load here, and may a request enter a slot now.

One module, two callers: the agent runs it against its live KV tracker, the coordinator runs the very
same functions against the last heartbeat minus what it has sent since, so the two cannot disagree.

    cap          = min(0.9 · RAM, RAM − 2 GiB) − operator reserve        (and ≤ Metal's working set)
    load need    = weights + activation reserve + min KV budget (≥ one full-context sequence)
    reservation  = engine KV bytes of prompt + expected output,  expected = min(max_tokens, clip) · ratio

Pure: standard library and the shared catalog/kvcost modules only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from agent.catalog import ModelSpec
from agent.kvcost import PREFILL_CHUNK_TOKENS, kv_peak_bytes_at
from agent.tables import human_bytes

GIB = 1024**3
SYSTEM_HEADROOM_BYTES = 2 * GIB
RAM_FRACTION = 0.9
OUTPUT_CLIP_TOKENS = 4096  # as SGLang: a huge max_tokens says little about the real output length
EXPECTED_OUTPUT_RATIO_START = 0.7
EXPECTED_OUTPUT_RATIO_FLOOR = 0.1


def memory_cap_bytes(total_bytes: int, operator_reserve_bytes: int = 0, metal_limit_bytes: int | None = None) -> int:
    """The most memory this agent may ever hold: models, activations and KV together."""
    cap = min(int(RAM_FRACTION * total_bytes), total_bytes - SYSTEM_HEADROOM_BYTES) - operator_reserve_bytes
    if metal_limit_bytes is not None:
        cap = min(cap, metal_limit_bytes)
    return max(cap, 0)


def min_kv_budget_bytes(spec: ModelSpec, min_sequences: int = 1, context_tokens: int | None = None) -> int:
    """KV a model must be able to hold to be worth loading: min_sequences sequences at full context."""
    context = context_tokens or spec.max_context
    return min_sequences * kv_peak_bytes_at(spec, context)


def machine_room_bytes(available_bytes: int | None, engine_bytes: int | None, promised_bytes: int) -> int | None:
    """Room this engine can still count on beside every other process: what the OS has available, plus
    what the engine itself has allocated, less what it has promised (loaded models, KV budgets). None
    without both live readings. Another agent's or app's memory is in neither, so it is never counted
    as free."""
    if available_bytes is None or engine_bytes is None:
        return None
    return available_bytes + engine_bytes - promised_bytes


@dataclass(frozen=True, slots=True)
class LoadDecision:
    model: str
    fits: bool
    reason: str
    cap_bytes: int
    loaded_bytes: int
    weights_bytes: int
    activation_reserve_bytes: int
    min_kv_budget_bytes: int
    kv_budget_bytes: int  # what is left for KV if the model loads (0 if it does not fit)

    @property
    def need_bytes(self) -> int:
        return self.weights_bytes + self.activation_reserve_bytes + self.min_kv_budget_bytes


def load_gate(
    spec: ModelSpec,
    *,
    total_memory_bytes: int,
    loaded_bytes: int = 0,
    operator_reserve_bytes: int = 0,
    min_kv_sequences: int = 1,
    available_bytes: int | None = None,
    metal_limit_bytes: int | None = None,
    engine_bytes: int | None = None,
) -> LoadDecision:
    """May `spec` load beside `loaded_bytes` already held? `available_bytes` is the OS's live view and
    `engine_bytes` what this engine has allocated now (so not in it): with both, the room is also bounded by
    what other processes leave (machine_room_bytes), not by the cap alone."""
    cap = memory_cap_bytes(total_memory_bytes, operator_reserve_bytes, metal_limit_bytes)
    min_kv = min_kv_budget_bytes(spec, min_kv_sequences)
    fixed = spec.weights_bytes + spec.activation_reserve_bytes
    machine_room = machine_room_bytes(available_bytes, engine_bytes, loaded_bytes)
    room = cap - loaded_bytes if machine_room is None else min(cap - loaded_bytes, machine_room)
    need = fixed + min_kv
    if need > cap:
        reason = f"needs {_gib(need)} (weights {_gib(spec.weights_bytes)} + activations " \
                 f"{_gib(spec.activation_reserve_bytes)} + KV for {min_kv_sequences} full-context sequence(s) " \
                 f"{_gib(min_kv)}) but this machine's cap is {_gib(cap)}"
    elif need > cap - loaded_bytes:
        reason = f"needs {_gib(need)} but only {_gib(cap - loaded_bytes)} of the {_gib(cap)} cap is left beside " \
                 f"{_gib(loaded_bytes)} already loaded"
    elif need > room:
        others = max(0, total_memory_bytes - (available_bytes or 0) - (engine_bytes or 0))
        reason = f"needs {_gib(need)} but only {_gib(max(room, 0))} is free for it: the OS reports " \
                 f"{_gib(available_bytes or 0)} available now and other processes hold {_gib(others)}"
    elif machine_room is None and available_bytes is not None and need > available_bytes:
        reason = f"needs {_gib(need)} but the OS reports only {_gib(available_bytes)} available now"
    else:
        budget = room - fixed
        return LoadDecision(spec.id, True, f"fits: {_gib(budget)} left for KV", cap, loaded_bytes,
                            spec.weights_bytes, spec.activation_reserve_bytes, min_kv, budget)
    return LoadDecision(spec.id, False, reason, cap, loaded_bytes, spec.weights_bytes,
                        spec.activation_reserve_bytes, min_kv, 0)


class Verdict(StrEnum):
    ADMIT = "admit"
    FULL = "full"  # not now: retry here later, or elsewhere now
    NEVER = "never"  # not on this slot, whatever it frees


@dataclass(frozen=True, slots=True)
class SlotKV:
    """A slot's KV tracker: its budget, what admitted requests have reserved, what the caches hold."""

    budget_bytes: int
    reserved_bytes: int = 0
    used_bytes: int = 0
    safety_margin_bytes: int = 0
    cached_bytes: int = 0  # the prefix cache: held beside the rows, evicted (least recently used) before a refusal

    @property
    def free_bytes(self) -> int:
        # Requests may outgrow their expected-output reservations, so whichever is larger is committed.
        return (self.budget_bytes - self.safety_margin_bytes - max(self.reserved_bytes, self.used_bytes)
                - self.cached_bytes)


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    verdict: Verdict
    reason: str
    reservation_bytes: int
    expected_output_tokens: int
    free_bytes: int

    @property
    def admitted(self) -> bool:
        return self.verdict is Verdict.ADMIT


def expected_output_tokens(max_tokens: int, ratio: float, clip: int | None = OUTPUT_CLIP_TOKENS) -> int:
    """None for `clip`: no clip (what the coordinator assumes of an agent that does not say its clip)."""
    return max(1, math.ceil((max_tokens if clip is None else min(max_tokens, clip)) * ratio))


def resolve_max_tokens(requested: int | None, prompt_tokens: int, max_context: int, default: int | None) -> int:
    """The output limit a request runs with: its own, or the agent's `default` within the context left
    (None: the whole context left, the most it could be)."""
    if requested:
        return requested
    room = max(max_context - prompt_tokens, 1)
    return room if default is None else min(default, room)


def safety_margin_bytes(budget_bytes: int, margin: float) -> int:
    """The share of a slot's budget kept free (the agent's ledger and the coordinator's view both use this)."""
    return int(budget_bytes * margin)


def reservation_bytes(spec: ModelSpec, prompt_tokens: int, output_tokens: int, pad_to_tokens: int = 0,
                      chunk: int = PREFILL_CHUNK_TOKENS) -> int:
    """Engine bytes for a request holding prompt + output tokens; in a batch every row is as long as
    the longest, so `pad_to_tokens` is the longest row it will sit beside; `chunk` is the prefill chunk."""
    total = max(prompt_tokens + output_tokens, pad_to_tokens)
    return kv_peak_bytes_at(spec, total, prompt_tokens=min(prompt_tokens, total), chunk=chunk)


def admit_request(
    spec: ModelSpec,
    slot: SlotKV,
    *,
    prompt_tokens: int,
    max_tokens: int,
    ratio: float = EXPECTED_OUTPUT_RATIO_START,
    clip: int | None = OUTPUT_CLIP_TOKENS,
    pad_to_tokens: int = 0,
    chunk: int = PREFILL_CHUNK_TOKENS,
) -> AdmissionDecision:
    """Check, never commit: the caller adds `reservation_bytes` to its ledger when it admits."""
    expected = expected_output_tokens(max_tokens, ratio, clip)
    reservation = reservation_bytes(spec, prompt_tokens, expected, pad_to_tokens, chunk)
    free = slot.free_bytes
    worst = prompt_tokens + max_tokens
    if worst > spec.max_context:
        return AdmissionDecision(Verdict.NEVER, f"prompt {prompt_tokens} + max_tokens {max_tokens} tokens exceeds "
                                 f"{spec.id}'s context of {spec.max_context}", reservation, expected, free)
    worst_bytes = reservation_bytes(spec, prompt_tokens, max_tokens, chunk=chunk)
    if worst_bytes > slot.budget_bytes - slot.safety_margin_bytes:
        return AdmissionDecision(Verdict.NEVER, f"{worst} tokens need {_gib(worst_bytes)} of KV, more than the "
                                 f"slot's whole budget of {_gib(slot.budget_bytes)}", reservation, expected, free)
    if reservation > free:
        return AdmissionDecision(Verdict.FULL, f"needs {_gib(reservation)} of KV for {prompt_tokens} + {expected} "
                                 f"expected tokens, {_gib(max(free, 0))} free now", reservation, expected, free)
    return AdmissionDecision(Verdict.ADMIT, f"reserved {_gib(reservation)} for {prompt_tokens} + {expected} "
                             f"expected tokens", reservation, expected, free)


def _gib(num_bytes: int) -> str:
    return human_bytes(num_bytes)
