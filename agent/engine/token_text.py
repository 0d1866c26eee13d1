"""Each token's own bytes and text, as OpenAI's logprobs name a token (`token`, `bytes`).

A token is not always whole text: a byte-level BPE token may be half of a UTF-8 character. Its bytes come
from the tokenizer's own token map, which mlx-lm's streaming detokenizer already built (byte-level BPE:
GPT-2's byte alphabet; SentencePiece: `▁` for a space and `<0xNN>` byte tokens). That map is a private
attribute of mlx-lm's TokenizerWrapper, read here only (tests/pinned_versions.py pins the version); a
tokenizer with neither map falls back to decoding the one token. A token whose bytes are not valid UTF-8
is named `bytes:\\xNN...`, as OpenAI names such tokens.

Public names: TokenText.
"""

from __future__ import annotations

from functools import lru_cache

from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer, SPMStreamingDetokenizer, _byte_decoder

from agent.wire.logprobs import MAX_TOKEN_BYTES, MAX_TOKEN_CHARS

_SPM_SPACE = "\u2581".encode()


class TokenText:
    """token id -> (text, bytes) for one tokenizer; cached, so a hot token is looked up once."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._prototype = getattr(tokenizer, "_detokenizer", None)
        self.lookup = lru_cache(maxsize=65536)(self._lookup)

    def _lookup(self, token: int) -> tuple[str, tuple[int, ...]]:
        raw = self._bytes(token)[:MAX_TOKEN_BYTES]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = "bytes:" + "".join(f"\\x{byte:02x}" for byte in raw)
        return text[:MAX_TOKEN_CHARS], tuple(raw)

    def _bytes(self, token: int) -> bytes:
        prototype = self._prototype
        if isinstance(prototype, BPEStreamingDetokenizer) and token < len(prototype.tokenmap):
            decoder = _byte_decoder()
            piece = prototype.tokenmap[token]
            return b"".join(bytes([decoder[c]]) if c in decoder else c.encode() for c in piece)
        if isinstance(prototype, SPMStreamingDetokenizer) and token < len(prototype.tokenmap):
            return prototype.tokenmap[token].replace(_SPM_SPACE, b" ")
        return self._tokenizer.decode([token]).encode()
