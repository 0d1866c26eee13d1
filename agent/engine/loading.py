"""Loading weights on the MLX thread without stopping the other models, and the wired-memory bracket.

A load reads the weights lazily and evaluates them a slice at a time between other models' steps, so
loading one model stalls another's streams by one slice (a few hundred MB from disk), not by the
whole load.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.utils import load_model

LOAD_SLICE_BYTES = 256 * 1024**2  # weights evaluated per turn of the MLX thread's loop


class IncrementalLoad:
    def __init__(self, source: Path) -> None:
        self.model, _ = load_model(Path(source), lazy=True)
        self.arrays = [array for _, array in tree_flatten(self.model.parameters())]
        self.position = 0

    def advance(self) -> bool:
        """Evaluate the next slice of weights; True once all are in memory."""
        end, size = self.position, 0
        while end < len(self.arrays) and size < LOAD_SLICE_BYTES:
            size += self.arrays[end].nbytes
            end += 1
        mx.eval(self.arrays[self.position:end])
        self.position = end
        return end == len(self.arrays)

    @property
    def weights_bytes(self) -> int:
        return sum(array.nbytes for array in self.arrays)


@contextlib.contextmanager
def wired_limit():
    """As mlx-lm's generators: keep the weights wired on Metal while serving, restore the limit after."""
    if not mx.metal.is_available():
        yield
        return
    old = mx.set_wired_limit(mx.device_info()["max_recommended_working_set_size"])
    try:
        yield
    finally:
        mx.synchronize()
        mx.set_wired_limit(old)
