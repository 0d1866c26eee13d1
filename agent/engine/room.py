"""Memory across an engine's slots: the load gate beside what is loaded, and the KV room split between them.

Pure on the slots' numbers (no MLX, no I/O): the engine core calls these on every load and unload.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.admission import (
    LoadDecision,
    load_gate,
    machine_room_bytes,
    memory_cap_bytes,
    min_kv_budget_bytes,
    safety_margin_bytes,
)
from agent.engine.memory import MemoryProbe
from agent.engine.slot import Slot


def held_bytes(slot: Slot, min_kv_sequences: int) -> int:
    """What a loaded slot keeps when another model loads: weights, reserve, its KV minimum or more."""
    committed = max(slot.kv_tracker.reserved_bytes, slot.kv_tracker.used_bytes)
    spec = slot.resident_spec
    minimum = min_kv_budget_bytes(spec, min_kv_sequences)
    return spec.weights_bytes + spec.activation_reserve_bytes + max(minimum, committed)


def gate(slot: Slot, loaded: Iterable[Slot], memory: MemoryProbe, *, operator_reserve_bytes: int,
         min_kv_sequences: int, with_vision: bool = False) -> LoadDecision:
    """May `slot`'s model load (with its vision tower, if asked) beside the `loaded` slots, on this machine, now."""
    spec = slot.spec.with_vision() if with_vision else slot.spec
    return load_gate(spec, total_memory_bytes=memory.total_bytes(),
                     loaded_bytes=sum(held_bytes(s, min_kv_sequences) for s in loaded),
                     operator_reserve_bytes=operator_reserve_bytes, min_kv_sequences=min_kv_sequences,
                     available_bytes=memory.available_bytes(), metal_limit_bytes=memory.metal_limit_bytes(),
                     engine_bytes=memory.engine_bytes())


def split_kv_room(loaded: list[Slot], memory: MemoryProbe, *, operator_reserve_bytes: int, min_kv_sequences: int,
                  max_kv_budget_bytes: int | None, kv_safety_margin: float) -> None:
    """Give each loaded slot its share of the KV room left beside every loaded model's weights and reserve,
    in proportion to their minimum budgets (one full-context sequence each). The room is the cap's, or less
    where other processes hold more than the cap leaves them (admission.machine_room_bytes)."""
    if not loaded:
        return
    cap = memory_cap_bytes(memory.total_bytes(), operator_reserve_bytes, memory.metal_limit_bytes())
    fixed = sum(slot.resident_spec.weights_bytes + slot.resident_spec.activation_reserve_bytes for slot in loaded)
    machine_room = machine_room_bytes(memory.available_bytes(), memory.engine_bytes(), fixed)
    room = cap - fixed if machine_room is None else min(cap - fixed, machine_room)
    minimums = {slot.model: min_kv_budget_bytes(slot.spec, min_kv_sequences) for slot in loaded}
    for slot in loaded:
        budget = max(0, room) * minimums[slot.model] // max(1, sum(minimums.values()))
        if max_kv_budget_bytes is not None:
            budget = min(budget, max_kv_budget_bytes)
        slot.kv_tracker.safety_margin_bytes = safety_margin_bytes(budget, kv_safety_margin)
        slot.kv_tracker.set_budget(budget)
