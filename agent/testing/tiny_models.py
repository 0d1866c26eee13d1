"""Tiny random-weight models of the two served architectures, complete enough for `mlx_lm.load`.

Nothing can be downloaded in tests, so the engine's real mlx-lm code runs on models the project makes
itself: the same model classes, config keys, quantization recipe and tokenizer files as the releases,
at a size that loads in milliseconds. Weights are deterministic (fixed seed), so generations are too.

Public names:
  TinyVariant                           one model: its family and the config fields that differ from the real one
  VARIANTS                              name -> TinyVariant ("gpt-oss-tiny", "gpt-oss-tiny-wide",
                                        "gemma-4-tiny", "gemma-4-tiny-vision", "gemma-4-tiny-wide")
  make_config(name, **overrides)        -> dict, the unquantized config.json; overrides go to the
                                        architecture fields (gemma's text_config); a new num_hidden_layers
                                        without layer_types repeats the variant's layer pattern
  build_model(name, *, quantize=True, **overrides) -> (model, config)
                                        an in-memory random-weight model, quantized like the release, and
                                        its config (with the "quantization" entry when quantized)
  write_tiny_model(name, out_dir)       -> Path of out_dir/name: config.json, model.safetensors (+ index),
                                        tokenizer files, generation_config.json
  write_all(out_dir, names=None)        -> list[Path]
  can_write(name)                       -> bool, False for a vision variant when mlx-vlm is not installed
  is_up_to_date(model_dir, name)        -> bool, every file a load needs is there and config.json and
                                        tokenizer.json and the chat template are what this code writes now
                                        (for reusing a cache)

Quantization, as the MLX releases do it (`mlx-community/gpt-oss-20b-MXFP4-Q8`,
`mlx-community/gemma-4-26b-a4b-it-4bit`), with mlx-lm's own quantize_model and each model's quant_predicate:
  gpt-oss: experts MXFP4 (group 32); everything else, router included, 8-bit affine (group 64 assumed).
  gemma-4: 4-bit affine (group 64); router.proj 8-bit.
Other weights, activations and the KV cache are bfloat16, as in the releases. Unquantized models
(quantize=False) stay float32: MLX's CPU backend runs the experts' unquantized gather_mm in float32 only.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import io
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.switch_layers import SwitchLinear
from mlx_lm.utils import quantize_model, save_config, save_model

from agent.testing.tiny_tokenizer import (
    GEMMA_IMAGE_TOKENS,
    TOKENIZER_SPECS,
    build_tokenizer,
    eos_token_ids,
    token_id,
    trained_tokenizer_json,
    write_tokenizer_files,
)

SEED = 20250805  # any fixed value: the same weights every time (build_model reseeds MLX's global RNG)

_GPT_OSS_PATTERN = ["sliding_attention", "full_attention"]
_GEMMA_PATTERN = ["sliding_attention"] * 5 + ["full_attention"]
_REQUIRED_FILES = (
    "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"
)


@dataclass(frozen=True, slots=True)
class TinyVariant:
    name: str
    family: str  # "gpt_oss" | "gemma4"
    arch: dict[str, Any] = field(default_factory=dict)  # fields that replace the family's tiny defaults
    has_vision: bool = False  # gemma-4 with its vision tower, projector and image processor (tiny_vision.py)

    @property
    def tokenizer_family(self) -> str:
        return "gemma4_vision" if self.has_vision else self.family


VARIANTS: dict[str, TinyVariant] = {
    variant.name: variant
    for variant in (
        TinyVariant("gpt-oss-tiny", "gpt_oss"),
        # The real attention layout (64 × 64 query heads, 8 KV heads, window 128) for exact-KV checks.
        TinyVariant(
            "gpt-oss-tiny-wide",
            "gpt_oss",
            {"num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64, "sliding_window": 128},
        ),
        TinyVariant("gemma-4-tiny", "gemma4"),
        TinyVariant("gemma-4-tiny-vision", "gemma4", has_vision=True),
        # The real attention layout: 16 query heads; sliding 8 KV × 256, window 1024; full 2 KV × 512.
        TinyVariant(
            "gemma-4-tiny-wide",
            "gemma4",
            {
                "num_hidden_layers": 6,
                "num_attention_heads": 16,
                "num_key_value_heads": 8,
                "head_dim": 256,
                "num_global_key_value_heads": 2,
                "global_head_dim": 512,
                "sliding_window": 1024,
            },
        ),
    )
}


def _layer_types(pattern: list[str], num_layers: int) -> list[str]:
    return [pattern[i % len(pattern)] for i in range(num_layers)]


def _gpt_oss_arch() -> dict[str, Any]:
    # Keys and order follow the real config.json (reference/gpt-oss-20b.config.json); sizes shrink.
    return {
        "attention_bias": True,
        "attention_dropout": 0.0,
        "experts_per_token": 2,
        "num_experts_per_tok": 2,
        "num_local_experts": 4,
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": 64,
        "intermediate_size": 64,
        "initial_context_length": 4096,
        "initializer_range": 0.02,
        "max_position_embeddings": 131072,
        "num_attention_heads": 4,
        "num_hidden_layers": 4,
        "num_key_value_heads": 2,
        "output_router_logits": False,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
            "rope_type": "yarn", "truncate": False,
        },
        "rope_theta": 150000,
        "router_aux_loss_coef": 0.9,
        "sliding_window": 16,
        "swiglu_limit": 7.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }


def _gemma_arch() -> dict[str, Any]:
    # Keys follow the real text_config (reference/gemma-4-26b.config.json); sizes shrink.
    return {
        "model_type": "gemma4_text",
        "hidden_size": 64,
        "intermediate_size": 64,
        "num_hidden_layers": 12,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_global_key_value_heads": 1,
        "global_head_dim": 32,
        "attention_k_eq_v": True,
        "num_kv_shared_layers": 0,
        "hidden_size_per_layer_input": 0,
        "sliding_window": 32,
        "max_position_embeddings": 262144,
        "enable_moe_block": True,
        "num_experts": 4,
        "top_k_experts": 2,
        "moe_intermediate_size": 64,
        "use_double_wide_mlp": False,
        "final_logit_softcapping": 30.0,
        "rms_norm_eps": 1e-06,
        "tie_word_embeddings": True,
        "rope_parameters": {
            "full_attention": {
                "partial_rotary_factor": 0.25, "rope_theta": 1000000.0, "rope_type": "proportional"
            },
            "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"},
        },
        "torch_dtype": "bfloat16",
    }


def _merged_arch(defaults: dict[str, Any], variant: TinyVariant, overrides: dict[str, Any], pattern: list[str]):
    arch = {**defaults, **copy.deepcopy(variant.arch), **copy.deepcopy(overrides)}
    if "layer_types" not in overrides:
        arch["layer_types"] = _layer_types(pattern, arch["num_hidden_layers"])
    arch["num_hidden_layers"] = len(arch["layer_types"])
    return arch


def make_config(name: str, **overrides: Any) -> dict[str, Any]:
    variant = VARIANTS[name]
    family, tokenizer_family = variant.family, variant.tokenizer_family
    vocab_size = build_tokenizer(tokenizer_family).get_vocab_size()
    eos_ids = eos_token_ids(tokenizer_family)
    if family == "gpt_oss":
        arch = _merged_arch(_gpt_oss_arch(), variant, overrides, _GPT_OSS_PATTERN)
        return {
            "architectures": ["GptOssForCausalLM"],
            "model_type": "gpt_oss",
            **arch,
            "eos_token_id": eos_ids[0],
            "pad_token_id": token_id(family, TOKENIZER_SPECS[family].pad_token),
            "vocab_size": vocab_size,
        }
    text_config = _merged_arch(_gemma_arch(), variant, overrides, _GEMMA_PATTERN)
    text_config["vocab_size"] = vocab_size
    config = {
        "architectures": ["Gemma4ForConditionalGeneration"],
        "model_type": "gemma4",
        "eos_token_id": eos_ids,
        # mlx-lm's gemma4 wrapper copies its own vocab_size (default 262,144) over text_config's.
        "vocab_size": vocab_size,
        "text_config": text_config,
    }
    if variant.has_vision:
        from agent.testing.tiny_vision import image_config_fields, vision_config

        ids = {token: token_id(tokenizer_family, token) for token in GEMMA_IMAGE_TOKENS}
        config |= {"vision_config": vision_config(), **image_config_fields(ids)}
    return config


def _gpt_oss_quant_predicate(model: nn.Module):
    own = model.quant_predicate  # router 8-bit

    def predicate(path: str, module: nn.Module):
        if ".mlp.experts." in path:
            return {"group_size": 32, "bits": 4, "mode": "mxfp4"}
        return own(path, module)

    return predicate


def _quantize(model: nn.Module, config: dict[str, Any]) -> dict[str, Any]:
    if config["model_type"] == "gpt_oss":
        settings = {"group_size": 64, "bits": 8, "quant_predicate": _gpt_oss_quant_predicate(model)}
    else:
        settings = {"group_size": 64, "bits": 4, "quant_predicate": model.quant_predicate}
    with contextlib.redirect_stdout(io.StringIO()):  # quantize_model prints bits-per-weight
        _, quantized_config = quantize_model(model, config, mode="affine", **settings)
    _check_experts_quantized(model)
    return quantized_config


def _check_experts_quantized(model: nn.Module) -> None:
    # quantize_model silently skips a layer whose input width is not a multiple of the group size, and a
    # bf16 expert layer then fails at the first token on CPU (gather_mm is float32-only there).
    skipped = [path for path, module in model.named_modules() if isinstance(module, SwitchLinear)]
    if skipped:
        raise ValueError(f"experts left unquantized (widths must be multiples of 64): {skipped[:3]}")


def build_model(name: str, *, quantize: bool = True, **overrides: Any) -> tuple[nn.Module, dict[str, Any]]:
    config = make_config(name, **overrides)
    arch = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    mx.random.seed(SEED)
    model = arch.Model(arch.ModelArgs.from_dict(config))
    if quantize:
        model.set_dtype(mx.bfloat16)
        config = _quantize(model, config)
    mx.eval(model.parameters())
    model.eval()
    return model, config


def _generation_config(family: str) -> dict[str, Any]:
    spec = TOKENIZER_SPECS[family]
    config = {"eos_token_id": eos_token_ids(family), "pad_token_id": token_id(family, spec.pad_token)}
    if spec.bos_token is not None:
        config["bos_token_id"] = token_id(family, spec.bos_token)
    return config


def _write_files(name: str, model_dir: Path) -> None:
    model, config = build_model(name)
    save_model(model_dir, model)  # model.safetensors and model.safetensors.index.json
    variant = VARIANTS[name]
    save_config(config, model_dir / "config.json", keep_vision_config=variant.has_vision)
    if variant.has_vision:
        from agent.testing.tiny_vision import write_vision_files

        write_vision_files(model_dir, config)
    family = variant.tokenizer_family
    write_tokenizer_files(family, model_dir)
    (model_dir / "generation_config.json").write_text(json.dumps(_generation_config(family), indent=2) + "\n")


def write_tiny_model(name: str, out_dir: Path | str) -> Path:
    """Write out_dir/name. The directory appears whole or not at all (a staging directory is renamed), so a
    crashed run or a concurrent test session never leaves a half-written model behind."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_dir = out_dir / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out_dir))
    staging.chmod(0o755)  # mkdtemp makes it private; a shared cache directory must stay readable
    try:
        _write_files(name, staging)
        if model_dir.exists():
            shutil.rmtree(model_dir)
        staging.rename(model_dir)
    except OSError:
        if not is_up_to_date(model_dir, name):  # else another process won the race with the same bytes
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir


def can_write(name: str) -> bool:
    """A vision variant needs mlx-vlm (scripts/setup.sh installs it); the others need only mlx-lm."""
    return not VARIANTS[name].has_vision or importlib.util.find_spec("mlx_vlm") is not None


def write_all(out_dir: Path | str, names: list[str] | None = None) -> list[Path]:
    return [write_tiny_model(name, out_dir) for name in (list(VARIANTS) if names is None else names)]


def is_up_to_date(model_dir: Path | str, name: str) -> bool:
    model_dir = Path(model_dir)
    if not all((model_dir / file).is_file() for file in _REQUIRED_FILES):
        return False
    written_config = json.loads((model_dir / "config.json").read_text())
    written_tokenizer = (model_dir / "tokenizer.json").read_text(encoding="utf-8")
    family = VARIANTS[name].tokenizer_family
    if VARIANTS[name].has_vision and not (model_dir / "processor_config.json").is_file():
        return False
    written_template = json.loads((model_dir / "tokenizer_config.json").read_text()).get("chat_template")
    return (written_config == build_model(name)[1] and written_tokenizer == trained_tokenizer_json(family)
            and written_template == TOKENIZER_SPECS[family].chat_template)
