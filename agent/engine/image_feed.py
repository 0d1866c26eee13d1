"""Image embeddings fed into our own batched prefill, so image requests share the continuous batch.

mlx-lm's gemma-4 takes `input_embeddings` in place of token ids. The batch's model is wrapped: inside
`feeding(rows)` (one prefill chunk of one group), each call embeds the chunk's tokens as mlx-lm would and
puts each row's image features at that row's image-token positions, in order; every other call (decode
steps, text-only chunks) passes straight through. A row's features come from the vision tower before
its first chunk (agent/engine/vision.py); its prompt holds one image token per soft token, so positions
and features pair up one to one, and a mismatch fails the group's prefill rather than shifting an image.

Public names: ImageFeed, RowImages.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np


@dataclass(slots=True)
class RowImages:
    """One row's soft-token embeddings ([num soft tokens, width]) and where they sit in its prompt."""

    features: mx.array
    positions: list[int]  # ascending prompt indices of the image tokens

    def chunk(self, start: int, end: int) -> mx.array:
        """The features of the soft tokens at prompt indices [start, end)."""
        first, last = bisect.bisect_left(self.positions, start), bisect.bisect_left(self.positions, end)
        return self.features[first:last]


class ImageFeed:
    """A callable in the model's place: `model(inputs, cache=...)`, with image features while feeding."""

    def __init__(self, model: Any, image_token_id: int) -> None:
        self.model = model
        self.image_token_id = image_token_id
        self._rows: list[mx.array | None] = []

    @contextmanager
    def feeding(self, rows: Sequence[mx.array | None]) -> Iterator[None]:
        """Feed these features (per batch row, in the batch's order; None: no image in this chunk)."""
        self._rows = list(rows) if any(row is not None and row.shape[0] for row in rows) else []
        try:
            yield
        finally:
            self._rows = []

    def __call__(self, inputs: mx.array, cache: Any = None) -> mx.array:
        if not self._rows:
            return self.model(inputs, cache=cache)
        if len(self._rows) != inputs.shape[0]:
            raise RuntimeError(f"{len(self._rows)} rows of image features, {inputs.shape[0]} rows of tokens")
        embeddings = self.model.language_model.model.embed_tokens(inputs)
        is_image = np.asarray(inputs) == self.image_token_id
        for index, features in enumerate(self._rows):
            if features is None:
                continue
            positions = np.flatnonzero(is_image[index])
            if len(positions) > features.shape[0]:
                raise RuntimeError(f"row {index}: {features.shape[0]} soft tokens for {len(positions)} image tokens")
            if len(positions):  # a chunk called in pieces consumes its features in order
                embeddings[index, mx.array(positions)] = features[:len(positions)].astype(embeddings.dtype)
                self._rows[index] = features[len(positions):]
        return self.model(inputs, cache=cache, input_embeddings=embeddings)
