"""Connected providers: what each registered, its last heartbeat, and its pending sends per model.

A provider is one agent connection (a reconnect registers a new one: its old in-flight requests were
lost with the link). A provider identity keeps its provider id across connections; only one is live. Each model it registered is an `Offer`: the catalog entry it sent, the ModelSpec
rebuilt from the entry's `kv_layout` (or the coordinator's catalog), the slot status of the last
heartbeat, the pending sends and the state of any load_model the coordinator asked for.

Pure bookkeeping: no sockets, no awaiting; `send` is whatever puts a frame on the provider's outbox.
`arrival(model)` is a future that `add` resolves when a provider offering that model registers: a
retry that found every link down waits on it for the agents to reconnect (flow.py), not on a timer.
`first_seen` remembers when each model was first registered (a wall-clock time, /v1/models' `created`),
after its last provider left too, so it stays listed and answers 503 rather than 404; it remembers at most
`max_remembered_models`, first come (a provider inventing names cannot grow it).

Public names: ProviderRecord, Offer, Registry, spec_for_entry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agent.catalog import DTYPE_BYTES, KVLayer, LayerKind, ModelSpec
from agent.coordinator.routing.pending import PendingSends
from agent.wire.frames import Heartbeat, ModelEntry, Register, SlotState, SlotStatus
from agent.wire.protocol import Message

WARM_STATES = frozenset({SlotState.IDLE, SlotState.RUNNING})
COLD_BEATS_BEFORE_REFUSED = 2  # heartbeats still showing cold after a load_model: the agent refused it


MAX_INTERNED_SPECS = 1024  # distinct specs shared between providers; a peer inventing more only loses the sharing
_interned: dict[ModelSpec, ModelSpec] = {}


def _shared(spec: ModelSpec) -> ModelSpec:
    """One instance per distinct spec: admission's caches then compare a spec by identity, not layer by layer."""
    found = _interned.get(spec)
    if found is not None:
        return found
    if len(_interned) < MAX_INTERNED_SPECS:
        _interned[spec] = spec
    return spec


def spec_for_entry(entry: ModelEntry, catalog: dict[str, ModelSpec]) -> tuple[ModelSpec | None, str]:
    """The exact ModelSpec of a registered model (shared with every provider that registers the same one), or
    None and why the coordinator cannot admit for it."""
    spec, error = _spec_for_entry(entry, catalog)
    return (_shared(spec) if spec is not None else None), error


def _spec_for_entry(entry: ModelEntry, catalog: dict[str, ModelSpec]) -> tuple[ModelSpec | None, str]:
    layout, known = entry.kv_layout, catalog.get(entry.id)
    # A model the catalog knows is never planned beyond the catalog's context, whatever the peer claims.
    max_context = min(entry.max_context, known.max_context) if known is not None else entry.max_context
    if layout is not None:
        if layout.kv_dtype not in DTYPE_BYTES:
            return None, f"unknown kv_dtype {layout.kv_dtype!r} in its kv_layout"
        layers = tuple(KVLayer(LayerKind(layer.kind), layer.num_kv_heads, layer.head_dim) for layer in layout.layers)
        return ModelSpec(id=entry.id, architecture=layout.architecture, kv_layers=layers,
                         sliding_window=max(layout.sliding_window, 1), kv_dtype=layout.kv_dtype,
                         max_context=max_context, weights_bytes=entry.weights_bytes,
                         activation_reserve_bytes=entry.activation_reserve_bytes), ""
    if known is None:
        return None, "its register entry has no kv_layout and the model is not in the coordinator's catalog"
    return ModelSpec(id=entry.id, architecture=known.architecture, kv_layers=known.kv_layers,
                     sliding_window=known.sliding_window, kv_dtype=known.kv_dtype, max_context=max_context,
                     weights_bytes=entry.weights_bytes or known.weights_bytes,
                     activation_reserve_bytes=entry.activation_reserve_bytes or known.activation_reserve_bytes), ""


