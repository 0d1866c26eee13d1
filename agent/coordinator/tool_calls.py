"""A response's tool calls as a provider streams them, checked before any piece reaches the client.

A provider is a stranger: its tool-call deltas must make one consistent sequence of calls, as OpenAI's
own stream does, or the stream ends with an error (never a traceback, never unbounded memory):

    index     a new call takes the next index (0, 1, 2, ...); a piece names the current call or opens the next
    id, name  exactly the first piece of a call carries them (the wire's model already checked their form);
              ids are unique within the response
    bounds    at most `max_calls` calls; at most `max_argument_chars` of arguments per call

The arguments are kept (bounded as above) only for a non-streamed answer's `message.tool_calls`; a stream
keeps their lengths.

Public names: ToolCallLedger, InvalidToolCall, AssembledCall.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.wire.frames import ToolCallDelta


class InvalidToolCall(ValueError):
    """What was wrong with a provider's tool-call delta (the message goes to the client's error)."""


@dataclass(slots=True)
class AssembledCall:
    id: str
    name: str
    arguments: str = ""  # kept only when the ledger keeps arguments
    num_argument_chars: int = 0


class ToolCallLedger:
    def __init__(self, *, max_calls: int, max_argument_chars: int, keep_arguments: bool = True) -> None:
        self.max_calls, self.max_argument_chars = max_calls, max_argument_chars
        self.keep_arguments = keep_arguments
        self.calls: list[AssembledCall] = []

    @property
    def num_calls(self) -> int:
        return len(self.calls)

    def admit(self, deltas: Iterable[ToolCallDelta]) -> None:
        """Check and record one chunk's deltas; raises InvalidToolCall at the first bad one."""
        for delta in deltas:
            if delta.index == len(self.calls):
                self._open(delta)
            elif delta.index == len(self.calls) - 1 and delta.id is None and delta.name is None:
                pass
            else:
                raise InvalidToolCall(f"tool call index {delta.index} is out of order (calls so far: "
                                      f"{len(self.calls)}; a piece names the current call or opens the next)")
            call = self.calls[delta.index]
            call.num_argument_chars += len(delta.arguments)
            if call.num_argument_chars > self.max_argument_chars:
                raise InvalidToolCall(f"tool call {delta.index}'s arguments exceed {self.max_argument_chars} "
                                      "characters")
            if self.keep_arguments:
                call.arguments += delta.arguments

    def _open(self, delta: ToolCallDelta) -> None:
        if delta.id is None or delta.name is None:
            raise InvalidToolCall(f"tool call {delta.index} opens without an id and a name")
        if len(self.calls) >= self.max_calls:
            raise InvalidToolCall(f"more than {self.max_calls} tool calls in one response")
        if any(call.id == delta.id for call in self.calls):
            raise InvalidToolCall(f"tool call id {delta.id!r} is used twice")
        self.calls.append(AssembledCall(delta.id, delta.name))
