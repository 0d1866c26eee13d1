"""One request's tool calls, read from the text its channel splitter routes to them, as wire deltas.

The splitter (agent/engine/chat.py) finds the markup; a reader here turns what is inside into OpenAI's
tool-call deltas: the first delta of a call has its index, a fresh `call_<random>` id and the name, the
later ones argument fragments.

    HarmonyCalls  gpt-oss: a message whose header names a recipient `to=functions.NAME` (on the commentary
                  channel as trained, or on analysis, a slip the model makes) is a call; its body is the
                  JSON arguments, streamed as generated; `<|call|>` or `<|end|>` ends it. mlx-lm has no
                  harmony parser, so this one is ours.
    GemmaCalls    gemma-4: `<|tool_call>call:NAME{...}<tool_call|>`. The name is sent as soon as it is
                  complete; the arguments (gemma's own notation, not JSON) are converted when the call
                  closes, by mlx-lm's gemma-4 parser (`mlx_lm.tool_parsers.gemma4`).

Bounded: at most MAX_TOOL_CALLS_PER_TURN calls (later ones are dropped), names as OpenAI allows them and,
when the request offered tools, one of those; a call to anything else is not a call (its text is content).

Public names: ToolCallReader, HarmonyCalls, GemmaCalls, new_call_id.
"""

from __future__ import annotations

import json
import re
import secrets

from mlx_lm.tool_parsers import gemma4

from agent.wire.frames import MAX_TOOL_CALLS_PER_TURN, ToolCallDelta
from agent.wire.tools import FUNCTION_NAME_PATTERN

MAX_RECIPIENT_CHARS = 256  # `functions.` and a 64-character name, with room for spacing
_NAME = re.compile(FUNCTION_NAME_PATTERN)
_GEMMA_HEAD = re.compile(r"\s*call:([\w-]+)\{")


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


class ToolCallReader:
    """The calls of one turn. `names`: the functions the request offered; `is_parallel` false
    (parallel_tool_calls: false) ends the turn when its first call closes."""

    def __init__(self, names: frozenset[str], is_parallel: bool = True) -> None:
        self.names, self.is_parallel = names, is_parallel
        self.num_calls = 0
        self.is_open = False  # inside a call now
        self._deltas: list[ToolCallDelta] = []

    @property
    def is_done(self) -> bool:
        """No further call may follow: the turn should end."""
        return not self.is_parallel and self.num_calls > 0 and not self.is_open

    def take(self) -> tuple[ToolCallDelta, ...]:
        deltas, self._deltas = tuple(self._deltas), []
        return deltas

    def _is_callable(self, name: str) -> bool:
        return bool(_NAME.match(name)) and name in self.names and self.num_calls < MAX_TOOL_CALLS_PER_TURN

    def _open(self, name: str) -> None:
        self._deltas.append(ToolCallDelta(index=self.num_calls, id=new_call_id(), name=name))
        self.num_calls += 1
        self.is_open = True

    def _arguments(self, text: str) -> None:
        if text:
            self._deltas.append(ToolCallDelta(index=self.num_calls - 1, arguments=text))


class HarmonyCalls(ToolCallReader):
    def __init__(self, names: frozenset[str], is_parallel: bool = True) -> None:
        super().__init__(names, is_parallel)
        self._recipient = ""
        self._is_refused = False  # this message names a recipient we do not call: its body is content

    def recipient(self, text: str) -> None:
        if not self.is_open and not self._is_refused:
            self._recipient = (self._recipient + text)[:MAX_RECIPIENT_CHARS]

    def body(self, text: str) -> str:
        """Text of the message addressed to the recipient; returns what is content instead."""
        if not self.is_open and not self._is_refused:
            name = self._recipient.strip().removeprefix("functions.")
            if self._is_callable(name):
                self._open(name)
            else:
                self._is_refused = True
        if self._is_refused:
            return text
        self._arguments(text)
        return ""

    def end(self) -> None:
        self.is_open = self._is_refused = False
        self._recipient = ""


class GemmaCalls(ToolCallReader):
    def __init__(self, names: frozenset[str], max_call_chars: int, is_parallel: bool = True) -> None:
        super().__init__(names, is_parallel)
        self.max_call_chars = max_call_chars
        self._text = ""
        self._name: str | None = None

    def body(self, text: str) -> str:
        self._text = (self._text + text)[:self.max_call_chars]
        if self._name is None and not self.is_open:
            head = _GEMMA_HEAD.match(self._text)
            if head is not None and self._is_callable(head.group(1)):
                self._name = head.group(1)
                self._open(self._name)
        return ""

    def end(self) -> str:
        """The call closed: its arguments, converted; returns the text when it was not a call after all."""
        text, was_open = self._text, self.is_open
        self._text, self._name, self.is_open = "", None, False
        if not was_open:
            return text
        try:
            parsed = gemma4.parse_tool_call(text)
        except (ValueError, json.JSONDecodeError):
            parsed = None  # cut off or malformed: the call still ends as a JSON object, empty
        arguments = parsed["arguments"] if isinstance(parsed, dict) else {}
        self._arguments(json.dumps(arguments, ensure_ascii=False))
        return ""
