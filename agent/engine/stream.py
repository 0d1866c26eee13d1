"""One request's events, as an async iterator for its consumer.

The engine pushes events from its own step (on the event loop, never blocking); the consumer reads
at its own pace. Deltas that queued up while it was busy come out merged, so a slow consumer gets
fewer, larger deltas and costs the engine nothing. The last event is always one `Finish`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.admission import AdmissionDecision
from agent.engine.types import Delta, Event, Finish
from agent.wire.logprobs import TokenLogprob


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole stream read to its end (`RequestStream.collect`)."""

    content: str
    reasoning: str
    finish: Finish
    num_deltas: int
    logprobs: tuple[TokenLogprob, ...] = ()  # of the content tokens, when the request asked


class RequestStream:
    def __init__(
        self,
        request_id: str,
        prompt_tokens: int,
        decision: AdmissionDecision,
        cancel: Callable[[str], Awaitable[bool]],
    ) -> None:
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.decision = decision  # the admission that let it in: reservation, expected output
        self.finish: Finish | None = None  # set once the Finish has been pushed
        self.num_tokens = 0  # generated so far
        self._cancel = cancel
        self._events: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._finished = asyncio.Event()  # the Finish has been pushed (read or not)
        self._ended = False  # the consumer has read the Finish

    def push(self, event: Event) -> None:
        if self.finish is not None:
            return
        if isinstance(event, Finish):
            self.finish = event
            self._finished.set()
        else:
            self.num_tokens += event.num_tokens
        self._events.append(event)
        self._ready.set()

    async def finished(self) -> Finish:
        """Wait for the Finish to be pushed without reading the stream: its events stay queued for the reader."""
        await self._finished.wait()
        return self.finish

    @property
    def has_started(self) -> bool:
        return self.num_tokens > 0

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> Event:
        if self._ended:
            raise StopAsyncIteration
        while not self._events:
            self._ready.clear()
            await self._ready.wait()
        event = self._events.popleft()
        if isinstance(event, Delta):
            event = self._merge(event)
        else:
            self._ended = True
        return event

    def _merge(self, first: Delta) -> Delta:
        if not self._events or not isinstance(self._events[0], Delta):
            return first
        content, reasoning, num_tokens = [first.content], [first.reasoning], first.num_tokens
        logprobs = list(first.logprobs)
        while self._events and isinstance(self._events[0], Delta):
            delta = self._events.popleft()
            content.append(delta.content)
            reasoning.append(delta.reasoning)
            num_tokens += delta.num_tokens
            logprobs.extend(delta.logprobs)
        return Delta("".join(content), "".join(reasoning), num_tokens, tuple(logprobs))

    async def cancel(self) -> bool:
        """Ask the engine to take the request out; its stream then ends with finish_reason cancelled."""
        return False if self.finish is not None else await self._cancel(self.request_id)

    async def aclose(self) -> None:
        await self.cancel()

    async def collect(self) -> Completion:
        content: list[str] = []
        reasoning: list[str] = []
        logprobs: list[TokenLogprob] = []
        num_deltas = 0
        async for event in self:
            if isinstance(event, Delta):
                content.append(event.content)
                reasoning.append(event.reasoning)
                logprobs.extend(event.logprobs)
                num_deltas += 1
            else:
                return Completion("".join(content), "".join(reasoning), event, num_deltas, tuple(logprobs))
        raise RuntimeError("the stream ended without a Finish")  # unreachable: the last event is a Finish
