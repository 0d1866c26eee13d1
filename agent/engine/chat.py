"""Chat formatting: requests to prompt tokens with the model's own chat template, and generated text
split into `content` and `reasoning` without leaking channel markup.

gpt-oss speaks harmony. Its answer arrives as messages, each `<|channel|>NAME<|message|>TEXT<|end|>`
(the last one ends with the eos `<|return|>`, and the next one opens with `<|start|>assistant`); the
analysis channel is reasoning, final (and commentary) is content, and headers are dropped. Text that
arrives outside any message goes to content, so a model that never emits markup still answers.
`reasoning_effort` goes to the template's `Reasoning:` line (none/minimal become low: gpt-oss
always reasons).

gemma-4 thinks in a `<|channel>thought ... <channel|>` block when its template's `enable_thinking`
is on (mlx-lm's default). Here it is on only when the request asks for reasoning (a
`reasoning_effort` other than none/minimal); the thought block is reasoning.

Tool calls: a harmony message whose header names a recipient (` to=functions.NAME`, before or after
its channel, commentary or analysis) is a call, its body the arguments, ended by `<|call|>` or `<|end|>`;
gemma-4's calls are `<|tool_call>...<tool_call|>`. The splitter routes that text to the request's
ToolCallReader (agent/engine/tool_calls.py), which makes the wire's tool-call deltas; the request's
messages and tools reach the template through agent/engine/chat_messages.py.

Splitting runs on decoded text with mlx-lm's TextStateMachine (robust to how markers tokenize). Stop
strings are transitions to its end state in every state, so a stop string is never emitted and ends
the request even when it tokenizes differently from the stop sequence.

A raw prompt (`/v1/completions`) skips the template: its text is tokenized as it is, and its output is one
plain text with no channels or calls, so a completion model's text reaches the client as the model wrote it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mlx_lm.generate import TextStateMachine
from mlx_lm.tokenizer_utils import NaiveStreamingDetokenizer

from agent.engine.token_text import TokenText
from agent.engine.chat_messages import offered_tools, template_messages, template_tools, with_image_markers
from agent.engine.tool_calls import GemmaCalls, HarmonyCalls
from agent.engine.types import GenerationRequest, InvalidRequest
from agent.wire.frames import ToolCallDelta

CONTENT, REASONING, RECIPIENT, TOOL, TOOL_HEADER = "content", "reasoning", "recipient", "tool", "tool_header"
RAW = "raw"  # the splitter's one state for a raw prompt's output (GenerationRequest.raw_prompt)
CALL_FIELDS = (RECIPIENT, TOOL_HEADER, TOOL)  # the parts of one tool call's message
MAX_GEMMA_CALL_CHARS = 1024 * 1024  # one call's text, kept until it closes (the model's max_tokens binds first)

_HARMONY_MESSAGE_SAFETY = [("<|start|>assistant", "header"), ("<|channel|>final<|message|>", "normal"),
                           ("<|channel|>analysis<|message|>", "reasoning")]
_HARMONY_MESSAGE_END = [("<|end|>", "header"), ("<|call|>", "header")]
HARMONY_TRANSITIONS: dict[str, list[tuple[str, str]]] = {
    "header": [
        ("<|channel|>analysis", "analysis_header"),
        ("<|channel|>final", "final_header"),
        ("<|channel|>commentary", "final_header"),
        ("<|start|>assistant", "header"),
        (" to=", "recipient"),  # `<|start|>assistant to=functions.NAME<|channel|>commentary json<|message|>`
        ("<|end|>", "header"),
        ("<|message|>", "normal"),
    ],
    # Drops e.g. `<|constrain|>json`; a recipient makes the message a tool call, on either channel.
    "analysis_header": [(" to=", "recipient"), ("<|message|>", "reasoning")],
    "final_header": [(" to=", "recipient"), ("<|message|>", "normal")],
    "recipient": [("<|channel|>", "tool_header"), ("<|constrain|>", "tool_header"), (" ", "tool_header"),
                  ("<|message|>", "tool")],
    "tool_header": [("<|message|>", "tool")],
    "tool": [*_HARMONY_MESSAGE_END, *_HARMONY_MESSAGE_SAFETY],
    "reasoning": [*_HARMONY_MESSAGE_END, *_HARMONY_MESSAGE_SAFETY],
    "normal": [*_HARMONY_MESSAGE_END, *_HARMONY_MESSAGE_SAFETY],
}
HARMONY_FIELDS = {"header": CONTENT, "normal": CONTENT, "reasoning": REASONING, "recipient": RECIPIENT,
                  "tool_header": TOOL_HEADER, "tool": TOOL}

GEMMA_THINK_START, GEMMA_THINK_END = "<|channel>thought", "<channel|>"
GEMMA_TOOL_CALL_START, GEMMA_TOOL_CALL_END = "<|tool_call>", "<tool_call|>"
GEMMA_TRANSITIONS: dict[str, list[tuple[str, str]]] = {
    "normal": [(GEMMA_THINK_START, "reasoning"), (GEMMA_TOOL_CALL_START, "tool")],
    "reasoning": [(GEMMA_THINK_END, "normal")],
    "tool": [(GEMMA_TOOL_CALL_END, "normal")],
}
GENERIC_FIELDS = {"normal": CONTENT, "tool": TOOL, "reasoning": REASONING}
NO_THINKING_EFFORTS = (None, "none", "minimal")


@dataclass(frozen=True, slots=True)
class EncodedPrompt:
    token_ids: list[int]
    initial_state: str  # where the channel splitter starts


class ChannelSplitter:
    """One request's generated text, routed to content, reasoning or tool calls, with markup and stop strings
    removed. `calls` reads the text of tool calls (None: the request offered no tools; such text is content)."""

    def __init__(self, machine: TextStateMachine, initial_state: str, fields: Mapping[str, str],
                 markup: Sequence[str] = (), calls: HarmonyCalls | GemmaCalls | None = None) -> None:
        self._state = machine.make_state(initial_state)
        self._fields = fields
        self._markup = markup  # special tokens outside any recognised marker (a stray `<|start|>`): dropped
        self.calls = calls
        self.is_stopped = False  # a stop string was matched: nothing more is emitted
        self._reasoning_started = False
        self.ended_marker = False  # the last feed completed a marker: the text held back was markup (logprobs.py)
        self._field: str | None = None  # of the last segment routed

    @property
    def num_tool_calls(self) -> int:
        return 0 if self.calls is None else self.calls.num_calls

    def feed(self, text: str) -> tuple[str, str]:
        self.ended_marker = False
        if self.is_stopped or not text:
            return "", ""
        self._state, segments = TextStateMachine.split(self._state, text)
        self.ended_marker = len(segments) > 1
        return self._route(segments)

    def flush(self) -> tuple[str, str]:
        """At max_tokens: what was held back as a possible marker is text after all."""
        if self.is_stopped:
            return "", ""
        self._state, text, state = TextStateMachine.flush(self._state)
        return self._route([(state, text)])

    def finish(self) -> str:
        """The turn ended (eos, a stop, max_tokens): a call still open is closed; returns text for content."""
        return self._leave_call()

    def take_tool_calls(self) -> tuple[ToolCallDelta, ...]:
        """The tool-call deltas produced since the last take."""
        return () if self.calls is None else self.calls.take()

    def _route(self, segments: Sequence[tuple[str | None, str]]) -> tuple[str, str]:
        content, reasoning = [], []
        for state, text in segments:
            if state is None:
                self.is_stopped = True
                break
            field = self._fields.get(state)
            if self._field in CALL_FIELDS and field not in CALL_FIELDS:
                content.append(self._leave_call())
            self._field = field
            if field == TOOL:
                content.append(text if self.calls is None else self.calls.body(text))
                continue
            if field in (RECIPIENT, TOOL_HEADER):
                if field == RECIPIENT and isinstance(self.calls, HarmonyCalls):
                    self.calls.recipient(text)
                continue
            for token in self._markup:
                text = text.replace(token, "")
            if field == CONTENT:
                content.append(text)
            elif field == REASONING and text:
                if not self._reasoning_started:
                    text = text.removeprefix("\n")  # gemma writes `thought\n` before its reasoning
                    self._reasoning_started = bool(text)
                reasoning.append(text)
        return "".join(content), "".join(reasoning)

    def _leave_call(self) -> str:
        was_in_call, self._field = self._field in CALL_FIELDS, None
        if self.calls is None or not was_in_call:
            return ""
        text = self.calls.end() or ""
        if self.calls.is_done:
            self.is_stopped = True  # parallel_tool_calls false: the first call ends the turn
        return text


class ChatFormat:
    """How one loaded model's requests are encoded and its output is split."""

    def __init__(self, tokenizer, model_type: str) -> None:
        self.tokenizer = tokenizer
        if model_type == "gpt_oss":
            self.family, self._transitions, self._fields = "harmony", HARMONY_TRANSITIONS, HARMONY_FIELDS
        elif model_type in ("gemma4", "gemma4_text"):
            self.family, self._transitions, self._fields = "gemma", GEMMA_TRANSITIONS, GENERIC_FIELDS
        else:  # the catalog serves only the two above; others get mlx-lm's think markers, if any
            self.family, self._fields = "generic", GENERIC_FIELDS
            self._transitions = _think_transitions(tokenizer)
        self._machines: dict[tuple[str, ...], TextStateMachine] = {}
        # Special tokens arrive whole (each is one token), so removing complete ones is enough.
        decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        self._markup = tuple(sorted({added.content for added in decoder.values() if added.special}, key=len,
                                    reverse=True))
        self.markup_ids = frozenset(token for token, added in decoder.items() if added.special)
        self.token_text = TokenText(tokenizer)  # for logprobs
        self.image_marker: str | None = None  # the image token's text, when the model is loaded with vision

    def encode(self, request: GenerationRequest) -> EncodedPrompt:
        if request.raw_prompt:  # /v1/completions: the text as it is, with the tokenizer's own BOS if it has one
            return EncodedPrompt(list(self.tokenizer.encode(request.messages[0]["content"])), RAW)
        kwargs: dict[str, object] = {}
        if self.family == "harmony":
            effort = request.reasoning_effort
            kwargs["reasoning_effort"] = "low" if effort in ("none", "minimal") else effort
        elif self.family == "gemma":
            kwargs["enable_thinking"] = request.reasoning_effort not in NO_THINKING_EFFORTS
        if offered_tools(request):
            kwargs["tools"] = template_tools(request.tools)
        try:
            ids = self.tokenizer.apply_chat_template(
                template_messages(self.family, with_image_markers(request.messages, self.image_marker)),
                add_generation_prompt=True, **kwargs
            )
        except Exception as exc:  # a template's raise_exception, or messages it cannot render
            raise InvalidRequest(f"the chat template cannot render these messages: {exc}") from exc
        return EncodedPrompt(list(ids), self._initial_state(ids))

    def detokenizer(self, request: GenerationRequest):
        """A fresh streaming detokenizer for one request. A raw prompt's gets mlx-lm's naive one (the tokenizer's
        own decode): the streaming ones drop the first token's leading space, which a chat answer does not miss
        but a completion of "The capital of France is" does (" Paris")."""
        if request.raw_prompt:
            return NaiveStreamingDetokenizer(self.tokenizer)
        return self.tokenizer.detokenizer

    def is_reasoning(self, request: GenerationRequest) -> bool:
        """May the model reason before answering? (gpt-oss always does; gemma when its thinking is on.)"""
        return self.family != "gemma" or request.reasoning_effort not in NO_THINKING_EFFORTS

    def splitter(self, prompt: EncodedPrompt, stop: Sequence[str] = (), tool_names: frozenset[str] = frozenset(),
                 is_parallel: bool = True) -> ChannelSplitter:
        """`tool_names`: the functions the model was offered (empty: no call is parsed, its text is content);
        `is_parallel` false: the turn ends when its first call closes."""
        is_raw = prompt.initial_state == RAW
        key = (is_raw, *stop)
        machine = self._machines.get(key)
        if machine is None:
            source = {RAW: []} if is_raw else self._transitions
            transitions = {state: list(edges) for state, edges in source.items()}
            transitions.setdefault("normal", [])
            for edges in transitions.values():
                edges.extend((word, None) for word in stop)
            machine = self._machines[key] = TextStateMachine(transitions)
        if is_raw:  # plain text out: no channels, no calls; special tokens are still dropped
            return ChannelSplitter(machine, RAW, {RAW: CONTENT}, self._markup)
        calls = self._calls(tool_names, is_parallel)
        return ChannelSplitter(machine, prompt.initial_state, self._fields, self._markup, calls)

    def _calls(self, tool_names: frozenset[str], is_parallel: bool) -> HarmonyCalls | GemmaCalls | None:
        if not tool_names:
            return None
        if self.family == "harmony":
            return HarmonyCalls(tool_names, is_parallel)
        if self.family == "gemma":
            return GemmaCalls(tool_names, MAX_GEMMA_CALL_CHARS, is_parallel)
        return None

    def _initial_state(self, ids: Sequence[int]) -> str:
        if self.family == "harmony":
            return "header"  # the prompt ends with `<|start|>assistant`
        tokenizer = self.tokenizer
        if tokenizer.has_thinking and tokenizer.rfind_think_start(ids) > tokenizer.rfind_think_end(ids):
            return "reasoning"  # the template opened the thought block itself
        return "normal"


def _think_transitions(tokenizer) -> dict[str, list[tuple[str, str]]]:
    if not tokenizer.has_thinking:
        return {"normal": []}
    return {"normal": [(tokenizer.think_start, "reasoning")], "reasoning": [(tokenizer.think_end, "normal")]}
