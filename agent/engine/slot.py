"""A model slot: its residency state machine, its KV tracker, its open streams and its speed.

    cold ──load──▶ loading ──▶ idle ⇄ running
     ▲               │          │        │
     │               ▼          ▼        ▼
     └──────────── failed    unloading ──▶ cold

One owner (the engine, on the event loop) changes the state, only through `transition`, which checks
the move is allowed, logs it (`slot.state`) and then tells `on_transition` (the engine passes it on to
its listeners: that is how the daemon heartbeats a change at once, with nothing polling). A refused load never leaves cold (the reason is kept);
a failed load or unload ends in failed, with the reason, and a new load may be tried from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from agent.catalog import ModelSpec
from agent.engine.kv_tracker import KVTracker
from agent.engine.ratio import OutputRatio
from agent.engine.stream import RequestStream
from agent.engine.types import SlotListener, SlotSnapshot, SlotState, SlotTransition
from agent.kvcost import kv_bytes_per_token

log = structlog.get_logger(__name__)

ALLOWED: dict[SlotState, frozenset[SlotState]] = {
    SlotState.COLD: frozenset({SlotState.LOADING}),
    SlotState.LOADING: frozenset({SlotState.IDLE, SlotState.FAILED, SlotState.COLD}),
    SlotState.IDLE: frozenset({SlotState.RUNNING, SlotState.UNLOADING}),
    SlotState.RUNNING: frozenset({SlotState.IDLE, SlotState.UNLOADING}),
    SlotState.UNLOADING: frozenset({SlotState.COLD, SlotState.FAILED}),
    SlotState.FAILED: frozenset({SlotState.LOADING, SlotState.COLD}),
}
SERVING = frozenset({SlotState.IDLE, SlotState.RUNNING})
STATS_WINDOW_SECONDS = 0.5  # rates are measured over windows at least this long, then averaged
STATS_SMOOTHING = 0.3


class InvalidTransition(RuntimeError):
    """A bug: the engine tried a move the state machine does not allow."""


class SlotListeners:
    """Who is told of slot transitions, in the order they were added."""

    def __init__(self) -> None:
        self._listeners: list[SlotListener] = []

    def add(self, listener: SlotListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def __call__(self, change: SlotTransition) -> None:
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:  # a listener's bug must not undo a transition that has happened
                log.exception("slot.listener_failed", model=change.model, new=str(change.new))


@dataclass(slots=True)
class RateAverage:
    """Tokens per second, as a moving average of windows of at least STATS_WINDOW_SECONDS."""

    value: float = 0.0
    _tokens: int = 0
    _seconds: float = 0.0

    def add(self, num_tokens: int, seconds: float) -> None:
        self._tokens += num_tokens
        self._seconds += seconds
        if self._seconds >= STATS_WINDOW_SECONDS:
            rate = self._tokens / self._seconds
            self.value = rate if self.value == 0.0 else self.value + STATS_SMOOTHING * (rate - self.value)
            self._tokens, self._seconds = 0, 0.0


@dataclass(slots=True)
class Slot:
    model: str
    spec: ModelSpec
    source: Path | None = None
    state: SlotState = SlotState.COLD
    reason: str = ""
    ratio: OutputRatio = field(init=False)
    kv_tracker: KVTracker | None = None  # while loaded
    streams: dict[str, RequestStream] = field(default_factory=dict)
    weights_bytes: int = 0
    has_vision: bool = False  # loaded with its vision tower: takes images
    vision_reason: str = ""  # why a model with vision was loaded text-only (empty otherwise)
    idle_since: float = 0.0
    prefill_rate: RateAverage = field(default_factory=RateAverage)
    decode_rate: RateAverage = field(default_factory=RateAverage)
    on_transition: Callable[[SlotTransition], None] | None = None  # called after every move, on the same thread

    def __post_init__(self) -> None:
        self.ratio = OutputRatio(model=self.model)  # outlives loads: what it learned still holds

    def transition(self, to: SlotState, reason: str = "") -> None:
        if to not in ALLOWED[self.state]:
            raise InvalidTransition(f"slot {self.model}: {self.state} -> {to} is not allowed")
        log.info("slot.state", model=self.model, old=str(self.state), new=str(to), reason=reason or None)
        old, self.state = self.state, to
        if reason or to in (SlotState.LOADING, SlotState.IDLE):
            self.reason = reason
        if self.on_transition is not None:
            self.on_transition(SlotTransition(self.model, old, to, reason))

    @property
    def resident_spec(self) -> ModelSpec:
        """The spec as loaded: with the vision tower's weights and reserve when it is loaded with vision."""
        return self.spec.with_vision() if self.has_vision else self.spec

    @property
    def modalities(self) -> tuple[str, ...]:
        return ("text", "image") if self.has_vision else ("text",)

    @property
    def is_serving(self) -> bool:
        return self.state in SERVING

    @property
    def num_running(self) -> int:
        return sum(1 for stream in self.streams.values() if stream.has_started)

    def snapshot(self) -> SlotSnapshot:
        kv_tracker = self.kv_tracker
        running = self.num_running
        return SlotSnapshot(
            model=self.model,
            state=self.state,
            num_running=running,
            num_waiting=len(self.streams) - running,
            kv_bytes_per_token=kv_bytes_per_token(self.spec),
            kv_budget_bytes=kv_tracker.budget_bytes if kv_tracker else 0,
            kv_reserved_bytes=kv_tracker.reserved_bytes if kv_tracker else 0,
            kv_used_bytes=kv_tracker.used_bytes if kv_tracker else 0,
            prefill_tps=round(self.prefill_rate.value, 1),
            decode_tps=round(self.decode_rate.value, 1),
            weights_bytes=self.weights_bytes,
            expected_output_ratio=self.ratio.value,
            reason=self.reason,
            kv_longest_row_end_tokens=kv_tracker.longest_row_end_tokens if kv_tracker else 0,
            modalities=self.modalities,
            vision_reason=self.vision_reason,
            **_prefix_fields(kv_tracker),
        )


def _prefix_fields(kv_tracker: KVTracker | None) -> dict[str, int | float | tuple[str, ...]]:
    if kv_tracker is None:
        return {}
    prefixes = kv_tracker.prefixes
    return {"kv_cached_bytes": prefixes.cached_bytes, "prefix_hit_rate": round(prefixes.stats.hit_rate, 4),
            "prefix_hit_tokens": prefixes.stats.hit_tokens, "prefix_evictions": prefixes.stats.num_evictions,
            "prefix_chains": prefixes.chains()}
