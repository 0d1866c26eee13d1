"""The router: the synchronous core that owns the registry, the pending sends and the wait queues.

Everything here runs on the event loop without awaiting, so a decision and its commit are one step
(check, then commit): a placement is computed, the request is added to the chosen slot's pending
sends and its frame put on the provider's outbox before anything else can look at that slot.

    providers   connect (register) → heartbeats → request frames → disconnect / evict / drop_revoked;
                an identity's new connection replaces its live one (its requests are handled as a link loss)
    reputation  observe(exchange, outcome): what the flow saw of an attempt (reputation.py); placement reads it
    requests    submit: dispatch now, or queue (bounded), or refuse with the reason it can never run
                wake(model, provider): capacity may have appeared there; dispatch queued requests in order
                abandon: the coordinator gives up on an attempt (cancel sent; its KV counts until the agent ends it)
    pre-warm    after heartbeats and queueing: load_model to cold providers that fit (prewarm.py)

Public names: Router, Submission.
"""

from __future__ import annotations

import secrets
import time
from math import inf
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from agent.catalog import ModelSpec
from agent.coordinator.metrics import Metrics
from agent.coordinator.routing.exchange import Exchange, LinkLost
from agent.coordinator.routing.oversize import Oversize, oversize
from agent.coordinator.routing.placement import Ask, Option, Placement, place
from agent.coordinator.routing.prefix_holders import PrefixHolders
from agent.coordinator.routing.prewarm import plan_loads
from agent.coordinator.routing.registry import Offer, ProviderRecord, Registry, spec_for_entry
from agent.coordinator.routing.reputation import Outcome, Reputation, ReputationBook
from agent.coordinator.routing.waitqueue import Waiter, WaitQueue
from agent.coordinator.routing.warm_index import WarmIndex, place_indexed
from agent.coordinator.settings import CoordinatorSettings
from agent.errors import is_retryable
from agent.wire.chunk_batch import InferenceResponseChunks
from agent.wire.frames import (
    Cancel,
    ErrorFrame,
    Heartbeat,
    InferenceAccepted,
    InferenceError,
    InferenceRejected,
    InferenceRequest,
    InferenceResponseChunk,
    LoadModel,
    Register,
    Reservation,
)
from agent.wire.hot_chunks import CHUNK_FRAMES, AnyChunk, HotChunk, HotChunks
from agent.wire.protocol import Message

log = structlog.get_logger("agent.coordinator.routing.router")

MAX_PASSES = 4  # queued requests tried past one that does not fit, per wake


@dataclass(frozen=True, slots=True)
class Submission:
    waiter: Waiter | None = None  # queued: await waiter.future
    refusal: str | None = None  # no provider can ever serve it: why
    oversize: Oversize | None = None  # ... because of its own size (a 400, not a 503)
    is_saturated: bool = False  # every capable provider is full and the queue is full

    @property
    def is_dispatched(self) -> bool:
        return self.waiter is None and self.refusal is None and not self.is_saturated


