"""The fake engine's prompts as its simulated prefix cache sees them: token ids made from the message chain.

The fake tokenizes nothing, so its prompt's ids stand for messages: the chain of the request's messages
(agent/wire/prefix_chain.py `message_chain`, the canonical form the coordinator keys routes by) gives each
message a key, and each of that message's estimated tokens is an id drawn from its key and its place. Two
prompts then share exactly the ids of the messages they share from the start, so the engine's own prefix
index (agent/engine/prefix_index.py) matches them as it matches a real tokenizer's ids: a turn that extends
the previous turn's history reuses all of that prompt's tokens, and a changed message ends the match.

    fake_prompt(request)   (number of tokens, token ids, the whole prompt's chain key)

Token estimate: 3 for the template's frame, then 4 + characters ÷ 4 per message (as the fake always counted).
Requests with images are not cached (as the real engine's), nor prompts past the model's context: their ids
are empty.

Pure: standard library and the wire's chain.
"""

from __future__ import annotations

from agent.engine.types import GenerationRequest
from agent.wire.prefix_chain import message_chain

FRAME_TOKENS = 3  # what the template renders around the messages
ID_BITS = 20  # the token's place within its message, below the key's bits


def message_tokens(message: dict) -> int:
    return 4 + len(_text(message["content"])) // 4


def fake_prompt(request: GenerationRequest, max_cached_tokens: int | None = None) -> tuple[int, tuple[int, ...], str | None]:
    """`max_cached_tokens`: a longer prompt gets no ids (the model's context: admission refuses it anyway, and
    its ids would be as large as the client made it)."""
    head = {"tools": list(request.tools), "reasoning_effort": request.reasoning_effort,
            "raw_prompt": request.raw_prompt}
    messages = [dict(message) for message in request.messages]
    chain = message_chain(head, messages)
    counts = [message_tokens(message) for message in messages]
    num_tokens = FRAME_TOKENS + sum(counts)
    if request.images or (max_cached_tokens is not None and num_tokens > max_cached_tokens):
        return num_tokens, (), chain[-1] if chain else None
    frame = _key_id(message_chain(head, [None])[0])  # depends on the head alone: tools, effort, raw
    ids = [frame + place for place in range(FRAME_TOKENS)]
    for key, count in zip(chain, counts):
        base = _key_id(key)
        ids.extend(base + place for place in range(count))
    return num_tokens, tuple(ids), chain[-1] if chain else None


def _key_id(key: str) -> int:
    return int(key[:10], 16) << ID_BITS


def _text(content: str | list) -> str:
    """A message's text; a message with images carries its content as parts."""
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)
