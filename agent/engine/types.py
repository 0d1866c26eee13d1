"""The engine's interface: requests in, events out, slot snapshots, and the errors a caller can meet.

No MLX here: the daemon, the coordinator's tests and the fake engine use these without it.

    GenerationRequest  one chat completion (from an OpenAI request body: `GenerationRequest.from_openai`)
    Delta, Finish      the events of a request's stream: deltas, then exactly one Finish with usage
    SlotState          cold → loading → idle ⇄ running → unloading → cold, and failed
    SlotSnapshot       one slot for heartbeats (the wire names of DESIGN.md §5 heartbeat.slots)
    SlotTransition     one move of a slot's state, as the engine tells its listeners
    EngineAPI          the methods the real and the fake engine share (both are agent.engine.core.Engine)

    EngineError (DarkbloomError)
    ├── RequestRefused   admission said no now (verdict full) or never here (verdict never), with the reason
    ├── LoadRefused      the memory gate refused the load (the slot stays cold)
    ├── LoadFailed       the load itself failed (the slot is failed, with the reason)
    └── EngineNotRunning start() first, or the engine has stopped
    and, from agent.errors (one class each across the tree, re-exported here): InvalidRequest (the request
    cannot be served as written), UnknownModel (no slot for that model)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from agent.admission import AdmissionDecision, LoadDecision, Verdict
from agent.engine.constraint import Constraint, constraint_for
from agent.errors import DarkbloomError, InvalidRequest, UnknownModel
from agent.wire.body_options import token_biases
from agent.wire.chat_body import ChatCompletionBody, ChatMessage, TextPart
from agent.wire.image_parts import MAX_IMAGE_URL_CHARS, parse_data_url
from agent.wire.frames import (  # one vocabulary with the wire (re-exported)
    AdmissionLimits,
    FinishReason,
    SlotState,
    ToolCallDelta,
)
from agent.wire.logprobs import TokenLogprob
from agent.wire.protocol import ProtocolError, validate_chat_request

if TYPE_CHECKING:
    from agent.engine.stream import RequestStream

class EngineError(DarkbloomError):
    code = "engine_error"


class RequestRefused(EngineError):
    def __init__(self, verdict: Verdict, reason: str, *, code: str | None = None,
                 decision: AdmissionDecision | None = None) -> None:
        super().__init__(reason)
        self.verdict, self.reason, self.decision = verdict, reason, decision
        self.code = code or ("kv_full" if verdict is Verdict.FULL else "cannot_fit")


class LoadRefused(EngineError):
    code = "load_refused"

    def __init__(self, decision: LoadDecision) -> None:
        super().__init__(f"{decision.model} cannot load here: {decision.reason}")
        self.decision = decision


class LoadFailed(EngineError):
    code = "load_failed"


class EngineNotRunning(EngineError):
    code = "engine_not_running"


@dataclass(frozen=True, slots=True)
class ImageInput:
    """One image of a request, as its bytes arrived (the engine's bounded decoder checks them)."""

    label: str  # the body's path to its part, for errors: messages[i].content[j]
    media_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    request_id: str
    model: str
    # {"role": ..., "content": ...}, content as plain text (a message with images: a list of {"type": "text",
    # "text": ...} and {"type": "image"} parts, the images in `images`, in order); a tool turn adds "tool_calls" (OpenAI's shape,
    # arguments as JSON text) and "reasoning", a tool result "tool_call_id" (agent/engine/chat_messages.py).
    messages: tuple[Mapping[str, Any], ...]
    max_tokens: int | None = None  # None: the engine's default, within the context
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    seed: int | None = None  # per request, even inside a batch (each request samples with its own key)
    stop: tuple[str, ...] = ()
    reasoning_effort: str | None = None  # gpt-oss: low | medium | high; gemma: thinks unless none/minimal/None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    ignore_eos: bool = False  # benchmarks only: generate exactly max_tokens
    constraint: Constraint | None = None  # the output must match it (agent/engine/constraint.py)
    # Output options: logprobs of the content tokens with this many alternatives (None: not asked), and
    # OpenAI's logit_bias as (token id, additive bias) pairs.
    num_top_logprobs: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()
    # In-process seam (mlx-lm's LogitsProcessor: (tokens, logits) -> logits), run after the built-in ones.
    logits_processors: tuple[Callable[[Any, Any], Any], ...] = ()
    tools: tuple[Mapping[str, Any], ...] = ()  # OpenAI function tools, as JSON: the chat template renders them
    tool_choice: str | Mapping[str, Any] | None = None  # "none" | "auto" | "required" | {"type": "function", ...}
    parallel_tool_calls: bool | None = None
    raw_prompt: bool = False  # the one user message is the prompt, without the chat template (/v1/completions)
    images: tuple[ImageInput, ...] = ()

    @property
    def tool_names(self) -> frozenset[str]:
        """The functions the model may call: none when tool_choice is "none"."""
        if self.tool_choice == "none":
            return frozenset()
        return frozenset(tool["function"]["name"] for tool in self.tools)

    @classmethod
    def from_openai(cls, request_id: str, model: str, body: Mapping[str, Any] | ChatCompletionBody) -> GenerationRequest:
        """From an OpenAI chat-completions body: validated by the wire's own model (agent.wire.chat_body),
        or already validated (an inference_request frame's `body`)."""
        parsed = body if isinstance(body, ChatCompletionBody) else validate_chat_request(dict(body))
        if isinstance(parsed, ProtocolError):
            raise InvalidRequest(f"invalid chat request: {parsed}")
        if (parsed.n or 1) != 1:
            raise InvalidRequest(f"n is {parsed.n}: an agent serves one choice per request (the coordinator fans "
                                 "n choices out as n requests)")
        return cls(
            request_id=request_id, model=model, messages=tuple(_message(m) for m in parsed.messages),
            max_tokens=parsed.output_limit, temperature=_given(parsed.temperature, 1.0),
            top_p=_given(parsed.top_p, 1.0), top_k=_given(parsed.top_k, 0), seed=parsed.seed,
            stop=parsed.stop_sequences, reasoning_effort=parsed.reasoning_effort,
            presence_penalty=_given(parsed.presence_penalty, 0.0),
            frequency_penalty=_given(parsed.frequency_penalty, 0.0),
            constraint=constraint_for(parsed.response_format),
            num_top_logprobs=parsed.num_top_logprobs, logit_bias=token_biases(parsed.logit_bias),
            tools=tuple(tool.model_dump(exclude_none=True) for tool in parsed.tools or ()),
            tool_choice=_choice(parsed.tool_choice), parallel_tool_calls=parsed.parallel_tool_calls,
            raw_prompt=bool(parsed.raw_prompt),
            images=_images(parsed),
        )


def _given(value: Any, default: Any) -> Any:
    return default if value is None else value


def _choice(choice: Any) -> str | dict[str, Any] | None:
    return choice if choice is None or isinstance(choice, str) else choice.model_dump()


def _images(body: ChatCompletionBody) -> tuple[ImageInput, ...]:
    """Each image part's bytes. An agent never fetches: a URL other than data: is refused (the coordinator
    fetches http(s) images and forwards them inline)."""
    images = []
    for label, part in body.image_parts:
        if not part.is_data_url:
            raise InvalidRequest(f"{label}: an agent takes images only as data: URLs (the coordinator fetches "
                                 "http(s) images and sends them inline)")
        try:
            parsed = parse_data_url(part.image_url.url, max_bytes=MAX_IMAGE_URL_CHARS)
        except ValueError as exc:
            raise InvalidRequest(f"{label}: the image {exc}") from exc
        images.append(ImageInput(label, parsed.media_type, parsed.data))
    return tuple(images)


def _content(message: ChatMessage) -> str | list[dict[str, str]]:
    if not message.images:
        return message.text
    return [{"type": "text", "text": part.text} if isinstance(part, TextPart) else {"type": "image"}
            for part in message.content]


def _message(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": _content(message)}
    if message.tool_calls:
        out["tool_calls"] = [call.model_dump() for call in message.tool_calls]
        reasoning = message.reasoning or message.reasoning_content
        if reasoning:
            out["reasoning"] = reasoning
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # of the prompt tokens, those whose KV came from the prefix cache (not prefilled)


@dataclass(frozen=True, slots=True)
class Delta:
    """Text generated since the previous event; `num_tokens` counts the tokens behind it (some carry no text).
    `logprobs`: one entry per content token behind it, when the request asked for them."""

    content: str = ""
    reasoning: str = ""
    num_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    tool_calls: tuple[ToolCallDelta, ...] = ()  # pieces of the turn's tool calls (agent/engine/tool_calls.py)


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason
    usage: Usage
    error_code: str | None = None
    error_message: str | None = None


Event = Delta | Finish


HEARTBEAT_FIELDS = ("model", "state", "num_running", "num_waiting", "kv_bytes_per_token", "kv_budget_bytes",
                    "kv_reserved_bytes", "kv_used_bytes", "prefill_tps", "decode_tps", "expected_output_ratio",
                    "kv_longest_row_end_tokens", "modalities", "kv_cached_bytes")


@dataclass(frozen=True, slots=True)
class SlotSnapshot:
    model: str
    state: SlotState
    num_running: int  # producing tokens
    num_waiting: int  # admitted, prompt not yet processed
    kv_bytes_per_token: int
    kv_budget_bytes: int
    kv_reserved_bytes: int
    kv_used_bytes: int
    prefill_tps: float  # prompt tokens per second while prefilling (moving average)
    decode_tps: float  # generated tokens per second of the whole batch while decoding (moving average)
    weights_bytes: int  # loaded weights (0 unless loaded)
    expected_output_ratio: float  # unrounded: the coordinator's admission uses it as the agent's does
    reason: str = ""  # why it is failed, or why the last load was refused
    kv_longest_row_end_tokens: int = 0
    modalities: tuple[str, ...] = ("text",)  # ("text", "image") when loaded with vision
    vision_reason: str = ""  # why a model with vision is loaded text-only
    kv_cached_bytes: int = 0  # the prefix cache (evictable: admission frees it before refusing)
    prefix_hit_rate: float = 0.0  # admitted requests that reused a cached prefix, of lookups
    prefix_hit_tokens: int = 0  # prompt tokens not prefilled thanks to it
    prefix_evictions: int = 0
    prefix_chains: tuple[str, ...] = ()  # chain keys of the cached prefixes, most recently used first (bounded)

    def heartbeat(self) -> dict[str, Any]:
        """The heartbeat's `slots[]` entry."""
        return {name: getattr(self, name) for name in HEARTBEAT_FIELDS}


@dataclass(frozen=True, slots=True)
class SlotTransition:
    model: str
    old: SlotState
    new: SlotState
    reason: str = ""


SlotListener = Callable[[SlotTransition], None]


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    slots: tuple[SlotSnapshot, ...]

    def slot(self, model: str) -> SlotSnapshot:
        for slot in self.slots:
            if slot.model == model:
                return slot
        raise UnknownModel(f"no slot for model {model!r}")


class EngineAPI(Protocol):
    """What the daemon drives; MLXEngine and FakeEngine both are one."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def load(self, model: str) -> SlotSnapshot: ...
    async def unload(self, model: str) -> SlotSnapshot: ...
    async def submit(self, request: GenerationRequest) -> RequestStream: ...
    async def cancel(self, request_id: str) -> bool: ...
    def snapshot(self) -> EngineSnapshot: ...
    def admission_limits(self, model: str) -> AdmissionLimits: ...
    def add_listener(self, listener: SlotListener) -> Callable[[], None]: ...
    def allocated_bytes(self) -> int | None: ...  # what the engine holds now (None: unknown, e.g. simulated)
