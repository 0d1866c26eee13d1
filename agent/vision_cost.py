"""What loading gemma-4's vision costs, from the model's files: the processor's rule and the activation
reserve for encoding the largest image it allows.

The tower's weights are exact (safetensors headers, agent/safetensors_info.py). Its activations are not in
any file, so they are sized here from the vision config, for the largest image (`max_soft_tokens ·
pooling_kernel_size²` patches, L): mlx-vlm's tower holds, at its peak, one layer's attention scores
(heads · L², float32), the one-hot position lookup of the patch embedder (L · 2 · position table size)
and the pooler's (L · max_soft_tokens), and a few L-long hidden, MLP and q/k/v rows. Counted in float32
with 25 % on top, the reserve stays above what mlx-vlm's encoder was measured to peak at
(`tests/test_vision_cost.py` measures the tiny tower and a wider one on every run).

Public names: read_vision_rule, read_image_processor, has_feedable_vision, vision_reserve_bytes, PROCESSOR_CONFIGS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.vision_tokens import VisionRule

_FLOAT32 = 4
_MARGIN_NUMERATOR, _MARGIN_DENOMINATOR = 5, 4  # 25 % over the sum, for the copies a step makes


PROCESSOR_CONFIGS = ("processor_config.json", "preprocessor_config.json")  # in mlx-vlm's order of preference


def read_image_processor(model_dir: Path) -> dict[str, Any] | None:
    """The image processor's settings (nested under `image_processor`, or a flat preprocessor config)."""
    for name in PROCESSOR_CONFIGS:
        path = Path(model_dir) / name
        if path.is_file():
            processor = json.loads(path.read_text())
            return dict(processor.get("image_processor", processor))
    return None


def has_feedable_vision(config: dict[str, Any]) -> bool:
    """A vision tower whose features our prefill can feed: gemma-4 variants with per-layer inputs (the small
    ones) would need per-layer embeddings for the image positions as well, which mlx-lm derives from token ids."""
    text_config = config.get("text_config") or {}
    return "vision_config" in config and "image_token_id" in config and not text_config.get("hidden_size_per_layer_input")


def read_vision_rule(model_dir: Path, config: dict[str, Any]) -> VisionRule | None:
    """The image processor's rule, or None when the model has no vision tower we serve, or no processor config."""
    ip = read_image_processor(model_dir) if has_feedable_vision(config) else None
    if ip is None:
        return None
    return VisionRule(int(ip.get("max_soft_tokens", 280)), int(ip.get("patch_size", 16)),
                      int(ip.get("pooling_kernel_size", 3)))


def vision_reserve_bytes(vision_config: dict[str, Any], rule: VisionRule) -> int:
    patches = rule.max_soft_tokens * rule.pooling_kernel_size**2
    heads = int(vision_config.get("num_attention_heads", 12))
    head_dim = int(vision_config.get("head_dim", 64))
    hidden = int(vision_config.get("hidden_size", 768))
    intermediate = int(vision_config.get("intermediate_size", 3072))
    table = int(vision_config.get("position_embedding_size", 10240))
    scores = heads * patches**2
    lookups = patches * 2 * table + patches * rule.max_soft_tokens
    rows = patches * (4 * heads * head_dim + 2 * intermediate + 4 * hidden + 3 * rule.patch_size**2)
    return _FLOAT32 * (scores + lookups + rows) * _MARGIN_NUMERATOR // _MARGIN_DENOMINATOR
