"""The OpenAI chat-completions request body, as the coordinator accepts it and the agent receives it.

Unknown or unsupported parameters are REFUSED, and the
error names the parameter, as OpenAI itself does: silently dropping one would return another kind of
answer than the one asked (and billed) for. Neutral values are let through: `user` (unused), `metadata`,
`store` as false, and null for the fields a client echoes back in an assistant message
(`refusal`, `audio`, ...). `logprobs`, `top_logprobs` and `logit_bias` are served, with the bounds
of agent/wire/body_options.py; `tools`, `tool_choice` and tool messages with agent/wire/tools.py's. Sampling parameters are those mlx-lm implements, with OpenAI's
ranges. Strings and lists are bounded so a body cannot cost the agent more than a frame.
`response_format` (agent/wire/response_format.py) is enforced by constrained decoding on the agent.
`n` > 1 is served by the coordinator as n one-choice requests (agent/coordinator/choices.py): an agent is
always sent n unset, and refuses anything else.

Tools (agent/wire/tools.py): `tools`, `tool_choice` (a named function must be one of `tools`),
`parallel_tool_calls`; an assistant turn may carry `tool_calls` with `content` null, and a `tool`
message answers one of the calls before it by `tool_call_id`, as OpenAI requires.

Images: `image_url` parts in user messages (agent/wire/image_parts.py), at most MAX_IMAGES per body.

Public names: ChatCompletionBody, ChatMessage, TextPart, ContentPart, StreamOptions, ReasoningEffort, MAX_MESSAGES,
MAX_TEXT_CHARS, MAX_OUTPUT_TOKENS, MAX_STOP_SEQUENCES, MAX_HISTORY_TOOL_CALLS, MAX_CHOICES.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from agent.wire.tools import MAX_CALL_ID_CHARS, MAX_TOOLS, FunctionTool, NamedToolChoice, ToolCall, ToolChoice

from agent.wire.body_options import LogitBias, Metadata, TopLogprobs
from agent.wire.image_parts import ImagePart, part_label
from agent.wire.response_format import ResponseFormat

MAX_TEXT_CHARS = 8 * 1024 * 1024  # the frame limit (protocol.MAX_FRAME_BYTES) binds first anyway
MAX_MESSAGES = 4096
MAX_OUTPUT_TOKENS = 2**24
MAX_STOP_SEQUENCES = 4  # OpenAI's limit
MAX_HISTORY_TOOL_CALLS = 128  # calls one earlier assistant turn may carry
MAX_CHOICES = 128  # `n`: the wire's own bound; the coordinator serves at most its max_choices (default 8)

Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Label = Annotated[str, Field(max_length=256)]
StopText = Annotated[str, Field(min_length=1, max_length=1024)]
MaxTokens = Annotated[int, Field(ge=1, le=MAX_OUTPUT_TOKENS)]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high"]


class Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class TextPart(Body):
    type: Literal["text"]
    text: Text


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]
MAX_IMAGES = 16  # image parts in one body: the wire's own bound (the coordinator's max_images binds first)


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | Annotated[tuple[ContentPart, ...], Field(max_length=MAX_MESSAGES)] | None = None
    name: Label | None = None
    reasoning: Text | None = None  # an earlier assistant turn's reasoning; the chat template decides its fate
    reasoning_content: Text | None = None  # the same, as vLLM and DeepSeek name it
    tool_calls: Annotated[tuple[ToolCall, ...], Field(max_length=MAX_HISTORY_TOOL_CALLS)] | None = None
    tool_call_id: Annotated[str, Field(min_length=1, max_length=MAX_CALL_ID_CHARS)] | None = None  # role tool
    # A client that sends a response message back as history echoes these; only their empty value is accepted.
    refusal: None = None
    function_call: None = None
    audio: None = None

    @model_validator(mode="after")
    def _fits_its_role(self) -> ChatMessage:
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"only an assistant message carries tool_calls, not a {self.role} message")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a tool message needs a tool_call_id, and only a tool message has one")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (it may be null only in an assistant message with tool_calls)")
        if self.images and self.role != "user":
            raise ValueError(f"only a user message may carry image_url parts, not a {self.role} message")
        return self

    @property
    def text(self) -> str:
        """The content as one string (text parts joined; null is empty)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    @property
    def images(self) -> tuple[ImagePart, ...]:
        if self.content is None or isinstance(self.content, str):
            return ()
        return tuple(part for part in self.content if isinstance(part, ImagePart))


MAX_PROMPT_CACHE_KEY_CHARS = 256


class StreamOptions(Body):
    include_usage: bool = False
    include_obfuscation: bool = False  # accepted, neutral: chunks are not padded here


