"""`n` > 1: the n choices of one chat completion, fanned out by the coordinator as n ordinary requests.

Each choice is its own RequestFlow (core.Coordinator.open): its own request id (the completion's id for
choice 0, `<id>-<i>` for the others), its own hold, routed, admitted, retried and deadlined like any request,
its own usage meter bounding its own count by max_tokens (which applies per choice, as OpenAI's does). The
holds are taken together: if any choice cannot be held (402, 429), those already held are released and the
request is refused whole. They start together too: a choice that fails before its first token fails the
request, and the others are cancelled.

Why fan out rather than run n rows of one request on one agent: every choice reuses the retries, deadlines,
usage bounds and admission that one request already has, with no change to the wire or the engine. The
price is that each choice's provider prefills the prompt again (mlx-lm's batch cache could not share it
anyway), and that each choice counts as one request against an account's requests per minute.

Billing and usage say what OpenAI's do: the prompt once (choice 0's hold and charge carry it; the other
choices' holds and charges are output only) plus every choice's completion tokens.

Seeds: choice i samples with `seed + i` (wrapped into the seed's range), so the choices differ and a seeded
request is reproducible; choice 0 is exactly what the same request with n = 1 gets.

Public names: Choices, choice_seed, merged_usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from agent.coordinator.billing.accounts import Accounts, ReleaseReason
from agent.coordinator.errors import ApiError
from agent.coordinator.flow import Broken, Finished, RequestFlow, Token, release_reason
from agent.wire.chat_body import ChatCompletionBody
from agent.wire.frames import UsageReport

SEED_SPAN = 2**64  # the seed's range is [-2**63, 2**63)


def choice_seed(seed: int | None, index: int) -> int | None:
    """Choice `index`'s seed: distinct per choice, the same on every run; None stays None (fresh randomness)."""
    if seed is None:
        return None
    return (seed + index + 2**63) % SEED_SPAN - 2**63


def choice_body(body: ChatCompletionBody, index: int) -> ChatCompletionBody:
    """What one choice's provider is sent: one choice (n unset), with its own seed."""
    return body.model_copy(update={"n": None, "seed": choice_seed(body.seed, index)})


def merged_usage(usages: list[UsageReport]) -> UsageReport:
    """The prompt once (choice 0's, the one billed), plus every choice's completion."""
    return UsageReport(prompt_tokens=usages[0].prompt_tokens, cached_tokens=usages[0].cached_tokens,
                       completion_tokens=sum(usage.completion_tokens for usage in usages))


class PromptBilledElsewhere:
    """The accounts a choice other than the first settles with: its prompt is charged with choice 0."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    def settle(self, request_id: str, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0):
        return self.accounts.settle(request_id, prompt_tokens=0, completion_tokens=completion_tokens)

    def release(self, request_id: str, reason: ReleaseReason | str, *, produced_output_tokens: int = 0) -> bool:
        return self.accounts.release(request_id, reason, produced_output_tokens=produced_output_tokens)


class Choices:
    """The n flows of one request: opened together, started together, their events merged with the index."""

    def __init__(self, flows: list[RequestFlow]) -> None:
        self.flows = flows
        self._events: asyncio.Queue[tuple[int, Token | Finished | Broken]] = asyncio.Queue()
        self._pumps: list[asyncio.Task] = []

    @classmethod
    def open(cls, open_one: Callable[..., RequestFlow], body: ChatCompletionBody, request_id: str) -> Choices:
        """`open_one(body, request_id=, bills_prompt=)` holds one choice (Coordinator.open): all or none."""
        flows: list[RequestFlow] = []
        try:
            for index in range(body.n or 1):
                flows.append(open_one(choice_body(body, index), request_id=choice_id(request_id, index),
                                      bills_prompt=index == 0))
        except ApiError:
            for flow in flows:
                flow.close(ReleaseReason.NO_CAPACITY)
            raise
        return cls(flows)

    @property
    def exchange(self):
        return self.flows[0].exchange

    @property
    def charged(self) -> UsageReport | None:
        """What the choices were settled for together (the access log's tokens): the prompt once, every output."""
        settled = [flow.charged for flow in self.flows if flow.charged is not None]
        if not settled:
            return None
        return UsageReport(prompt_tokens=settled[0].prompt_tokens, cached_tokens=settled[0].cached_tokens,
                           completion_tokens=sum(usage.completion_tokens for usage in settled))

    @property
    def first_token_at(self) -> float | None:
        """When every choice had its first token (the router's clock), as the client saw the response begin."""
        times = [flow.first_token_at for flow in self.flows]
        return None if None in times else max(times)

    async def start(self) -> None:
        """Every choice's first token, or the first choice's error (the others are cancelled and released)."""
        starts = [asyncio.create_task(flow.start()) for flow in self.flows]
        try:
            await asyncio.gather(*starts)
        except ApiError as exc:
            for task in starts:
                task.cancel()
            await asyncio.gather(*starts, return_exceptions=True)
            self.close(release_reason(exc))
            raise
        finally:
            for task in starts:
                task.cancel()
        self._pumps = [asyncio.create_task(self._pump(index, flow)) for index, flow in enumerate(self.flows)]

    async def _pump(self, index: int, flow: RequestFlow) -> None:
        while True:
            event = await flow.next()
            self._events.put_nowait((index, event))
            if not isinstance(event, Token):
                return

    async def next(self) -> tuple[int, Token | Finished | Broken]:
        """The next event of any choice, with its index; each choice ends with one Finished or Broken."""
        return await self._events.get()

    def ready(self) -> list[tuple[int, Token | Finished | Broken]]:
        """The events next() would return without waiting (what the choices' flows had arrived), in order."""
        events = []
        while not self._events.empty():
            events.append(self._events.get_nowait())
        return events

    def close(self, reason: ReleaseReason) -> None:
        for task in self._pumps:
            task.cancel()
        for flow in self.flows:
            flow.close(reason)


def choice_id(request_id: str, index: int) -> str:
    return request_id if index == 0 else f"{request_id}-{index}"
