"""A request that no connected provider of its model could ever serve because of its own size: a 400 that
names the parameter to change (OpenAI's `context_length_exceeded` when it is the context), not a 503 the
openai SDK would retry. Only when *every* provider refused it for its size (placement.py's `too_large`):
one that is quarantined, draining, does not fit its machine or already failed the request leaves it a 503.

The prompt is told as the coordinator's estimate and its floor (estimate.py): the coordinator does not
tokenize, and the refusal itself was decided on the floor, so it holds whatever the real count is.

Public names: Oversize, oversize.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.coordinator.routing.placement import Ask, Placement
from agent.coordinator.routing.registry import Offer, ProviderRecord


@dataclass(frozen=True, slots=True)
class Oversize:
    param: str  # "max_tokens" or "messages"
    code: str  # "context_length_exceeded", or "kv_budget_exceeded" when the context is not what limits it
    message: str


def oversize(placement: Placement, offers: Iterable[tuple[ProviderRecord, Offer]], ask: Ask) -> Oversize | None:
    if placement.can_ever or not placement.never or set(placement.never) != placement.too_large:
        return None
    contexts = [offer.spec.max_context for _, offer in offers if offer.spec is not None]
    if not contexts:
        return None
    context, floor = max(contexts), ask.floor_prompt_tokens
    prompt = f"the prompt is about {ask.prompt_tokens} tokens (at least {floor})"
    asked = f"max_tokens {ask.max_tokens}" if ask.max_tokens is not None else "no max_tokens"
    param = "max_tokens" if ask.max_tokens is not None and floor < context else "messages"
    fix = (f"lower max_tokens to at most {context - floor}" if param == "max_tokens"
           else "shorten the messages")
    if floor + (ask.max_tokens or 0) > context or floor >= context:
        return Oversize(param, "context_length_exceeded",
                        f"this request can never fit a provider of {ask.model}: {prompt} with {asked}, and the "
                        f"longest context a connected provider serves is {context} tokens; {fix}")
    reasons = "; ".join(sorted(set(placement.never.values())))
    return Oversize(param, "kv_budget_exceeded",
                    f"this request can never fit a provider of {ask.model}: {prompt} with {asked} needs more KV "
                    f"memory than any connected provider has ({reasons}); {fix}")
