"""The coordinator's copy of gemma-4's image-processor rule equals mlx-vlm's, and the vision reserve the
gate counts stays above what mlx-vlm's tower really peaks at while encoding the largest image."""

from __future__ import annotations

import random

import pytest

from agent.vision_cost import vision_reserve_bytes
from agent.vision_tokens import MARKER_TOKENS_PER_IMAGE, VisionRule, soft_tokens

pytest.importorskip("mlx_vlm")  # scripts/setup.sh installs it; test_tiny_vision's pin test fails without it

RULES = [VisionRule(280, 16, 3), VisionRule(70, 16, 3), VisionRule(1120, 16, 3)]


def mlx_vlm_soft_tokens(height: int, width: int, rule: VisionRule) -> int | str:
    from mlx_vlm.models.gemma4.processing_gemma4 import get_aspect_ratio_preserving_size

    try:
        h, w = get_aspect_ratio_preserving_size(height, width, rule.patch_size,
                                                rule.max_soft_tokens * rule.pooling_kernel_size**2,
                                                rule.pooling_kernel_size)
    except ValueError:
        return "refused"
    return (h // rule.patch_size) * (w // rule.patch_size) // rule.pooling_kernel_size**2


def ours(height: int, width: int, rule: VisionRule) -> int | str:
    try:
        return soft_tokens(height, width, rule)
    except ValueError:
        return "refused"


@pytest.mark.parametrize("rule", RULES)
def test_the_soft_token_rule_equals_mlx_vlms_for_every_shape_tried(rule):
    rng = random.Random(13)
    shapes = [(1, 1), (1, 5000), (5000, 1), (48, 48), (47, 49), (4096, 4096), (224, 224), (3, 2000)]
    shapes += [(rng.randint(1, 6000), rng.randint(1, 6000)) for _ in range(3000)]
    assert [ours(h, w, rule) for h, w in shapes] == [mlx_vlm_soft_tokens(h, w, rule) for h, w in shapes]
    assert max(soft_tokens(h, w, rule) for h, w in shapes if ours(h, w, rule) != "refused") <= rule.max_soft_tokens
    assert rule.prompt_tokens(480, 640) == soft_tokens(480, 640, rule) + MARKER_TOKENS_PER_IMAGE


def measured_encode_peak(config: dict, rule: VisionRule, text_width: int) -> int:
    import mlx.core as mx
    import numpy as np
    from mlx_vlm.models.gemma4.config import VisionConfig
    from mlx_vlm.models.gemma4.gemma4 import MultimodalEmbedder
    from mlx_vlm.models.gemma4.vision import VisionModel

    tower, projector = VisionModel(VisionConfig.from_dict(config)), MultimodalEmbedder(config["hidden_size"], text_width)
    tower.set_dtype(mx.bfloat16)
    projector.set_dtype(mx.bfloat16)
    mx.eval(tower.parameters(), projector.parameters())
    side = rule.pooling_kernel_size * rule.patch_size
    rows = int(rule.max_soft_tokens**0.5)
    pixels = mx.array(np.random.default_rng(0).random((1, 3, side * rows, side * (rule.max_soft_tokens // rows)),
                                                       dtype=np.float32))
    mx.eval(pixels)
    mx.synchronize()
    before = mx.get_active_memory()
    mx.reset_peak_memory()
    mx.eval(projector(tower(pixels)))
    return mx.get_peak_memory() - before


@pytest.mark.parametrize("overrides, rule, text_width", [
    ({}, VisionRule(70, 16, 3), 64),  # the tiny tower
    ({"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4, "num_key_value_heads": 4,
      "head_dim": 32, "global_head_dim": 32, "position_embedding_size": 1024, "default_output_length": 140},
     VisionRule(140, 16, 3), 256),
])
def test_the_vision_reserve_covers_the_measured_peak_of_encoding_the_largest_image(overrides, rule, text_width):
    from agent.testing.tiny_vision import vision_config

    config = vision_config(**overrides)
    peak = measured_encode_peak(config, rule, text_width)
    assert 0 < peak <= vision_reserve_bytes(config, rule)