@dataclass(slots=True)
class Offer:
    """One model of one provider."""

    entry: ModelEntry
    spec: ModelSpec | None
    spec_error: str = ""
    status: SlotStatus | None = None
    pending: PendingSends = field(default_factory=PendingSends)
    load_requested_at: float | None = None
    cold_beats_since_load: int = 0
    load_refused_until: float = 0.0
    load_refusal: str = ""
    retry_after_hint_s: float | None = None
    gate_cache: tuple[int, Any] | None = None  # (heartbeat seq, LoadDecision beside what is loaded)
    alone_budget_bytes: int | None = None  # KV budget if this model were loaded alone
    min_kv_bytes: int | None = None  # one full-context sequence: what a loaded slot keeps at least
    on_change: Callable[[], None] | None = None  # told of each heartbeat's status (the router's warm_index.py)
    last_sent: int = 0  # the router's count of sends when it last sent this slot a request (0: never)

    @property
    def model(self) -> str:
        return self.entry.id

    @property
    def state(self) -> SlotState:
        return self.status.state if self.status is not None else SlotState.COLD

    @property
    def is_warm(self) -> bool:
        return self.status is not None and self.status.state in WARM_STATES and self.status.kv_budget_bytes > 0

    def is_loading(self, now: float, load_timeout_s: float) -> bool:
        if self.state is SlotState.LOADING:
            return True
        return self.load_requested_at is not None and now - self.load_requested_at < load_timeout_s

    def observe(self, status: SlotStatus | None, now: float, cooldown_s: float) -> None:
        """A heartbeat's status for this slot (None: the heartbeat did not list it)."""
        self.status = status if status is not None else self.status
        if self.on_change is not None:
            self.on_change()
        if self.load_requested_at is None:
            return
        state = self.state
        if state in (SlotState.LOADING, SlotState.IDLE, SlotState.RUNNING):
            self.load_requested_at = None
        elif state is SlotState.FAILED:
            self._refused(now, cooldown_s, status.failure_reason if status else None)
        elif state is SlotState.COLD:
            self.cold_beats_since_load += 1
            if self.cold_beats_since_load >= COLD_BEATS_BEFORE_REFUSED:
                self._refused(now, cooldown_s, status.failure_reason if status else None)

    def load_requested(self, now: float) -> None:
        self.load_requested_at, self.cold_beats_since_load = now, 0

    def _refused(self, now: float, cooldown_s: float, reason: str | None) -> None:
        self.load_requested_at = None
        self.load_refused_until = now + cooldown_s
        self.load_refusal = reason or "the agent did not load it"


@dataclass(slots=True)
class ProviderRecord:
    provider_id: str
    register: Register
    offers: dict[str, Offer]
    send: Callable[[Message], None]
    connected_at: float
    last_seen: float  # time of the register or the last heartbeat: eviction counts from it
    heartbeat: Heartbeat | None = None
    exchanges: dict[str, Any] = field(default_factory=dict)  # request_id -> the Exchange whose attempt is here
    is_connected: bool = True
    close: Callable[[str], None] = field(default=lambda reason: None)  # ends the link (eviction)
    identity_id: str | None = None  # the provider identity it authenticated as (None: shared token, open use)

    @property
    def memory_bytes(self) -> int:
        return self.register.hardware.memory_bytes

    @property
    def is_draining(self) -> bool:
        return self.heartbeat is not None and self.heartbeat.draining

    @property
    def seq(self) -> int:
        return self.heartbeat.seq if self.heartbeat is not None else -1

    def offer_holding(self, request_id: str) -> Offer | None:
        """The offer whose pending sends hold this request (a provider serves a handful of models)."""
        for offer in self.offers.values():
            if request_id in offer.pending:
                return offer
        return None


class Registry:
    def __init__(self, *, max_remembered_models: int = 64, wall_clock: Callable[[], float] = time.time) -> None:
        self._providers: dict[str, ProviderRecord] = {}
        self.first_seen: dict[str, float] = {}
        self._max_remembered = max_remembered_models
        self._wall_clock = wall_clock
        self._by_model: dict[str, dict[str, ProviderRecord]] = {}
        self._arrivals: dict[str, list[asyncio.Future[ProviderRecord]]] = {}

    def __len__(self) -> int:
        return len(self._providers)

    def __iter__(self) -> Iterator[ProviderRecord]:
        return iter(list(self._providers.values()))

    def get(self, provider_id: str) -> ProviderRecord | None:
        return self._providers.get(provider_id)

    def add(self, provider: ProviderRecord) -> None:
        self._providers[provider.provider_id] = provider
        for model in provider.offers:
            self._by_model.setdefault(model, {})[provider.provider_id] = provider
            if model not in self.first_seen and len(self.first_seen) < self._max_remembered:
                self.first_seen[model] = self._wall_clock()
            for waiter in self._arrivals.pop(model, []):
                if not waiter.done():
                    waiter.set_result(provider)

    def arrival(self, model: str) -> asyncio.Future[ProviderRecord]:
        """Resolved with the next provider that registers `model` (cancel it to stop waiting)."""
        waiters = [w for w in self._arrivals.get(model, []) if not w.done()]  # drop the abandoned ones
        waiter = asyncio.get_running_loop().create_future()
        self._arrivals[model] = [*waiters, waiter]
        return waiter

    def num_awaiting_arrival(self, model: str) -> int:
        return sum(1 for waiter in self._arrivals.get(model, []) if not waiter.done())

    def remove(self, provider: ProviderRecord) -> bool:
        if self._providers.get(provider.provider_id) is not provider:
            return False  # gone already, or replaced by a newer link of the same identity
        del self._providers[provider.provider_id]
        provider.is_connected = False
        for model in provider.offers:
            providers = self._by_model.get(model, {})
            providers.pop(provider.provider_id, None)
            if not providers:
                self._by_model.pop(model, None)
        return True

    def models(self) -> list[str]:
        return sorted(self._by_model)

    def num_providers(self, model: str) -> int:
        return len(self._by_model.get(model, ()))

    def offers(self, model: str) -> list[tuple[ProviderRecord, Offer]]:
        return [(p, p.offers[model]) for p in self._by_model.get(model, {}).values()]

    def stale(self, now: float, max_silence_s: float) -> list[ProviderRecord]:
        return [p for p in self._providers.values() if now - p.last_seen > max_silence_s]
