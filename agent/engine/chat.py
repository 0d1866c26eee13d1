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

Splitting runs on decoded text with mlx-lm's TextStateMachine (robust to how markers tokenize). Stop
strings are transitions to its end state in every state, so a stop string is never emitted and ends
the request even when it tokenizes differently from the stop sequence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mlx_lm.generate import TextStateMachine

from agent.engine.token_text import TokenText
from agent.engine.types import GenerationRequest, InvalidRequest

CONTENT, REASONING = "content", "reasoning"

_HARMONY_MESSAGE_SAFETY = [("<|start|>assistant", "header"), ("<|channel|>final<|message|>", "normal"),
                           ("<|channel|>analysis<|message|>", "reasoning")]
HARMONY_TRANSITIONS: dict[str, list[tuple[str, str]]] = {
    "header": [
        ("<|channel|>analysis", "analysis_header"),
        ("<|channel|>final", "final_header"),
        ("<|channel|>commentary", "final_header"),
        ("<|start|>assistant", "header"),
        ("<|end|>", "header"),
        ("<|message|>", "normal"),
    ],
    "analysis_header": [("<|message|>", "reasoning")],  # drops e.g. ` to=...` or `<|constrain|>json`
    "final_header": [("<|message|>", "normal")],
    "reasoning": [("<|end|>", "header"), *_HARMONY_MESSAGE_SAFETY],
    "normal": [("<|end|>", "header"), *_HARMONY_MESSAGE_SAFETY],
}
HARMONY_FIELDS = {"header": CONTENT, "normal": CONTENT, "reasoning": REASONING}

GEMMA_THINK_START, GEMMA_THINK_END = "<|channel>thought", "<channel|>"
GEMMA_TRANSITIONS: dict[str, list[tuple[str, str]]] = {
    "normal": [(GEMMA_THINK_START, "reasoning")],
    "reasoning": [(GEMMA_THINK_END, "normal")],
}
GENERIC_FIELDS = {"normal": CONTENT, "tool": CONTENT, "reasoning": REASONING}
NO_THINKING_EFFORTS = (None, "none", "minimal")


@dataclass(frozen=True, slots=True)
class EncodedPrompt:
    token_ids: list[int]
    initial_state: str  # where the channel splitter starts


class ChannelSplitter:
    """One request's generated text, routed to content or reasoning with markup and stop strings removed."""

    def __init__(self, machine: TextStateMachine, initial_state: str, fields: Mapping[str, str],
                 markup: Sequence[str] = ()) -> None:
        self._state = machine.make_state(initial_state)
        self._fields = fields
        self._markup = markup  # special tokens outside any recognised marker (a stray `<|start|>`): dropped
        self.is_stopped = False  # a stop string was matched: nothing more is emitted
        self._reasoning_started = False
        self.ended_marker = False  # the last feed completed a marker: the text held back was markup (logprobs.py)

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

    def _route(self, segments: Sequence[tuple[str | None, str]]) -> tuple[str, str]:
        content, reasoning = [], []
        for state, text in segments:
            if state is None:
                self.is_stopped = True
                break
            for token in self._markup:
                text = text.replace(token, "")
            field = self._fields.get(state)
            if field == CONTENT:
                content.append(text)
            elif field == REASONING and text:
                if not self._reasoning_started:
                    text = text.removeprefix("\n")  # gemma writes `thought\n` before its reasoning
                    self._reasoning_started = bool(text)
                reasoning.append(text)
        return "".join(content), "".join(reasoning)


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

    def encode(self, request: GenerationRequest) -> EncodedPrompt:
        kwargs: dict[str, object] = {}
        if self.family == "harmony":
            effort = request.reasoning_effort
            kwargs["reasoning_effort"] = "low" if effort in ("none", "minimal") else effort
        elif self.family == "gemma":
            kwargs["enable_thinking"] = request.reasoning_effort not in NO_THINKING_EFFORTS
        try:
            ids = self.tokenizer.apply_chat_template(
                [dict(message) for message in request.messages], add_generation_prompt=True, **kwargs
            )
        except Exception as exc:  # a template's raise_exception, or messages it cannot render
            raise InvalidRequest(f"the chat template cannot render these messages: {exc}") from exc
        return EncodedPrompt(list(ids), self._initial_state(ids))

    def is_reasoning(self, request: GenerationRequest) -> bool:
        """May the model reason before answering? (gpt-oss always does; gemma when its thinking is on.)"""
        return self.family != "gemma" or request.reasoning_effort not in NO_THINKING_EFFORTS

    def splitter(self, prompt: EncodedPrompt, stop: Sequence[str] = ()) -> ChannelSplitter:
        key = tuple(stop)
        machine = self._machines.get(key)
        if machine is None:
            transitions = {state: list(edges) for state, edges in self._transitions.items()}
            transitions.setdefault("normal", [])
            for edges in transitions.values():
                edges.extend((word, None) for word in stop)
            machine = self._machines[key] = TextStateMachine(transitions)
        return ChannelSplitter(machine, prompt.initial_state, self._fields, self._markup)

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
