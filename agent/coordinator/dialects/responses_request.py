"""POST /v1/responses' body (OpenAI's Responses API), checked and translated onto a chat-completions body.

    instructions                      a system message, first
    input: "text"                     one user message
    input: [items]                    messages (input_text / output_text / input_image parts); `function_call`
                                      items join the assistant turn before them as its tool_calls;
                                      `function_call_output` a tool message; `reasoning` the next assistant
                                      turn's reasoning
    tools [{type: function, name, parameters, ...}]  → tools [{type: function, function: {...}}]
    tool_choice  auto | none | required | {type: function, name}
    reasoning.effort → reasoning_effort;  text.format (json_schema / json_object / text) → response_format
    max_output_tokens → max_tokens;  temperature, top_p, parallel_tool_calls, metadata, user as they are;
    prompt_cache_key as chat's (routing's affinity key, kept by the coordinator, not forwarded)

Nothing is stored: `store` is accepted (the API's default is true) and answered `store: false`;
`previous_response_id` and `conversation` are refused with a 400 that says to send the whole input.
`include: ["reasoning.encrypted_content"]` (what a stateless client such as Codex asks for) is served with the
reasoning text itself as the opaque `encrypted_content` (nothing here is secret from the client: the text is in
the item's content too), and an echoed reasoning item's `encrypted_content` is read back as its reasoning.
`include: ["message.output_text.logprobs"]` (with `top_logprobs` alternatives) returns the text's logprobs, as
chat completions' `logprobs` does. Tools other than functions, `background`, `prompt` templates and other
`include` entries are refused by name.

Public names: ResponsesBody, to_chat, ENCRYPTED_REASONING, TEXT_LOGPROBS.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator

from agent.coordinator.dialects.strict_body import Body
from agent.coordinator.errors import BadRequest
from agent.wire.chat_body import MAX_MESSAGES, MAX_PROMPT_CACHE_KEY_CHARS, ReasoningEffort

ENCRYPTED_REASONING = "reasoning.encrypted_content"
TEXT_LOGPROBS = "message.output_text.logprobs"
Text = Annotated[str, Field(max_length=8 * 1024 * 1024)]
Id = Annotated[str, Field(max_length=256)]
Status = Literal["in_progress", "completed", "incomplete"] | None


class InputText(Body):
    type: Literal["input_text", "output_text"]
    text: Text
    annotations: list[Any] | None = None  # echoed output_text carries these
    logprobs: list[Any] | None = None


class InputImage(Body):
    type: Literal["input_image"]
    image_url: Text | None = None
    detail: Literal["low", "high", "auto"] | None = None
    file_id: None = None  # no files are kept here


class Refusal(Body):
    type: Literal["refusal"]
    refusal: Text


Part = Annotated[InputText | InputImage | Refusal, Field(discriminator="type")]


class MessageItem(Body):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: Text | Annotated[tuple[Part, ...], Field(max_length=MAX_MESSAGES)]
    id: Id | None = None
    status: Status = None


class FunctionCallItem(Body):
    type: Literal["function_call"]
    call_id: Annotated[str, Field(min_length=1, max_length=256)]
    name: Annotated[str, Field(max_length=64)]
    arguments: Text
    id: Id | None = None
    status: Status = None


class FunctionCallOutputItem(Body):
    type: Literal["function_call_output"]
    call_id: Annotated[str, Field(min_length=1, max_length=256)]
    output: Text | tuple[InputText, ...]
    id: Id | None = None
    status: Status = None


class ReasoningText(Body):
    type: Literal["summary_text", "reasoning_text"]
    text: Text


class ReasoningItem(Body):
    type: Literal["reasoning"]
    summary: tuple[ReasoningText, ...] = ()
    content: tuple[ReasoningText, ...] | None = None
    id: Id | None = None
    status: Status = None
    encrypted_content: Text | None = None  # this coordinator's own: the reasoning text (see the docstring)


Item = Annotated[
    Annotated[MessageItem, Tag("message")] | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")] | Annotated[ReasoningItem, Tag("reasoning")],
    Discriminator(lambda item: item.get("type", "message") if isinstance(item, dict) else getattr(item, "type", None)),
]


class FunctionToolParam(Body):
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(Body):
    type: Literal["function"]
    name: str


class ReasoningParam(Body):
    effort: ReasoningEffort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None  # accepted: the reasoning itself is returned
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class JsonSchemaParam(Body):
    type: Literal["json_schema"]
    name: str
    json_schema: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


class OtherFormat(Body):
    type: Literal["text", "json_object"]


class TextParam(Body):
    format: Annotated[JsonSchemaParam | OtherFormat, Field(discriminator="type")] | None = None
    verbosity: Literal["medium"] | None = None  # only the default: output length is not steered here


class StreamOptionsParam(Body):
    include_obfuscation: bool | None = None  # accepted, neutral: events are not padded here


class ResponsesBody(Body):
    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    input: Text | Annotated[tuple[Item, ...], Field(min_length=1, max_length=MAX_MESSAGES)]
    instructions: Text | None = None
    tools: tuple[FunctionToolParam, ...] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    reasoning: ReasoningParam | None = None
    text: TextParam | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool = False
    stream_options: StreamOptionsParam | None = None
    store: bool | None = None  # accepted; nothing is stored, the response says store: false
    previous_response_id: str | None = None
    conversation: None = None  # no conversations are kept here
    metadata: dict[str, str] | None = None
    user: str | None = None
    include: tuple[Literal["reasoning.encrypted_content", "message.output_text.logprobs"], ...] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None  # alternatives per token, with TEXT_LOGPROBS
    truncation: Literal["disabled"] | None = None
    service_tier: Literal["auto", "default"] | None = None
    # routing's affinity key, as chat's (the coordinator keeps it; it is not forwarded to a provider)
    prompt_cache_key: Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CACHE_KEY_CHARS)] | None = None
    safety_identifier: Annotated[str, Field(max_length=256)] | None = None  # accepted, neutral
    background: Literal[False] | None = None

    @field_validator("tools", mode="before")
    @classmethod
    def _functions_only(cls, tools: Any) -> Any:
        if not isinstance(tools, (list, tuple)):
            return tools  # not a list: the field's own type check refuses it by name
        for index, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                raise ValueError(f"tool {index} is of type {kind!r}; only function tools are served here")
        return tools


def to_chat(body: ResponsesBody) -> dict[str, Any]:
    """The chat-completions body that asks the same thing."""
    if body.previous_response_id is not None:
        raise BadRequest("previous_response_id is not supported: responses are not stored here. Send the whole "
                         "conversation in `input` (earlier output items included)", param="previous_response_id",
                         code="unsupported_parameter")
    chat: dict[str, Any] = {"model": body.model, "messages": _messages(body), "stream": body.stream}
    if body.stream:
        chat["stream_options"] = {"include_usage": True}
    if TEXT_LOGPROBS in (body.include or ()):  # as OpenAI: top_logprobs alone returns none
        chat.update(logprobs=True, top_logprobs=body.top_logprobs or 0)
    optional = {"max_tokens": body.max_output_tokens, "temperature": body.temperature, "top_p": body.top_p,
                "parallel_tool_calls": body.parallel_tool_calls, "metadata": body.metadata, "user": body.user,
                "prompt_cache_key": body.prompt_cache_key,
                "reasoning_effort": body.reasoning.effort if body.reasoning else None,
                "response_format": _response_format(body.text)}
    chat.update({name: value for name, value in optional.items() if value is not None})
    if body.tools:
        chat["tools"] = [{"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)}
                         for tool in body.tools]
    if isinstance(body.tool_choice, NamedFunction):
        chat["tool_choice"] = {"type": "function", "function": {"name": body.tool_choice.name}}
    elif body.tool_choice is not None:
        chat["tool_choice"] = body.tool_choice
    return chat


def _response_format(text: TextParam | None) -> dict[str, Any] | None:
    if text is None or text.format is None:
        return None
    if isinstance(text.format, JsonSchemaParam):
        spec = text.format.model_dump(by_alias=True, exclude={"type"}, exclude_none=True)
        return {"type": "json_schema", "json_schema": spec}
    return {"type": text.format.type}


def _messages(body: ResponsesBody) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.instructions:
        messages.append({"role": "system", "content": body.instructions})
    if isinstance(body.input, str):
        return [*messages, {"role": "user", "content": body.input}]
    reasoning: list[str] = []  # a reasoning item's text waits for the assistant turn it belongs to
    for item in body.input:
        if isinstance(item, ReasoningItem):
            texts = [part.text for part in (*item.summary, *(item.content or ()))]
            reasoning += texts or [item.encrypted_content or ""]
        elif isinstance(item, FunctionCallItem):
            turn = _assistant_turn(messages, reasoning)
            turn.setdefault("tool_calls", []).append(
                {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}})
        elif isinstance(item, FunctionCallOutputItem):
            output = item.output if isinstance(item.output, str) else "".join(part.text for part in item.output)
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
            reasoning.clear()  # reasoning belongs to the assistant turn right after it, or to none
        elif item.role == "assistant":
            turn = _assistant_turn(messages, reasoning)
            turn["content"] = (turn.get("content") or "") + _text(item)
        else:
            messages.append({"role": item.role, "content": _content(item)})
            reasoning.clear()
    return messages


def _assistant_turn(messages: list[dict[str, Any]], reasoning: list[str]) -> dict[str, Any]:
    """The assistant turn being written: the last message when it is one, else a new one."""
    if not messages or messages[-1]["role"] != "assistant":
        messages.append({"role": "assistant", "content": None})
    turn = messages[-1]
    if reasoning:
        turn["reasoning"] = (turn.get("reasoning") or "") + "".join(reasoning)
        reasoning.clear()
    return turn


def _text(item: MessageItem) -> str:
    if isinstance(item.content, str):
        return item.content
    return "".join(part.text if isinstance(part, InputText) else getattr(part, "refusal", "") for part in item.content)


def _content(item: MessageItem) -> str | list[dict[str, Any]]:
    if isinstance(item.content, str):
        return item.content
    parts: list[dict[str, Any]] = []
    for part in item.content:
        if isinstance(part, InputImage):  # served as chat completions serves image_url parts
            parts.append({"type": "image_url", "image_url": {"url": part.image_url or ""}})
        else:
            parts.append({"type": "text", "text": part.text if isinstance(part, InputText) else part.refusal})
    return parts
