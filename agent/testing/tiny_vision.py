"""A tiny random-weight gemma-4 vision tower and projector, in the release's layout, that mlx-vlm loads.

The gemma-4 release (`mlx-community/gemma-4-26b-a4b-it-4bit`) keeps the vision tower beside the language
model: `vision_tower.*` (patch embedder, encoder layers) and `embed_vision.*` (the projector into the text
width) in the same safetensors, a `vision_config` and the image token ids in config.json, and the image
processor's settings in processor_config.json. mlx-lm's gemma4 loader skips those keys; mlx-vlm's
`models.gemma4` classes read them. Same classes and keys here, at a size that encodes an image in
milliseconds. The tower stays bfloat16 (not quantized), as the releases keep it.

Public names:
  vision_config(**overrides)    -> dict, config.json's `vision_config`
  processor_config()            -> dict, processor_config.json (the image processor's settings)
  image_config_fields(ids)      -> dict, config.json's top-level image fields (token ids, soft tokens)
  build_vision_weights(config, text_hidden_size) -> dict[str, mx.array], `vision_tower.*` and `embed_vision.*`
  write_vision_files(model_dir, config)  adds the vision weights to model.safetensors (and its index) and
                                writes processor_config.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_vlm.models.gemma4.config import VisionConfig
from mlx_vlm.models.gemma4.gemma4 import MultimodalEmbedder
from mlx_vlm.models.gemma4.vision import VisionModel

from agent.testing.tiny_tokenizer import GEMMA_IMAGE_TOKENS

VISION_SEED = 20250806
BOI_TOKEN, IMAGE_TOKEN, EOI_TOKEN = GEMMA_IMAGE_TOKENS
TINY_MAX_SOFT_TOKENS = 70  # per image (the release: 280); 70 is one of gemma-4's supported budgets


def vision_config(**overrides: Any) -> dict[str, Any]:
    # Keys as the release's vision_config; sizes shrink (the release: 1152 wide, 27 layers).
    config = {
        "model_type": "gemma4_vision",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "global_head_dim": 16,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": 1e-06,
        "patch_size": 16,
        "pooling_kernel_size": 3,
        "position_embedding_size": 256,
        "default_output_length": TINY_MAX_SOFT_TOKENS,
        "rope_parameters": {"rope_theta": 100.0, "rope_type": "default"},
        "use_clipped_linears": False,
        "standardize": False,
    }
    return {**config, **overrides}


def processor_config() -> dict[str, Any]:
    image_processor = {
        "image_processor_type": "Gemma4ImageProcessor",
        "do_convert_rgb": True,
        "do_normalize": False,
        "do_rescale": True,
        "do_resize": True,
        "rescale_factor": 1 / 255,
        "patch_size": 16,
        "pooling_kernel_size": 3,
        "max_soft_tokens": TINY_MAX_SOFT_TOKENS,
        "resample": 3,
    }
    return {"processor_class": "Gemma4Processor", "image_seq_length": TINY_MAX_SOFT_TOKENS,
            "image_processor": image_processor}


def image_config_fields(token_ids: dict[str, int]) -> dict[str, Any]:
    return {
        "boi_token_id": token_ids[BOI_TOKEN],
        "image_token_id": token_ids[IMAGE_TOKEN],
        "eoi_token_id": token_ids[EOI_TOKEN],
        "vision_soft_tokens_per_image": TINY_MAX_SOFT_TOKENS,
    }


class _Vision(nn.Module):
    """The two parts under their release names, so tree_flatten gives the release's keys."""

    def __init__(self, config: dict[str, Any], text_hidden_size: int) -> None:
        super().__init__()
        vision = VisionConfig.from_dict(config)
        self.vision_tower = VisionModel(vision)
        self.embed_vision = MultimodalEmbedder(vision.hidden_size, text_hidden_size, eps=vision.rms_norm_eps)


def build_vision_weights(config: dict[str, Any], text_hidden_size: int) -> dict[str, mx.array]:
    mx.random.seed(VISION_SEED)
    module = _Vision(config, text_hidden_size)
    # mlx initialises the position table to ones: random values make positions matter, as in a trained tower.
    table = module.vision_tower.patch_embedder.position_embedding_table
    module.vision_tower.patch_embedder.position_embedding_table = mx.random.normal(table.shape) * 0.02
    module.set_dtype(mx.bfloat16)
    weights = dict(tree_flatten(module.parameters()))
    mx.eval(weights)
    return weights


def write_vision_files(model_dir: Path, config: dict[str, Any]) -> None:
    """One safetensors file with the text and the vision weights, as a single-shard release has."""
    weights_path = model_dir / "model.safetensors"
    weights = dict(mx.load(str(weights_path)))
    weights |= build_vision_weights(config["vision_config"], config["text_config"]["hidden_size"])
    mx.save_safetensors(str(weights_path), weights, metadata={"format": "mlx"})
    index_path = model_dir / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"] = {key: "model.safetensors" for key in sorted(weights)}
    index.setdefault("metadata", {})["total_size"] = sum(array.nbytes for array in weights.values())
    index_path.write_text(json.dumps(index, indent=4) + "\n")
    (model_dir / "processor_config.json").write_text(json.dumps(processor_config(), indent=2) + "\n")
