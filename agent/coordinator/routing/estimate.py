"""Prompt tokens without a tokenizer: a conservative estimate for holds and routing, a floor for refusals.

The coordinator has no tokenizer for the models its agents serve, so it estimates from the messages:

    estimate = REQUEST_OVERHEAD + Σ_messages (MESSAGE_OVERHEAD + ceil(utf8_bytes / 3))
    floor    =                    Σ_messages ceil(utf8_bytes / 8)

Byte-level BPE vocabularies (o200k for gpt-oss, gemma's 262k) spend about 4 bytes of English per token
and about one token per CJK character (3 bytes); bytes / 3 is therefore above the real count for
almost all text, so holds and KV reservations err on the safe side. The per-message and per-request
overheads cover the chat template (gpt-oss's harmony header alone is ~60 tokens). A request the
estimate says can never fit, but the floor says might, is still sent to an agent: the agent tokenizes,
and its answer is final. Only a request that cannot fit even at the floor is refused here (503).

Public names: PromptEstimate, estimate_prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.wire.chat_body import ChatCompletionBody, ChatMessage

BYTES_PER_TOKEN_ESTIMATE = 3
BYTES_PER_TOKEN_FLOOR = 8
MESSAGE_OVERHEAD_TOKENS = 8  # role markers, separators
REQUEST_OVERHEAD_TOKENS = 96  # template header, system preamble, generation prompt


@dataclass(frozen=True, slots=True)
class PromptEstimate:
    tokens: int  # for holds, reservations and routing: at or above the real count in practice
    floor_tokens: int  # for refusals: at or below it in practice


def estimate_prompt(body: ChatCompletionBody) -> PromptEstimate:
    sizes = [_message_bytes(message) for message in body.messages]
    if body.tools and body.tool_choice != "none":  # the template renders each tool's schema into the prompt
        sizes.append(sum(len(tool.model_dump_json(exclude_none=True)) for tool in body.tools))
    tokens = REQUEST_OVERHEAD_TOKENS + sum(MESSAGE_OVERHEAD_TOKENS + _ceil_div(n, BYTES_PER_TOKEN_ESTIMATE)
                                           for n in sizes)
    floor = max(1, sum(_ceil_div(n, BYTES_PER_TOKEN_FLOOR) for n in sizes))
    return PromptEstimate(tokens=tokens, floor_tokens=min(floor, tokens))


def _message_bytes(message: ChatMessage) -> int:
    size = len(message.text.encode("utf-8", "surrogatepass"))
    size += sum(len(call.model_dump_json()) for call in message.tool_calls or ())
    for extra in (message.name, message.reasoning, message.reasoning_content):
        if extra:
            size += len(extra.encode("utf-8", "surrogatepass"))
    return size


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)
