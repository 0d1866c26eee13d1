"""The coordinator as one object: router, accounts, metrics and settings, and the steps every request
takes before routing (authenticate, validate, estimate, hold), so the HTTP layer stays thin.

    coordinator = Coordinator(Accounts.open(), CoordinatorSettings())
    account = coordinator.authenticate(request.headers.get("authorization"))   # Unauthorized
    coordinator.precheck(account, client_host)          # before the body is read: QuotaExceeded / TooManyRequests
    body = coordinator.parse(raw_body)                                          # BadRequest / ModelNotFound
    body = coordinator.validate(translated)        # a dialect's body, translated to chat completions' (dialects/)
    flow = coordinator.open(account, body)                                      # QuotaExceeded / TooManyRequests
    await flow.start(); ... flow.next() ...; flow.close(reason)

Public names: Coordinator.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import structlog

from agent.admission import OUTPUT_CLIP_TOKENS
from agent.catalog import CatalogError, ModelSpec, load_catalog
from agent.coordinator.billing.accounts import Account, Accounts, DuplicateRequest, InsufficientBalance, RateLimited
from agent.coordinator.billing.client_ratelimit import ClientRateLimiter
from agent.coordinator.billing.ledger import LedgerUnavailable
from agent.coordinator.choices import Choices, PromptBilledElsewhere
from agent.coordinator.dialects.strict_body import read_json
from agent.coordinator.errors import (
    BadRequest,
    BillingUnavailable,
    Conflict,
    ModelNotFound,
    NoProvider,
    QuotaExceeded,
    TooManyRequests,
    Unauthorized,
)
from agent.coordinator.flow import RequestFlow
from agent.coordinator.http.capacity import state_counts
from agent.coordinator.image_inputs import ImageFacts, ImageInputs
from agent.coordinator.metrics import Metrics
from agent.coordinator.prefix_gauges import model_gauges, provider_gauges
from agent.coordinator.privacy import for_provider
from agent.coordinator.reputations import operator_gauges, restore
from agent.coordinator.routing.estimate import estimate_prompt
from agent.coordinator.routing.exchange import Exchange
from agent.coordinator.routing.placement import Ask
from agent.coordinator.routing.router import Router
from agent.coordinator.settings import CoordinatorSettings
from agent.coordinator.structured_outputs import output_schema_problem
from agent.wire.chat_body import ChatCompletionBody
from agent.wire.prefix_chain import prefix_keys
from agent.wire.protocol import ProtocolError, validate_chat_request

log = structlog.get_logger("agent.coordinator")


class Coordinator:
    def __init__(self, accounts: Accounts, settings: CoordinatorSettings | None = None, *,
                 catalog: dict[str, ModelSpec] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.accounts = accounts
        self.settings = settings or CoordinatorSettings()
        self.catalog = _default_catalog() if catalog is None else catalog
        self.metrics = Metrics()
        self.router = Router(self.settings, catalog=self.catalog, clock=clock, metrics=self.metrics)
        self.metrics.watch(self._gauges)
        self.metrics.watch_operator(lambda: operator_gauges(self.router))
        self.metrics.watch_operator(lambda: provider_gauges(self.router))
        restore(self.router, accounts.identities)
        self.clock = clock
        self.started_at = time.time()  # a wall-clock time: the catalog's models are `created` then
        self.client_limiter = ClientRateLimiter(self.settings.open_requests_per_minute_per_ip,
                                                max_clients=self.settings.max_rate_limited_ips, clock=clock)
        self.images = ImageInputs(self.settings, self.router.registry)

    # -- the steps before routing
    def authenticate(self, authorization: str | None) -> Account:
        scheme, _, key = (authorization or "").partition(" ")
        account = self.accounts.authenticate(key.strip() if scheme.lower() == "bearer" else None)
        if account is None:
            raise Unauthorized("missing or invalid API key: send `Authorization: Bearer <key>` with a key from "
                               "`darkbloom-agent coordinator keys create ACCOUNT --db PATH`")
        return account

    def precheck(self, account: Account, client_host: str | None) -> None:
        """Refuse what the request's head already decides, before its body is read: in open mode a client
        address over its request rate; with keys the ledger unwritable, a balance no request can be paid
        from, an account over its request rate (billing/accounts.py). The token-based checks come in `open`."""
        with _as_api_errors(self.settings):
            if self.accounts.is_open:
                self.client_limiter.admit(client_host or "unknown")
            self.accounts.precheck(account)

    def parse(self, raw: bytes) -> ChatCompletionBody:
        return self.validate(read_json(raw))

    def validate(self, data: dict) -> ChatCompletionBody:
        """A chat-completions body as a dict (what parse read, or what a dialect translated to) checked
        against the wire's model, the output schema, n and the models served here."""
        body = validate_chat_request(data)
        if isinstance(body, ProtocolError):
            raise BadRequest(body.message, param=body.field, code="invalid_value" if body.field else None)
        if (problem := output_schema_problem(body)) is not None:
            raise BadRequest(problem[1], param=problem[0], code="invalid_value")
        if (body.n or 1) > self.settings.max_choices:
            raise BadRequest(f"n is {body.n}; at most {self.settings.max_choices} choices are served per request",
                             param="n", code="invalid_value")
        if body.model is None:
            raise BadRequest("you must provide a model parameter", param="model", code="missing_required_parameter")
        if body.model not in self.known_models():
            known = ", ".join(self.known_models()) or "none yet"
            raise ModelNotFound(f"the model {body.model!r} does not exist here (available: {known})", param="model")
        if not self.router.registry.num_providers(body.model):
            # Known but unserved right now (its providers left, or none came yet): a retry may find one.
            raise NoProvider(f"no connected provider serves {body.model} right now; retry in a few seconds",
                             retry_after_s=self.settings.retry_after_s)
        return body

    async def inline_images(self, body: ChatCompletionBody) -> tuple[ChatCompletionBody, tuple[ImageFacts, ...]]:
        """Every image checked, decoded and made inline (http(s) ones fetched here), before any hold: a 400
        naming the part otherwise (image_inputs.py)."""
        return await self.images.inline(body)

    def open(self, account: Account, body: ChatCompletionBody, *, request_id: str | None = None,
             bills_prompt: bool = True, images: tuple[ImageFacts, ...] = ()) -> RequestFlow:
        """Hold the request's cost (billing/holds.py), then hand it to a flow that routes it. `bills_prompt`
        False: one of n choices whose prompt is held and charged with choice 0 (choices.py)."""
        request_id = request_id or new_request_id()
        cache_key = body.prompt_cache_key
        body = for_provider(body)  # no `user`, no message names: a provider is a stranger
        estimate = estimate_prompt(body, image_tokens=self.images.prompt_tokens(body.model, images))
        with _as_api_errors(self.settings):
            # Holds use the prompt's upper bound and the default ratio and clip, not an agent's adapted ones:
            # money errs on the safe side.
            # No provider is chosen yet, so a request without max_tokens is expected at the clip; its bound
            # is all the output the model's context leaves (hold_output_tokens).
            admission = self.accounts.admit(
                account, request_id, model=body.model, prompt_tokens=estimate.max_tokens if bills_prompt else 0,
                max_tokens=body.output_limit or OUTPUT_CLIP_TOKENS,
                max_output_tokens=self.hold_output_tokens(body, estimate.floor_tokens),
                can_cap=True, min_capped_output_tokens=self.settings.min_capped_output_tokens)
        if admission.is_capped:
            # The balance covers only this much output: the agent stops there, with finish_reason "length".
            capped = admission.max_tokens
            body = body.model_copy(update={"max_tokens": capped,
                                           "max_completion_tokens": capped if body.max_completion_tokens else None})
        ask = Ask(body.model, estimate.tokens, estimate.floor_tokens, body.output_limit, num_images=len(images))
        exchange = Exchange(request_id, body, ask, created_at=self.clock(), prefix_keys=prefix_keys(body, cache_key))
        spec = self.catalog.get(body.model)
        accounts = self.accounts if bills_prompt else PromptBilledElsewhere(self.accounts)
        return RequestFlow(self.router, accounts, exchange, max_prompt_tokens=estimate.max_tokens,
                           max_tokens=body.output_limit or (spec.max_context if spec is not None else None))

    def open_choices(self, account: Account, body: ChatCompletionBody, images: tuple[ImageFacts, ...] = ()) -> Choices:
        """`n` > 1: one flow per choice, held together (choices.py)."""
        return Choices.open(lambda one, **kw: self.open(account, one, images=images, **kw), body, new_request_id())

    def hold_output_tokens(self, body: ChatCompletionBody, prompt_floor_tokens: int) -> int:
        """All the output a request may produce: max_tokens, at most what the model's context leaves."""
        spec = self.catalog.get(body.model)
        context = spec.max_context if spec is not None else self.settings.uncatalogued_context_tokens
        room = max(1, context - prompt_floor_tokens)
        return min(body.output_limit or room, room)

    def known_models(self) -> list[str]:
        """What /v1/models lists: the catalog, every model a provider has registered here (remembered after
        it left, registry.py), and what is connected now."""
        registry = self.router.registry
        return sorted({*self.catalog, *registry.first_seen, *registry.models()})

    def model_created(self, model: str) -> int:
        """/v1/models' `created`: when a provider first registered it here, else when the catalog was loaded."""
        return int(self.router.registry.first_seen.get(model, self.started_at))

    # -- background work
    async def run_evictions(self) -> None:
        """Evict providers that missed heartbeats, and links whose identity was revoked, until cancelled."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s / 2)
            self.router.evict_stale()
            self.router.drop_revoked(self.accounts.identities.is_live)

    def _gauges(self) -> Iterable[tuple[str, str, list[str], list[tuple[list[str], float]]]]:
        router = self.router
        counts = state_counts(router)
        yield ("darkbloom_providers", "Providers by model and state", ["model", "state"],
               [([model, state], n) for model, states in counts.items() for state, n in states.items()])
        yield ("darkbloom_queue_depth", "Requests queued per model", ["model"],
               [([model], len(queue)) for model, queue in router.queues.items()])
        yield ("darkbloom_requests_in_flight", "Requests at providers per model", ["model"],
               [([model], sum(o.pending.num_in_flight for _, o in router.registry.offers(model)))
                for model in router.registry.models()])
        yield from model_gauges(router)
        yield ("darkbloom_connected_providers", "Connected providers", [], [([], len(router.registry))])
        yield ("darkbloom_providers_quarantined", "Providers quarantined now", [],
               [([], router.reputation.num_quarantined())])
        ledger = self.accounts.ledger
        yield ("darkbloom_ledger_backlog", "Ledger entries not yet written", [], [([], ledger.num_backlog)])
        yield ("darkbloom_ledger_available", "1 while the ledger can be written", [], [([], int(ledger.is_available))])


@contextmanager
def _as_api_errors(settings: CoordinatorSettings) -> Iterator[None]:
    """Billing's refusals in the API's words (429 insufficient_quota, 429, 409, 503)."""
    try:
        yield
    except InsufficientBalance as exc:
        raise QuotaExceeded(str(exc)) from None
    except RateLimited as exc:
        raise TooManyRequests(str(exc), retry_after_s=exc.retry_after_s) from None
    except DuplicateRequest as exc:
        raise Conflict(str(exc)) from None
    except LedgerUnavailable as exc:
        raise BillingUnavailable(f"billing is paused: {exc}. Retry later; the operator should check the "
                                 "accounts database's disk", retry_after_s=settings.retry_after_s) from None


def new_request_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def _default_catalog() -> dict[str, ModelSpec]:
    try:
        return load_catalog()
    except CatalogError as exc:
        log.warning("catalog.unavailable", error=str(exc))
        return {}
