"""One consumer request as the router sees it: its ask, its current attempt, and the frames for it.

The router pushes what the provider of the current attempt sends about the request (and a LinkLost
when that provider's link drops) onto `events`, tagged with the attempt number, so a frame from an
attempt already given up on is never taken for one of the current attempt. One request id is used
for every attempt, end to end (the agent, the holds and the ledger all key on it).

Its one reader (the attempts, then the flow) waits on `arrival()`, a future done by the next push or by
`wake()`: a deque and one future rather than an asyncio.Queue, as this is every relayed token's path.
A stream's writer may set `sink`: a push with nothing queued before it is offered to the sink first, and
goes on the deque only when the sink does not take it (http/direct_stream.py: the relay's fast path).

Public names: Exchange, LinkLost.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.coordinator.routing.placement import Ask
from agent.wire.chat_body import ChatCompletionBody


@dataclass(frozen=True, slots=True)
class LinkLost:
    provider_id: str
    reason: str


@dataclass(slots=True, eq=False)
class Exchange:
    request_id: str
    body: ChatCompletionBody
    ask: Ask
    created_at: float
    events: deque[tuple[int, Any]] = field(default_factory=deque)
    provider: Any = None  # the ProviderRecord of the current attempt, while it has the request
    provider_id: str = ""  # of the latest attempt, kept after the provider lets go of it
    attempt: int = 0
    excluded: dict[str, str] = field(default_factory=dict)  # provider_id -> why not for this request
    num_failures: int = 0
    last_failure: str = ""
    invalid_claims: list[str] = field(default_factory=list)  # providers' word that the request cannot be served
    first_queued_at: float | None = None
    retry_after_hint_s: float | None = None  # from agents that refused it as full
    relinked: set[str] = field(default_factory=set)  # identities whose link was replaced under this attempt
    accepted_at: float | None = None  # the current attempt's inference_accepted (router clock): its ttft counts from it
    prefix_keys: list[str] = field(default_factory=list)  # routing by prefix (prefix_routes.py)
    sink: Callable[[Any], bool] | None = None  # takes a pushed frame (True) or leaves it to the deque
    _waiter: asyncio.Future | None = None  # the reader's arrival(), while it waits

    @property
    def model(self) -> str:
        return self.ask.model

    def push(self, frame: Any) -> None:
        sink = self.sink
        if sink is not None and not self.events and sink(frame):
            return
        self.events.append((self.attempt, frame))
        self.wake()

    def wake(self) -> None:
        """Done with the reader's arrival() future, if it waits: a frame came, or its own deadline passed."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def arrival(self) -> asyncio.Future:
        """A future done at the next push (at once if a frame waits already); await next_event_nowait() after it."""
        waiter = self._waiter
        if waiter is None or waiter.done():  # done: woken, or cancelled with the task that awaited it
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            if self.events:
                waiter.set_result(None)
        return waiter

    async def next_event(self) -> Any:
        """The next frame of the current attempt (earlier attempts' leftovers are dropped)."""
        while (frame := self.next_event_nowait()) is None:
            await self.arrival()
        return frame

    def next_event_nowait(self) -> Any:
        """The next frame of the current attempt if one is waiting already, else None."""
        events = self.events
        while events:
            attempt, frame = events.popleft()
            if attempt == self.attempt:
                return frame
        return None