class ChatCompletionBody(Body):
    messages: Annotated[tuple[ChatMessage, ...], Field(min_length=1, max_length=MAX_MESSAGES)]
    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0, le=1_000_000)] | None = None  # 0 = off (mlx-lm)
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    stop: StopText | Annotated[tuple[StopText, ...], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    reasoning_effort: ReasoningEffort | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = None  # the coordinator's max_choices binds first
    response_format: ResponseFormat | None = None
    user: Label | None = None  # accepted, unused: an end-user id for the consumer's own records
    # Output options (agent/wire/body_options.py).
    logprobs: bool | None = None
    top_logprobs: TopLogprobs | None = None
    logit_bias: LogitBias | None = None
    metadata: Metadata | None = None  # the consumer's labels; never forwarded to a provider
    # OpenAI's explicit cache affinity: requests with the same key go to the provider that served it (while it
    # has room; agent/coordinator/routing/prefix_routes.py); never forwarded to a provider
    prompt_cache_key: Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CACHE_KEY_CHARS)] | None = None
    store: bool | None = None  # nothing is stored here: `true` is refused, not silently ignored
    tools: Annotated[tuple[FunctionTool, ...], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # POST /v1/completions (the coordinator's dialects/completions.py): the one user message is the prompt,
    # tokenized as it is, without the chat template; the output is plain text (no channels, no tool calls).
    raw_prompt: bool | None = None

    @field_validator("messages")
    @classmethod
    def _tool_results_answer_earlier_calls(cls, messages: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
        call_ids: set[str] = set()
        for index, message in enumerate(messages):
            call_ids.update(call.id for call in message.tool_calls or ())
            if message.role == "tool" and message.tool_call_id not in call_ids:
                raise ValueError(f"message {index} (role tool) answers tool_call_id {message.tool_call_id!r}, "
                                 "which no earlier assistant message's tool_calls has")
        return messages

    @model_validator(mode="after")
    def _raw_prompt_is_one_plain_prompt(self) -> ChatCompletionBody:
        if not self.raw_prompt:
            return self
        if len(self.messages) != 1 or self.messages[0].role != "user":
            raise ValueError("raw_prompt takes exactly one user message: the prompt")
        if self.tools or self.tool_choice or self.response_format or self.reasoning_effort or self.image_parts:
            raise ValueError("raw_prompt is plain text in and out: no tools, tool_choice, response_format, "
                             "reasoning_effort or images")
        return self

    @field_validator("messages")
    @classmethod
    def _images_are_bounded(cls, messages: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
        num_images = sum(len(message.images) for message in messages)
        if num_images > MAX_IMAGES:
            raise ValueError(f"carry {num_images} image_url parts; at most {MAX_IMAGES} are accepted")
        return messages

    @property
    def image_parts(self) -> list[tuple[str, ImagePart]]:
        """Every image part, in order, with the label an error names it by (`messages[i].content[j]`)."""
        return [(part_label(i, j), part) for i, message in enumerate(self.messages)
                if not isinstance(message.content, (str, type(None)))
                for j, part in enumerate(message.content) if isinstance(part, ImagePart)]

    @field_validator("tools")
    @classmethod
    def _tool_names_are_unique(cls, tools: tuple[FunctionTool, ...] | None) -> tuple[FunctionTool, ...] | None:
        names = [tool.function.name for tool in tools or ()]
        if len(set(names)) != len(names):
            raise ValueError("two tools have the same function name")
        return tools

    @field_validator("tool_choice")
    @classmethod
    def _chooses_an_offered_tool(cls, choice: ToolChoice | None, info: ValidationInfo) -> ToolChoice | None:
        names = {tool.function.name for tool in info.data.get("tools") or ()}
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"names the function {choice.function.name!r}, which is not in tools")
        if choice == "required" and not names:
            raise ValueError("is 'required' but the request offers no tools")
        return choice

    @field_validator("max_completion_tokens")
    @classmethod
    def _agrees_with_max_tokens(cls, value: int | None, info: ValidationInfo) -> int | None:
        other = info.data.get("max_tokens")
        if value is not None and other is not None and value != other:
            raise ValueError(f"disagrees with max_tokens ({other}); send one of the two")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("logprobs must be set to true when top_logprobs is given")
        return value

    @field_validator("store")
    @classmethod
    def _not_stored(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("completions are not stored here; send store: false or leave it out")
        return value

    @property
    def num_top_logprobs(self) -> int | None:
        """Alternatives per token when logprobs were asked for (0: the chosen token's only); None: not asked."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else (self.stop or ())
