"""How many prompt tokens an image becomes on gemma-4: the image processor's rule, on integers.

gemma-4's image processor (mlx-vlm's `Gemma4ImageProcessor`, after HF's) resizes an image, keeping its
aspect ratio, to the largest size whose sides are multiples of `pooling_kernel_size · patch_size` and
that has at most `max_soft_tokens · pooling_kernel_size²` patches; the vision tower then pools each
`pooling_kernel_size²` patches into one soft token. In the prompt an image is its soft tokens between a
begin-of-image and an end-of-image token, so it costs `soft tokens + 2` prompt tokens.

The agent counts with mlx-vlm's own processor; this copy of the rule exists because the coordinator
plans before any agent sees the request and must not import MLX. tests/test_vision_tokens.py holds it
equal to mlx-vlm's function.

Public names: VisionRule, soft_tokens, MARKER_TOKENS_PER_IMAGE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MARKER_TOKENS_PER_IMAGE = 2  # begin-of-image and end-of-image around the soft tokens


@dataclass(frozen=True, slots=True)
class VisionRule:
    max_soft_tokens: int
    patch_size: int
    pooling_kernel_size: int

    @property
    def max_prompt_tokens_per_image(self) -> int:
        return self.max_soft_tokens + MARKER_TOKENS_PER_IMAGE

    def prompt_tokens(self, height: int, width: int) -> int:
        return soft_tokens(height, width, self) + MARKER_TOKENS_PER_IMAGE


def soft_tokens(height: int, width: int, rule: VisionRule) -> int:
    """Soft tokens of an image of this size (ValueError: too thin to resize, as the processor says)."""
    target_height, target_width = _target_size(height, width, rule)
    patches = (target_height // rule.patch_size) * (target_width // rule.patch_size)
    return patches // rule.pooling_kernel_size**2


def _target_size(height: int, width: int, rule: VisionRule) -> tuple[int, int]:
    max_patches = rule.max_soft_tokens * rule.pooling_kernel_size**2
    factor = math.sqrt(max_patches * rule.patch_size**2 / (height * width))
    side = rule.pooling_kernel_size * rule.patch_size
    target_height = int(math.floor(factor * height / side)) * side
    target_width = int(math.floor(factor * width / side)) * side
    if target_height == 0 and target_width == 0:
        raise ValueError("Attempting to resize to a 0 x 0 image.")
    max_side = (max_patches // rule.pooling_kernel_size**2) * side
    if target_height == 0:
        target_height, target_width = side, min(int(math.floor(width / height)) * side, max_side)
    elif target_width == 0:
        target_width, target_height = side, min(int(math.floor(height / width)) * side, max_side)
    return target_height, target_width
