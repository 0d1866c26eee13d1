"""POST /v1/messages' body (Anthropic's Messages API), checked and translated onto a chat-completions body.

    system (text or text blocks)       a system message, first
    user content: text, image blocks   a user message (images as image_url parts, data: URLs for base64)
    user content: tool_result blocks   tool messages answering the tool_use ids before them (is_error: the
                                       text starts "Error: ")
    assistant content: thinking, text, tool_use   reasoning, content, tool_calls (input as JSON text)
    tools [{name, description, input_schema}]      → function tools
    tool_choice auto | any | tool {name} | none    → auto | required | a named function | none;
                                       disable_parallel_tool_use → parallel_tool_calls false
    thinking {type: enabled, budget_tokens}        → reasoning_effort low (< 4096), medium (< 16384), high;
                                       disabled → none (gpt-oss reasons anyway, at its lowest effort)
                                       adaptive → medium; between_tools → the model's own default
    output_config {effort, format}     effort → reasoning_effort (xhigh, max → high); format (json_schema)
                                       → response_format, enforced by the agent's grammar
    stop_sequences → stop;  max_tokens (required), temperature, top_p, top_k as they are;  metadata.user_id → user

`cache_control` (on blocks and at the top) and `context_management` (server-side clearing of old tool
results, which Claude Code sends) are accepted and have no effect: no prompt cache is kept and no context is
edited here, so the model sees the whole conversation it was sent. `thinking.display` "omitted" is refused
(the reasoning is returned as it is). Documents, server tools, MCP servers and containers are refused by name.

Public names: MessagesBody, to_chat, effort_for.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field

from agent.coordinator.dialects.strict_body import Body
from agent.coordinator.errors import BadRequest
from agent.wire.chat_body import MAX_MESSAGES, MAX_OUTPUT_TOKENS

Text = Annotated[str, Field(max_length=8 * 1024 * 1024)]
CacheControl = dict[str, Any] | None  # accepted, no effect
LOW_EFFORT_BELOW, MEDIUM_EFFORT_BELOW = 4096, 16384  # thinking.budget_tokens → reasoning_effort


class TextBlock(Body):
    type: Literal["text"]
    text: Text
    cache_control: CacheControl = None
    citations: None = None


class Base64Source(Body):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: Text


class UrlSource(Body):
    type: Literal["url"]
    url: Text


class ImageBlock(Body):
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]
    cache_control: CacheControl = None


class ToolUseBlock(Body):
    type: Literal["tool_use"]
    id: Annotated[str, Field(min_length=1, max_length=256)]
    name: Annotated[str, Field(max_length=64)]
    input: dict[str, Any]
    cache_control: CacheControl = None


class ToolResultBlock(Body):
    type: Literal["tool_result"]
    tool_use_id: Annotated[str, Field(min_length=1, max_length=256)]
    content: Text | tuple[TextBlock, ...] | None = None
    is_error: bool | None = None
    cache_control: CacheControl = None


class ThinkingBlock(Body):
    type: Literal["thinking"]
    thinking: Text
    signature: Text | None = None  # echoed back; not checked (no signature is made here)


class RedactedThinkingBlock(Body):
    type: Literal["redacted_thinking"]
    data: Text


Block = Annotated[TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
                  Field(discriminator="type")]


class Message(Body):
    role: Literal["user", "assistant"]
    content: Text | Annotated[tuple[Block, ...], Field(max_length=MAX_MESSAGES)]


class Tool(Body):
    name: str
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: CacheControl = None


class ToolChoice(Body):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(Body):
    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: Annotated[int, Field(ge=1)] | None = None
    display: Literal["summarized"] | None = None  # "omitted" is refused: the reasoning is returned as it is


class OutputFormat(Body):
    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")


class OutputConfig(Body):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: OutputFormat | None = None


class Metadata(Body):
    user_id: Annotated[str, Field(max_length=256)] | None = None


class MessagesBody(Body):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Annotated[tuple[Message, ...], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: Annotated[int, Field(ge=1, le=MAX_OUTPUT_TOKENS)] | None = None  # required, but not to count tokens
    system: Text | tuple[TextBlock, ...] | None = None
    stop_sequences: tuple[Annotated[str, Field(min_length=1, max_length=1024)], ...] | None = None
    stream: bool = False
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    tools: tuple[Tool, ...] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    metadata: Metadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    output_config: OutputConfig | None = None
    cache_control: CacheControl = None  # accepted, no effect
    context_management: dict[str, Any] | None = None  # accepted, no effect (see the module's docstring)


def to_chat(body: MessagesBody, *, is_counting: bool = False) -> dict[str, Any]:
    """The chat-completions body that asks the same thing (`is_counting`: for count_tokens, no max_tokens)."""
    if body.max_tokens is None and not is_counting:
        raise BadRequest("max_tokens: Field required", param="max_tokens", code="missing_required_parameter")
    chat: dict[str, Any] = {"model": body.model, "messages": _system(body) + _messages(body.messages),
                            "stream": body.stream}
    optional = {"max_tokens": body.max_tokens, "temperature": body.temperature, "top_p": body.top_p,
                "top_k": body.top_k, "stop": list(body.stop_sequences) if body.stop_sequences else None,
                "reasoning_effort": _effort(body),
                "response_format": _response_format(body.output_config),
                "user": body.metadata.user_id if body.metadata else None}
    chat.update({name: value for name, value in optional.items() if value is not None})
    if body.stream:
        chat["stream_options"] = {"include_usage": True}
    if body.tools:
        chat["tools"] = [{"type": "function", "function": {"name": tool.name, "parameters": tool.input_schema,
                                                           **({"description": tool.description}
                                                              if tool.description else {})}}
                         for tool in body.tools]
    if body.tool_choice is not None:
        chat.update(_tool_choice(body.tool_choice))
    return chat


def effort_for(thinking: Thinking | None) -> str | None:
    if thinking is None or thinking.type == "between_tools":
        return None
    if thinking.type == "disabled":
        return "none"
    budget = thinking.budget_tokens
    if budget is None:
        return "medium"
    return "low" if budget < LOW_EFFORT_BELOW else "medium" if budget < MEDIUM_EFFORT_BELOW else "high"


def _effort(body: MessagesBody) -> str | None:
    """output_config.effort when given (the newer API's knob), else what `thinking` says."""
    effort = body.output_config.effort if body.output_config else None
    if effort is not None:
        return "high" if effort in ("xhigh", "max") else effort
    return effort_for(body.thinking)


def _response_format(config: OutputConfig | None) -> dict[str, Any] | None:
    if config is None or config.format is None:
        return None
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": config.format.json_schema}}


def _tool_choice(choice: ToolChoice) -> dict[str, Any]:
    if choice.type == "tool":
        if not choice.name:
            raise BadRequest("tool_choice.name: required when tool_choice.type is 'tool'", param="tool_choice.name",
                             code="invalid_value")
        out: dict[str, Any] = {"tool_choice": {"type": "function", "function": {"name": choice.name}}}
    else:
        out = {"tool_choice": {"auto": "auto", "any": "required", "none": "none"}[choice.type]}
    if choice.disable_parallel_tool_use:
        out["parallel_tool_calls"] = False
    return out


def _system(body: MessagesBody) -> list[dict[str, Any]]:
    if not body.system:
        return []
    text = body.system if isinstance(body.system, str) else "".join(block.text for block in body.system)
    return [{"role": "system", "content": text}]


def _messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
        elif message.role == "assistant":
            out.append(_assistant(message.content))
        else:
            out += _user(message.content)
    return out


def _assistant(blocks: tuple[Any, ...]) -> dict[str, Any]:
    turn: dict[str, Any] = {"role": "assistant", "content": ""}
    reasoning = "".join(block.thinking for block in blocks if isinstance(block, ThinkingBlock))
    text = "".join(block.text for block in blocks if isinstance(block, TextBlock))
    calls = [{"id": block.id, "type": "function",
              "function": {"name": block.name, "arguments": json.dumps(block.input, ensure_ascii=False)}}
             for block in blocks if isinstance(block, ToolUseBlock)]
    if any(isinstance(block, (ImageBlock, ToolResultBlock)) for block in blocks):
        raise BadRequest("an assistant message carries text, thinking and tool_use blocks only",
                         param="messages", code="invalid_value")
    if calls:
        turn["tool_calls"], turn["content"] = calls, text or None
    else:
        turn["content"] = text
    if reasoning:
        turn["reasoning"] = reasoning
    return turn


def _user(blocks: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Tool results first (each a tool message, in order), then the rest of the turn as one user message."""
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, ToolResultBlock):
            out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": _result_text(block)})
        elif isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):  # served as chat completions serves image_url parts
            source = block.source
            url = source.url if isinstance(source, UrlSource) else f"data:{source.media_type};base64,{source.data}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            raise BadRequest(f"a user message cannot carry a {block.type} block", param="messages",
                             code="invalid_value")
    if parts:
        only_text = all(part["type"] == "text" for part in parts)
        out.append({"role": "user", "content": "".join(p["text"] for p in parts) if only_text else parts})
    return out


def _result_text(block: ToolResultBlock) -> str:
    content = block.content
    text = content if isinstance(content, str) else "".join(part.text for part in content or ())
    return f"Error: {text}" if block.is_error else text