class Router:
    def __init__(self, settings: CoordinatorSettings | None = None, *, catalog: dict[str, ModelSpec] | None = None,
                 clock: Callable[[], float] = time.monotonic, metrics: Metrics | None = None) -> None:
        self.settings = settings or CoordinatorSettings()
        self.catalog = catalog or {}
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.registry = Registry(max_remembered_models=self.settings.max_remembered_models)
        self.warm = WarmIndex()  # the registry's offers filed by rank, for try_dispatch (warm_index.py)
        self.reputation = ReputationBook(self.settings, clock)
        self.reputation.on_quarantine = self._quarantined
        self.queues: dict[str, WaitQueue] = {}
        self._num_connects = 0
        self._planned_at: dict[str, float] = {}  # model -> when its last pre-warm plan ran (prewarm)
        self._plan_gap_s: dict[str, float] = {}  # model -> its last plan's cost over prewarm_max_core_share
        self._num_sent = 0  # requests sent: an offer's last_sent orders rank ties (slot_rank.py)
        self.prefixes = PrefixHolders(self.settings.max_prefix_routes, self.registry)

    # -- providers ------------------------------------------------------------------------------
    def connect(self, register: Register, send: Callable[[Message], None],
                close: Callable[[str], None] | None = None, *, provider_id: str | None = None,
                identity_id: str | None = None) -> ProviderRecord:
        """A registered link: as the identity's stable `provider_id` (replacing its live link), else a fresh id."""
        self._num_connects += 1
        if provider_id is not None and (old := self.registry.get(provider_id)) is not None:
            for exchange in old.exchanges.values():
                exchange.relinked.add(provider_id)  # the old link failed it, not the identity: it may retry here
            self.disconnect(old, "replaced by a new connection of the same identity")
            old.close("replaced by a new connection of the same identity")
        provider_id = provider_id or f"prov-{self._num_connects}-{secrets.token_hex(3)}"
        offers = {}
        for entry in register.models:
            spec, error = spec_for_entry(entry, self.catalog)
            offers[entry.id] = Offer(entry, spec, error)
        now = self.clock()
        provider = ProviderRecord(provider_id, register, offers, send, connected_at=now, last_seen=now,
                                  identity_id=identity_id)
        if close is not None:
            provider.close = close
        self.registry.add(provider)
        self.warm.add(provider)
        self.reputation.track(provider_id, is_identity=identity_id is not None)
        log.info("provider.register", provider_id=provider_id, identity_id=identity_id, chip=register.hardware.chip,
                 memory_bytes=register.hardware.memory_bytes, agent_version=register.agent_version,
                 models={m: (o.entry.fits, o.spec_error or None) for m, o in offers.items()})
        return provider

    def disconnect(self, provider: ProviderRecord, reason: str) -> None:
        if not self.registry.remove(provider):
            return
        self.warm.remove(provider)
        for exchange in list(provider.exchanges.values()):
            exchange.provider = None
            exchange.push(LinkLost(provider.provider_id, reason))
        provider.exchanges.clear()
        self.prefixes.forget(provider.provider_id)
        if provider.identity_id is None:
            self.reputation.forget(provider.provider_id)  # nothing can bring this id back
        log.info("provider.disconnect", provider_id=provider.provider_id, reason=reason)

    def drop_revoked(self, is_live: Callable[[str], bool]) -> None:
        """Close the links of identities whose credential was revoked since they connected."""
        for provider in self.registry:
            if provider.identity_id is not None and not is_live(provider.identity_id):
                log.warning("provider.revoked", provider_id=provider.provider_id)
                self.disconnect(provider, "its credential was revoked")
                provider.close("its credential was revoked")

    def observe(self, exchange: Exchange, outcome: Outcome | str, detail: str = "") -> None:
        """What the flow saw of the current (or latest) attempt: counted against that provider's reputation."""
        outcome = Outcome.of(outcome)
        ttft_s = None if exchange.accepted_at is None else max(0.0, self.clock() - exchange.accepted_at)
        self.reputation.record(exchange.provider_id, outcome, ttft_s=ttft_s, detail=detail)

    def _quarantined(self, reputation: Reputation, seconds: float) -> None:
        self.metrics.quarantines.inc()
        log.warning("provider.quarantine", provider_id=reputation.provider_id, seconds=seconds,
                    num_quarantines=reputation.num_quarantines, last_failure=reputation.last_failure)

    def evict_stale(self) -> list[ProviderRecord]:
        stale = self.registry.stale(self.clock(), self.settings.eviction_after_s)
        for provider in stale:
            self.metrics.evictions.inc()
            log.warning("provider.evict", provider_id=provider.provider_id,
                        silent_s=round(self.clock() - provider.last_seen, 2))
            self.disconnect(provider, "missed heartbeats")
            provider.close("missed heartbeats")
        return stale

    def receive(self, provider: ProviderRecord, frame: Message | HotChunk | HotChunks) -> None:
        """A validated frame from a registered provider (a text-only chunk decoded hot: wire/hot_chunks.py)."""
        kind = type(frame)
        if kind is HotChunks or kind is InferenceResponseChunks:  # the common frames first: every relayed token
            self._chunks(provider, frame.chunks)  # is a row of one, each row exactly as a single chunk frame
        elif kind is HotChunk or kind is InferenceResponseChunk:
            self._chunks(provider, (frame,))
        elif kind is Heartbeat:
            self._heartbeat(provider, frame)
        elif kind is Register:
            provider.send(ErrorFrame(code="already_registered", message="this link is registered already; "
                                     "reconnect to register again"))
        elif kind is ErrorFrame:
            log.warning("provider.complaint", provider_id=provider.provider_id, code=frame.code, message=frame.message,
                        request_id=frame.request_id)
            if frame.request_id is not None and provider.offer_holding(frame.request_id) is not None:
                # The agent could not use our inference_request (or its cancel): that attempt is over.
                self._request_frame(provider, InferenceError(request_id=frame.request_id, code=frame.code,
                                                             message=frame.message,
                                                             retryable=is_retryable(frame.code, default=True)))
        else:
            self._request_frame(provider, frame)

    def _heartbeat(self, provider: ProviderRecord, heartbeat: Heartbeat) -> None:
        if provider.heartbeat is not None and heartbeat.seq <= provider.seq:
            return  # older than what we hold (frames on one link arrive in order; this is a peer's bug)
        now = self.clock()
        provider.heartbeat, provider.last_seen = heartbeat, now
        statuses = {status.model: status for status in heartbeat.slots}
        self.prefixes.heartbeat(provider, heartbeat)
        for offer in provider.offers.values():
            offer.observe(statuses.get(offer.model), now, self.settings.load_refused_cooldown_s)
            for entry in offer.pending.heartbeat(heartbeat.seq, now, self.settings.cancel_grace_s):
                log.info("pending.expire", provider_id=provider.provider_id, request_id=entry.request_id)
        for model in provider.offers:
            self.wake(model, provider)
            if now - self._planned_at.get(model, -inf) >= max(self.settings.prewarm_heartbeat_interval_s,
                                                              self._plan_gap_s.get(model, 0.0)):
                self.prewarm(model)

    def _chunks(self, provider: ProviderRecord, chunks: tuple[AnyChunk, ...]) -> None:
        """Chunks: what _request_frame does with each, its lookups done once (every relayed token comes here).
        The common case is a chunk of a live attempt, whose pending entry is in its exchange's model's offer;
        anything else (abandoned, not ours) takes the general path."""
        exchanges, offers = provider.exchanges, provider.offers
        for chunk in chunks:
            request_id = chunk.request_id
            exchange = exchanges.get(request_id)
            offer = offers.get(exchange.ask.model) if exchange is not None else None
            if offer is None or offer.pending.chunk(request_id) is None:  # counted when it is the offer's
                self._request_frame(provider, chunk)
                continue
            exchange.push(chunk)

    def _request_frame(self, provider: ProviderRecord, frame: Message) -> None:
        request_id = frame.request_id
        offer = provider.offer_holding(request_id)
        exchange = provider.exchanges.get(request_id)
        if offer is None:
            if isinstance(frame, (InferenceAccepted, *CHUNK_FRAMES)):
                provider.send(Cancel(request_id=request_id, reason="not a request of this coordinator"))
            return
        pending = offer.pending
        ended = not isinstance(frame, (InferenceAccepted, *CHUNK_FRAMES))
        if isinstance(frame, InferenceRejected) and (entry := pending.get(request_id)) and entry.is_accepted:
            self.reputation.record(provider.provider_id, Outcome.ENDED, detail="rejected after accepting")
        if isinstance(frame, InferenceAccepted):
            if exchange is not None:
                exchange.accepted_at = self.clock()
            pending.accept(request_id, prompt_tokens=frame.prompt_tokens,
                           expected_output_tokens=frame.expected_output_tokens,
                           reservation_bytes=frame.reservation_bytes)
        elif isinstance(frame, CHUNK_FRAMES):
            pending.chunk(request_id)
        else:
            pending.end(request_id)
        if exchange is None:  # abandoned: the agent has not seen our cancel yet, or ignored it
            if not ended and isinstance(frame, InferenceAccepted):
                provider.send(Cancel(request_id=request_id, reason="abandoned"))
        else:
            if isinstance(frame, InferenceRejected):
                self._rejected(provider, offer, exchange, frame)
            if ended:
                provider.exchanges.pop(request_id, None)
                exchange.provider = None
                self.prefixes.ended(provider.provider_id, exchange.prefix_keys)
            exchange.push(frame)
        if ended:
            self.wake(offer.model, provider)

    def _rejected(self, provider: ProviderRecord, offer: Offer, exchange: Exchange, frame: InferenceRejected) -> None:
        self.metrics.attempt(offer.model, f"rejected_{frame.verdict}")
        log.info("route.rejected", provider_id=provider.provider_id, request_id=frame.request_id,
                 verdict=frame.verdict, reason=frame.reason)
        if frame.verdict == "full":
            offer.pending.mark_full()
            offer.retry_after_hint_s = frame.retry_after_s
            exchange.retry_after_hint_s = frame.retry_after_s
        else:
            exchange.excluded[provider.provider_id] = f"the agent refused it: {frame.reason}"

    # -- requests -------------------------------------------------------------------------------
    def queue(self, model: str) -> WaitQueue:
        queue = self.queues.get(model)
        if queue is None:
            queue = self.queues[model] = WaitQueue(model, self.settings.queue_depth)
        return queue

    def placement(self, ask: Ask, *, exclude: dict[str, str] | None = None, lazy: bool = False) -> Placement:
        if lazy:  # the request path: the scan's Placement, from the index (warm_index.py)
            return place_indexed(self.warm.model(ask.model), ask, self.settings, now=self.clock(), exclude=exclude,
                                 reputation=self.reputation)
        return place(self.registry.offers(ask.model), ask, self.settings, now=self.clock(), exclude=exclude,
                     lazy=lazy, reputation=self.reputation)

    def try_dispatch(self, exchange: Exchange, provider: ProviderRecord | None = None) -> Placement:
        """Place and, if some provider admits it, commit: pending entry, then the frame on its outbox."""
        _forgive_relinked(exchange)
        held = self.prefixes.prefer(exchange.model, exchange.prefix_keys)  # found (and counted) even when not used
        preferred = held.provider_id if held is not None and self.settings.prefix_routing else None
        if provider is not None:
            placement = place([(provider, provider.offers[exchange.model])], exchange.ask, self.settings,
                              now=self.clock(), exclude=exchange.excluded, reputation=self.reputation,
                              preferred=preferred)
        else:  # the same Placement as place() over every offer, from the index (warm_index.py)
            placement = place_indexed(self.warm.model(exchange.model), exchange.ask, self.settings,
                                      now=self.clock(), exclude=exchange.excluded, reputation=self.reputation,
                                      preferred=preferred)
        if placement.best is not None:
            self._commit(exchange, placement.best)
            outcome = "none" if held is None else "held" if held.provider_id == exchange.provider_id else "elsewhere"
            self.metrics.prefix_route(exchange.model, outcome, "" if held is None else held.source)
        return placement

    def submit(self, exchange: Exchange) -> Submission:
        _forgive_relinked(exchange)
        queue, now = self.queue(exchange.model), self.clock()
        head = next(iter(queue), None)
        if head is None or head.may_be_passed(now, self.settings.queue_max_wait_s):
            placement = self.try_dispatch(exchange)
            if exchange.provider is not None:
                return Submission()
        else:
            placement = self.placement(exchange.ask, exclude=exchange.excluded, lazy=True)
        if not placement.can_ever:
            offers = self.registry.offers(exchange.model)
            return Submission(refusal=placement.why_never(), oversize=oversize(placement, offers, exchange.ask))
        if queue.is_full:
            return Submission(is_saturated=True)
        if exchange.first_queued_at is None:
            exchange.first_queued_at = now
        waiter = Waiter(exchange, now, exchange.first_queued_at + self.settings.queue_max_wait_s)
        queue.add(waiter)
        log.info("queue.add", model=exchange.model, request_id=exchange.request_id, depth=len(queue),
                 full=len(placement.full), waiting=len(placement.waiting))
        self._prewarm_queued(exchange.model, now)
        return Submission(waiter=waiter)

    def dequeue(self, waiter: Waiter) -> None:
        self.queue(waiter.exchange.model).remove(waiter)

    def wake(self, model: str, provider: ProviderRecord) -> None:
        """Capacity may have appeared on `provider`: dispatch queued requests it now admits, in order."""
        queue = self.queues.get(model)
        if not queue or not provider.is_connected or not provider.offers[model].is_warm:
            return
        now, num_failed = self.clock(), 0
        for waiter in queue:
            if waiter.is_done:
                queue.remove(waiter)
                continue
            if provider.provider_id in waiter.exchange.excluded:
                continue
            self.try_dispatch(waiter.exchange, provider)
            if waiter.exchange.provider is not None:
                queue.remove(waiter)
                waiter.future.set_result(None)
                self.metrics.queue_wait.labels(model).observe(max(0.0, now - waiter.enqueued_at))
                continue
            num_failed += 1
            if num_failed > MAX_PASSES or not waiter.may_be_passed(now, self.settings.queue_max_wait_s):
                break

    def abandon(self, exchange: Exchange, *, reason: str) -> None:
        """Give up on the current attempt: cancel it at the agent; its KV counts until the agent ends it."""
        provider = exchange.provider
        if provider is None:
            return
        exchange.provider = None
        exchange.attempt += 1  # whatever that attempt still sends is not for the next one
        provider.exchanges.pop(exchange.request_id, None)
        offer = provider.offer_holding(exchange.request_id)
        if offer is not None:
            offer.pending.abandon(exchange.request_id, self.clock())
        if provider.is_connected:
            provider.send(Cancel(request_id=exchange.request_id, reason=reason))

    def retry_after_s(self, exchange: Exchange) -> float:
        hints = [h for _, offer in self.registry.offers(exchange.model) if (h := offer.retry_after_hint_s)]
        if exchange.retry_after_hint_s:
            hints.append(exchange.retry_after_hint_s)
        # An agent's hint is a stranger's word: bounded, so one saying 3600 s cannot turn consumers away for an hour.
        return min(min(hints), self.settings.max_retry_after_s) if hints else self.settings.retry_after_s

    def _prewarm_queued(self, model: str, now: float) -> None:
        """A request queued: plan at once, unless plans are slow (a large fleet) and the last one was too recent
        for prewarm_max_core_share; then the heartbeats after it plan, with the queue as it is by then. So a
        burst of queued requests is not a scan of every provider each."""
        gap = self._plan_gap_s.get(model, 0.0)
        if gap <= self.settings.prewarm_heartbeat_interval_s or now - self._planned_at.get(model, -inf) >= gap:
            self.prewarm(model)

    def prewarm(self, model: str) -> None:
        """Plan loads for `model` (prewarm.py), and time the plan: heartbeats plan again after
        prewarm_heartbeat_interval_s, or longer where a plan is slow (a large fleet), so that plans spend at
        most prewarm_max_core_share of a core. The cost is timed by the process's clock, not the router's
        (a test's fake clock does not move while a plan runs)."""
        queue = self.queues.get(model)
        now = self._planned_at[model] = self.clock()
        started = time.perf_counter()
        plan = plan_loads(self.registry.offers(model), model=model, num_queued=len(queue) if queue else 0, now=now,
                          settings=self.settings)
        seconds = time.perf_counter() - started
        self.metrics.prewarm_plans.labels(model).observe(seconds)
        share = self.settings.prewarm_max_core_share  # 0 (or less): no bound
        self._plan_gap_s[model] = seconds / share if share > 0 else 0.0
        for provider in plan.providers:
            provider.offers[model].load_requested(now)
            provider.send(LoadModel(model=model))
            self.metrics.loads.labels(model).inc()
            log.info("prewarm.load", provider_id=provider.provider_id, model=model, reason=plan.reason)

    def _commit(self, exchange: Exchange, option: Option) -> None:
        provider, decision = option.provider, option.decision
        option.offer.pending.add(exchange.request_id, option.prompt_tokens, decision.expected_output_tokens,
                                decision.reservation_bytes)
        self._num_sent += 1
        option.offer.last_sent = self._num_sent
        provider.exchanges[exchange.request_id] = exchange
        exchange.provider, exchange.provider_id = provider, provider.provider_id
        self.prefixes.dispatched(exchange.prefix_keys, provider.provider_id)
        exchange.attempt, exchange.accepted_at = exchange.attempt + 1, None
        provider.send(InferenceRequest(
            request_id=exchange.request_id, model=exchange.model, body=exchange.body,
            reservation=Reservation(prompt_tokens=option.prompt_tokens,
                                    expected_output_tokens=decision.expected_output_tokens,
                                    bytes=decision.reservation_bytes)))
        log.debug("route.dispatch", provider_id=provider.provider_id, request_id=exchange.request_id,
                  model=exchange.model, reservation_bytes=decision.reservation_bytes, uncertain=option.is_uncertain)


def _forgive_relinked(exchange: Exchange) -> None:
    for provider_id in exchange.relinked:
        exchange.excluded.pop(provider_id, None)
    exchange.relinked.clear()
