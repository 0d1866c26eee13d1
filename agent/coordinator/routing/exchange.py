"""One consumer request as the router sees it: its ask, its current attempt, and the frames for it.

The router pushes what the provider of the current attempt sends about the request (and a LinkLost
when that provider's link drops) onto `events`, tagged with the attempt number, so a frame from an
attempt already given up on is never taken for one of the current attempt. One request id is used
for every attempt, end to end (the agent, the holds and the ledger all key on it).

Public names: Exchange, LinkLost.
"""

from __future__ import annotations

import asyncio
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
    events: asyncio.Queue[tuple[int, Any]] = field(default_factory=asyncio.Queue)
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

    @property
    def model(self) -> str:
        return self.ask.model

    def push(self, frame: Any) -> None:
        self.events.put_nowait((self.attempt, frame))

    async def next_event(self) -> Any:
        """The next frame of the current attempt (earlier attempts' leftovers are dropped)."""
        while True:
            attempt, frame = await self.events.get()
            if attempt == self.attempt:
                return frame

    def next_event_nowait(self) -> Any:
        """The next frame of the current attempt if one is waiting already, else None."""
        while not self.events.empty():
            attempt, frame = self.events.get_nowait()
            if attempt == self.attempt:
                return frame
        return None
