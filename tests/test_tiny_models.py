"""The tiny models are complete models: real mlx-lm loads them, generates from them and caches their KV
with the layout their config.json describes, quantized the way the real releases are."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx_lm
import pytest
from mlx_lm.generate import batch_generate
from mlx_lm.models.cache import KVCache, RotatingKVCache, make_prompt_cache
from mlx_lm.models.switch_layers import SwitchLinear

from agent.testing.tiny_models import VARIANTS, build_model, make_config, write_tiny_model

ALL = list(VARIANTS)
NARROW = ["gpt-oss-tiny", "gemma-4-tiny"]
HI = [{"role": "user", "content": "hi"}]
REPO = Path(__file__).resolve().parents[1]


def _load(tiny_models_dir: Path, name: str):
    return mlx_lm.load(str(tiny_models_dir / name))


def _short_prompt(tokenizer, name: str) -> list[int]:
    # The wide variants run at the real attention widths, slowly on this CPU: a few tokens are enough there.
    if name.endswith("-wide"):
        return tokenizer.encode("Hello world, how are you", add_special_tokens=False)[:4]
    return tokenizer.apply_chat_template(HI, add_generation_prompt=True)


def _generate(model, tokenizer, prompt, max_tokens: int, prompt_cache=None) -> list[int]:
    responses = mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=max_tokens, prompt_cache=prompt_cache)
    return [response.token for response in responses]


def _text_config(config: dict) -> dict:
    return config.get("text_config", config)


def _expected_kv_layout(config: dict) -> list[tuple[type, int, int]]:
    """(cache class, KV heads, head dim) per layer, read from config.json the way the catalog should."""
    text = _text_config(config)
    layout = []
    for layer_type in text["layer_types"]:
        heads, dim = text["num_key_value_heads"], text["head_dim"]
        if layer_type == "full_attention" and text.get("attention_k_eq_v"):
            heads, dim = text["num_global_key_value_heads"], text["global_head_dim"]
        cache_class = KVCache if layer_type == "full_attention" else RotatingKVCache
        layout.append((cache_class, heads, dim))
    return layout


@pytest.mark.parametrize("name", ALL)
def test_every_tiny_model_loads_and_generates_with_mlx_lm(tiny_models_dir: Path, name: str) -> None:
    model, tokenizer = _load(tiny_models_dir, name)
    tokens = _generate(model, tokenizer, _short_prompt(tokenizer, name), max_tokens=4)
    assert 1 <= len(tokens) <= 4
    assert all(0 <= token < len(tokenizer.get_vocab()) for token in tokens)


@pytest.mark.parametrize("name", ALL)
def test_kv_cache_is_bfloat16_with_the_layout_the_config_describes(tiny_models_dir: Path, name: str) -> None:
    model, tokenizer = _load(tiny_models_dir, name)
    config = json.loads((tiny_models_dir / name / "config.json").read_text())
    cache = make_prompt_cache(model)
    _generate(model, tokenizer, _short_prompt(tokenizer, name), max_tokens=2, prompt_cache=cache)

    layout = _expected_kv_layout(config)
    assert len(cache) == len(layout)
    for layer_cache, (cache_class, heads, dim) in zip(cache, layout):
        assert type(layer_cache) is cache_class
        if cache_class is RotatingKVCache:
            assert layer_cache.max_size == _text_config(config)["sliding_window"]
        for array in (layer_cache.keys, layer_cache.values):
            assert array.dtype == mx.bfloat16
            assert (array.shape[1], array.shape[3]) == (heads, dim)


def test_wide_variants_have_the_real_attention_layout() -> None:
    gpt_oss = make_config("gpt-oss-tiny-wide")
    assert (gpt_oss["num_attention_heads"], gpt_oss["num_key_value_heads"], gpt_oss["head_dim"]) == (64, 8, 64)
    assert gpt_oss["sliding_window"] == 128
    assert gpt_oss["layer_types"][:2] == ["sliding_attention", "full_attention"]
    gemma = make_config("gemma-4-tiny-wide")["text_config"]
    assert (gemma["num_attention_heads"], gemma["num_key_value_heads"], gemma["head_dim"]) == (16, 8, 256)
    assert (gemma["num_global_key_value_heads"], gemma["global_head_dim"]) == (2, 512)
    assert gemma["sliding_window"] == 1024 and gemma["attention_k_eq_v"] is True
    assert gemma["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]


@pytest.mark.parametrize("name", ALL)
def test_tiny_models_ship_an_eos_token_and_chat_template(tiny_models_dir: Path, name: str) -> None:
    model_dir = tiny_models_dir / name
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    generation_config = json.loads((model_dir / "generation_config.json").read_text())
    assert tokenizer_config["chat_template"] and tokenizer_config["eos_token"]

    _, tokenizer = _load(tiny_models_dir, name)
    assert tokenizer.eos_token_ids == set(generation_config["eos_token_id"])
    stop_tokens = ("<|return|>", "<|call|>") if name.startswith("gpt-oss") else ("<eos>", "<turn|>")
    assert {tokenizer.convert_tokens_to_ids(token) for token in stop_tokens} <= tokenizer.eos_token_ids
    prompt = tokenizer.apply_chat_template(HI, add_generation_prompt=True)
    assert isinstance(prompt, list) and all(isinstance(token, int) for token in prompt)


def test_harmony_template_renders_reasoning_effort_and_channels(tiny_models_dir: Path) -> None:
    _, tokenizer = _load(tiny_models_dir, "gpt-oss-tiny")

    def render(messages: list[dict], **template_vars) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, **template_vars)

    assert "Reasoning: medium" in render(HI, add_generation_prompt=True)
    system = {"role": "system", "content": "Be brief."}
    prompt = render([system, *HI], add_generation_prompt=True, reasoning_effort="high")
    assert "Reasoning: high" in prompt
    assert "<|start|>developer<|message|># Instructions\n\nBe brief." in prompt
    assert prompt.endswith("<|start|>user<|message|>hi<|end|><|start|>assistant")

    answered = [*HI, {"role": "assistant", "content": "Hello.", "thinking": "Greet back."}]
    done = render(answered, add_generation_prompt=False)
    assert done.endswith(
        "<|start|>assistant<|channel|>analysis<|message|>Greet back.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Hello.<|return|>"
    )
    follow_up = render([*answered, {"role": "user", "content": "ok"}], add_generation_prompt=True)
    assert "Greet back." not in follow_up and "final<|message|>Hello.<|end|>" in follow_up


def test_gemma_template_switches_thinking_and_mlx_lm_detects_the_thought_channel(tiny_models_dir: Path) -> None:
    _, tokenizer = _load(tiny_models_dir, "gemma-4-tiny")
    assert tokenizer.has_thinking and tokenizer.think_start == "<|channel>thought"
    assert tokenizer.think_end == "<channel|>"

    thinking = tokenizer.apply_chat_template(HI, add_generation_prompt=True, tokenize=False)  # mlx-lm's default
    assert thinking == "<bos><|turn>system\n<|think|><turn|>\n<|turn>user\nhi<turn|>\n<|turn>model\n"
    direct = tokenizer.apply_chat_template(HI, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    assert direct == "<bos><|turn>user\nhi<turn|>\n<|turn>model\n<|channel>thought\n<channel|>"
    ids = tokenizer.apply_chat_template(HI, add_generation_prompt=True)
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id


def _quantization_of(model: nn.Module) -> dict[str, tuple[str, int, int]]:
    layers = {}
    for path, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding, SwitchLinear)):
            layers[path] = ("unquantized", 16, 0)
        elif hasattr(module, "bits"):
            layers[path] = (module.mode, module.bits, module.group_size)
    return layers


def test_gpt_oss_is_quantized_like_the_mxfp4_q8_release(tiny_models_dir: Path) -> None:
    model, _ = _load(tiny_models_dir, "gpt-oss-tiny")
    for path, quantization in _quantization_of(model).items():
        is_expert = ".mlp.experts." in path
        assert quantization == (("mxfp4", 4, 32) if is_expert else ("affine", 8, 64)), path


def test_gemma_is_quantized_like_the_4bit_release(tiny_models_dir: Path) -> None:
    model, _ = _load(tiny_models_dir, "gemma-4-tiny")
    for path, quantization in _quantization_of(model).items():
        assert quantization == (("affine", 8, 64) if path.endswith("router.proj") else ("affine", 4, 64)), path


def test_generation_is_deterministic_across_runs(tiny_models_dir: Path, tmp_path: Path) -> None:
    first = write_tiny_model("gpt-oss-tiny", tmp_path / "a")
    second = write_tiny_model("gpt-oss-tiny", tmp_path / "b")
    session_copy = tiny_models_dir / "gpt-oss-tiny"
    for file in sorted(path.name for path in first.iterdir()):
        written = {(model_dir / file).read_bytes() for model_dir in (first, second, session_copy)}
        assert len(written) == 1, f"{file} differs between runs"

    runs = []
    for model_dir in (first, second):
        model, tokenizer = mlx_lm.load(str(model_dir))
        runs.append(_generate(model, tokenizer, tokenizer.apply_chat_template(HI, add_generation_prompt=True), 12))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", NARROW)
def test_generation_stops_at_an_eos_token_from_generation_config(tiny_models_dir: Path, name: str) -> None:
    # Random weights still predict a stop token after some one-token prompts. Find one with a single
    # batched forward pass rather than pinning token ids that could shift with MLX's kernels (Metal vs CPU).
    model, tokenizer = _load(tiny_models_dir, name)
    eos_ids = set(json.loads((tiny_models_dir / name / "generation_config.json").read_text())["eos_token_id"])
    every_token = mx.arange(len(tokenizer.get_vocab()))[:, None]
    greedy_next = model(every_token)[:, -1].argmax(axis=-1).tolist()
    stopping = [first for first, following in enumerate(greedy_next) if following in eos_ids]
    assert stopping, "no one-token prompt leads to a stop token"

    responses = list(mlx_lm.stream_generate(model, tokenizer, stopping[:1], max_tokens=8))
    assert len(responses) == 1 and responses[0].finish_reason == "stop" and responses[0].token in eos_ids


@pytest.mark.parametrize("name", NARROW)
def test_batch_generation_runs_on_the_narrow_models(tiny_models_dir: Path, name: str) -> None:
    model, tokenizer = _load(tiny_models_dir, name)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
               for text in ("hi", "What is the capital of France? Answer in one sentence.")]
    result = batch_generate(model, tokenizer, prompts, max_tokens=4)
    assert len(result.texts) == 2


def test_build_model_makes_other_kv_layouts_in_memory() -> None:
    model, config = build_model("gpt-oss-tiny", sliding_window=8, num_hidden_layers=6)
    assert config["layer_types"] == ["sliding_attention", "full_attention"] * 3
    cache = model.make_cache()
    assert [type(c) for c in cache] == [RotatingKVCache, KVCache] * 3
    assert all(c.max_size == 8 for c in cache[::2])
    logits = model(mx.array([[1, 2, 3]]), cache=cache)
    assert logits.shape == (1, 3, config["vocab_size"])

    gemma, gemma_config = build_model("gemma-4-tiny", num_global_key_value_heads=2, global_head_dim=64)
    cache = gemma.make_cache()
    gemma(mx.array([[1, 2, 3]]), cache=cache)
    assert cache[5].keys.shape[1] == 2 and cache[5].keys.shape[3] == 64
    assert cache[5].keys.dtype == mx.bfloat16 and "quantization" in gemma_config


def test_make_tiny_models_script_writes_only_the_named_models(tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("make_tiny_models", REPO / "scripts" / "make_tiny_models.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    assert script.main(["--out", str(tmp_path), "--only", "gpt-oss-tiny"]) == 0
    assert [path.name for path in tmp_path.iterdir()] == ["gpt-oss-tiny"]
    assert "gpt-oss-tiny: wrote" in capsys.readouterr().out
