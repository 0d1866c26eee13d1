"""Prompt tokens without a tokenizer: an upper bound for money, a conservative estimate for routing, a floor
for refusals.

The coordinator has no tokenizer for the models its agents serve, so it reckons from the messages:

    max      = REQUEST_OVERHEAD_BOUND + Σ_messages (MESSAGE_OVERHEAD_BOUND + utf8_bytes)
    estimate = REQUEST_OVERHEAD       + Σ_messages (MESSAGE_OVERHEAD       + ceil(utf8_bytes / 3))
    floor    =                          Σ_messages ceil(utf8_bytes / 8)

`max` is a true upper bound, and what a prompt is held and charged at most (billing, usage.py): a
byte-level BPE (o200k for gpt-oss, the tiny test tokenizers) never makes more tokens than the UTF-8 bytes it
encodes, and a SentencePiece BPE with byte fallback (gemma's) covers at least one character or one byte per
token; a special token is one token for several bytes. So a rendered prompt has at most as many tokens as
its bytes: the content's, plus the template's own text, which the two overheads bound by its bytes (the
gpt-oss system header with its date line is under 220, a developer message's frame 30, an assistant turn
with its analysis channel 39). It is loose on purpose (about 4 bytes per token of English): the agent's
count is charged when it is lower, so an honest agent is charged its own count and never clamped.

`estimate` is what routing and KV reservations plan with: byte-level vocabularies spend about 4 bytes of
English per token and about one token per CJK character (3 bytes), so bytes / 3 is above the real count
for almost all text. A request the estimate says can never fit, but the floor says might, is still sent to
an agent: the agent tokenizes, and its answer is final. Only a request that cannot fit even at the floor is
refused here (503).

Public names: PromptEstimate, estimate_prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.wire.chat_body import ChatCompletionBody, ChatMessage

BYTES_PER_TOKEN_ESTIMATE = 3
BYTES_PER_TOKEN_FLOOR = 8
MESSAGE_OVERHEAD_TOKENS = 8  # role markers, separators
REQUEST_OVERHEAD_TOKENS = 96  # template header, system preamble, generation prompt
MESSAGE_OVERHEAD_BOUND_TOKENS = 40  # the bytes of the template's frame around one message, at most
REQUEST_OVERHEAD_BOUND_TOKENS = 256  # the bytes of its system header and generation prompt, at most


@dataclass(frozen=True, slots=True)
class PromptEstimate:
    tokens: int  # for reservations and routing: at or above the real count in practice
    floor_tokens: int  # for refusals: at or below it in practice
    max_tokens: int  # for holds and charges: at or above the real count always


def estimate_prompt(body: ChatCompletionBody, *, image_tokens: int = 0) -> PromptEstimate:
    """`image_tokens`: the images' prompt tokens by the providers' image rule (image_inputs.py), exact for
    the decoded sizes, so they are added to all three."""
    sizes = [_message_bytes(message) for message in body.messages]
    if body.tools and body.tool_choice != "none":  # the template renders each tool's schema into the prompt
        sizes.append(sum(len(tool.model_dump_json(exclude_none=True)) for tool in body.tools))
    tokens = REQUEST_OVERHEAD_TOKENS + sum(MESSAGE_OVERHEAD_TOKENS + _ceil_div(n, BYTES_PER_TOKEN_ESTIMATE)
                                           for n in sizes)
    floor = max(1, sum(_ceil_div(n, BYTES_PER_TOKEN_FLOOR) for n in sizes))
    bound = REQUEST_OVERHEAD_BOUND_TOKENS + sum(MESSAGE_OVERHEAD_BOUND_TOKENS + n for n in sizes)
    tokens, floor, bound = tokens + image_tokens, floor + image_tokens, bound + image_tokens
    return PromptEstimate(tokens=tokens, floor_tokens=min(floor, tokens), max_tokens=max(bound, tokens))


def _message_bytes(message: ChatMessage) -> int:
    size = len(message.text.encode("utf-8", "surrogatepass"))
    size += sum(len(call.model_dump_json()) for call in message.tool_calls or ())
    for extra in (message.name, message.reasoning, message.reasoning_content):
        if extra:
            size += len(extra.encode("utf-8", "surrogatepass"))
    return size


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)
