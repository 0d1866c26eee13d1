"""The proof that kvcost predicts mlx-lm's real KV allocation byte for byte.

Random-weight models with the KV layout of gpt-oss (alternating sliding/full layers) and gemma-4
(5 sliding then 1 full, separate global KV heads and head dim, K=V) run real mlx-lm prefill and decode
through BatchGenerator; after every step the sum of the caches' `nbytes` must equal the prediction.
Narrow variants sweep long lengths (the formula is linear in heads, dims and dtype); the wide variants
keep the real head counts, head dims and windows at short lengths.
"""

from __future__ import annotations

import pytest

mx = pytest.importorskip("mlx.core")
from mlx_lm.generate import BatchGenerator  # noqa: E402
from mlx_lm.models import gemma4, gpt_oss  # noqa: E402

from agent.catalog import ModelSpec, spec_from_config  # noqa: E402
from agent.kvcost import PREFILL_CHUNK_TOKENS, engine_kv_trace, kv_bytes_at, kv_peak_bytes_at  # noqa: E402


def gpt_oss_config(*, window: int, kv_heads: int = 2, head_dim: int = 8, heads: int = 4, layers: int = 4) -> dict:
    return {
        "model_type": "gpt_oss", "num_hidden_layers": layers, "num_local_experts": 2,
        "num_experts_per_tok": 1, "vocab_size": 128, "rms_norm_eps": 1e-5, "hidden_size": 32,
        "intermediate_size": 32, "head_dim": head_dim, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "sliding_window": window, "rope_theta": 150000,
        "max_position_embeddings": 131072,
        "layer_types": ["sliding_attention", "full_attention"] * (layers // 2),
    }


def gemma4_config(
    *, window: int, kv_heads: int = 2, head_dim: int = 8, global_kv_heads: int = 1, global_head_dim: int = 16,
    heads: int = 4, layers: int = 6,
) -> dict:
    pattern = ["sliding_attention"] * 5 + ["full_attention"]
    text = {
        "model_type": "gemma4_text", "hidden_size": 32, "intermediate_size": 32, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
        "num_global_key_value_heads": global_kv_heads, "global_head_dim": global_head_dim,
        "attention_k_eq_v": True, "num_kv_shared_layers": 0, "hidden_size_per_layer_input": 0,
        "sliding_window": window, "layer_types": (pattern * layers)[:layers], "enable_moe_block": False,
        "use_double_wide_mlp": False, "max_position_embeddings": 262144, "vocab_size": 128,
    }
    return {"model_type": "gemma4", "text_config": text, "vocab_size": 128}


def build(config: dict) -> tuple[object, ModelSpec]:
    mx.random.seed(0)
    if config["model_type"] == "gpt_oss":
        model = gpt_oss.Model(gpt_oss.ModelArgs.from_dict(config))
    else:
        model = gemma4.Model(gemma4.ModelArgs.from_dict(config))
    # Unquantized weights are float32 here (MLX's CPU backend runs unquantized MoE only in float32).
    return model, spec_from_config(config, model_id=config["model_type"], kv_dtype="float32")


def observed_trace(model, prompt_lengths: list[int], max_tokens: int, chunk: int = PREFILL_CHUNK_TOKENS) -> list[int]:
    """Sum of cache nbytes after every BatchGenerator step, until the rows finish."""
    generator = BatchGenerator(model, max_tokens=max_tokens, prefill_step_size=chunk)
    prompts = [[1 + i % 100 for i in range(n)] for n in prompt_lengths]
    unfinished = set(generator.insert(prompts, max_tokens=[max_tokens] * len(prompts)))
    trace = []
    while unfinished:
        _, generated = generator.next()
        unfinished -= {response.uid for response in generated if response.finish_reason is not None}
        trace.append(generator.prompt_cache_nbytes)
    assert trace[-1] == 0, "finished rows must leave the batch"
    return trace[:-1]


def assert_exact(model, spec: ModelSpec, prompt_lengths: list[int], max_tokens: int) -> None:
    observed = observed_trace(model, prompt_lengths, max_tokens)
    longest = max(prompt_lengths)
    total = longest + max_tokens - 1  # the last step's token is fed, then the row finishes
    predicted = engine_kv_trace(spec, longest, total, batch_size=len(prompt_lengths))
    assert observed == predicted, f"prompts {prompt_lengths}"
    assert observed[-1] == kv_bytes_at(spec, total, prompt_tokens=longest, batch_size=len(prompt_lengths))
    assert max(observed) == kv_peak_bytes_at(spec, total, prompt_tokens=longest, batch_size=len(prompt_lengths))


# Both sides of every boundary: the first token, the 256-token steps, the window, the 512-token prefill
# chunks, and a few thousand tokens.
NARROW_GPT_OSS_PROMPTS = [1, 2, 3, 15, 16, 17, 18, 254, 255, 256, 257, 258, 511, 512, 513, 514, 515, 1025, 3000]
NARROW_GEMMA_PROMPTS = [1, 2, 3, 254, 255, 256, 257, 599, 600, 601, 602, 1026, 3000]


@pytest.fixture(scope="module")
def narrow_gpt_oss():
    return build(gpt_oss_config(window=16))


@pytest.fixture(scope="module")
def narrow_gemma():
    # A window that is not a multiple of 256 exercises the rotating cache's last, partial growth step.
    return build(gemma4_config(window=600))


@pytest.mark.parametrize("prompt", NARROW_GPT_OSS_PROMPTS)
def test_predicted_bytes_equal_mlx_lm_caches_for_one_gpt_oss_sequence(narrow_gpt_oss, prompt):
    assert_exact(*narrow_gpt_oss, [prompt], max_tokens=4)


@pytest.mark.parametrize("prompt", NARROW_GEMMA_PROMPTS)
def test_predicted_bytes_equal_mlx_lm_caches_for_one_gemma_sequence(narrow_gemma, prompt):
    assert_exact(*narrow_gemma, [prompt], max_tokens=4)


def test_decode_across_cache_steps_and_the_window_is_predicted_exactly(narrow_gpt_oss, narrow_gemma):
    assert_exact(*narrow_gpt_oss, [250], max_tokens=20)
    assert_exact(*narrow_gemma, [590], max_tokens=20)
    assert_exact(*narrow_gemma, [3], max_tokens=300)


@pytest.mark.parametrize("prompts", [[24, 300, 513], [2, 256, 257], [1, 1, 1], [17, 16, 15, 500], [40, 513]])
def test_a_batch_prefilled_in_one_chunk_holds_every_row_at_its_longest_rows_size(narrow_gpt_oss, narrow_gemma, prompts):
    assert_exact(*narrow_gpt_oss, prompts, max_tokens=3)
    assert_exact(*narrow_gemma, prompts, max_tokens=3)


def test_a_small_window_gemma_layout_is_predicted_exactly():
    model, spec = build(gemma4_config(window=32, kv_heads=4, global_kv_heads=2, global_head_dim=32))
    for prompt in [1, 31, 32, 33, 300]:
        assert_exact(model, spec, [prompt], max_tokens=3)


def test_gpt_oss_at_real_head_counts_dims_and_window_is_predicted_exactly():
    model, spec = build(gpt_oss_config(window=128, kv_heads=8, head_dim=64, heads=64, layers=2))
    for prompt in [1, 127, 128, 129, 257]:
        assert_exact(model, spec, [prompt], max_tokens=2)
    assert_exact(model, spec, [5, 129], max_tokens=2)


def test_gemma_at_real_head_counts_dims_and_window_is_predicted_exactly():
    model, spec = build(
        gemma4_config(window=1024, kv_heads=8, head_dim=256, global_kv_heads=2, global_head_dim=512, heads=16)
    )
    for prompt in [1, 2, 255, 256, 257]:
        assert_exact(model, spec, [prompt], max_tokens=2)
    assert_exact(model, spec, [3, 40], max_tokens=2)


@pytest.mark.parametrize("name", ["gpt-oss-tiny", "gemma-4-tiny"])
def test_a_loaded_quantized_model_directory_is_predicted_from_its_own_files(tiny_models_dir, name):
    # The spec comes from config.json and the safetensors headers (bf16 KV), the caches from mlx_lm.load.
    from mlx_lm import load

    from agent.catalog import spec_from_model_dir

    model, _ = load(str(tiny_models_dir / name))
    spec = spec_from_model_dir(tiny_models_dir / name)
    assert spec.kv_dtype == "bfloat16"
    for prompt in [1, 40, 300]:
        assert_exact(model, spec, [prompt], max_tokens=3)
    assert_exact(model, spec, [7, 33], max_tokens=3)


@pytest.mark.parametrize("image_sizes", [[[(96, 144)]], [[(96, 144)], [(300, 100), (64, 64)]]])
def test_a_prompt_with_images_is_predicted_exactly_as_text_of_its_length_single_and_batched(tiny_models_dir,
                                                                                            image_sizes):
    # Our Batcher on gemma-4 with mlx-vlm's tower: each image is its soft tokens plus two markers in the
    # prompt, and the caches hold exactly what the same number of text tokens would (one step shows the
    # caches after the prefill's first decode, which trims the sliding overhang the prediction passes through).
    pytest.importorskip("mlx_vlm")
    from tests.vision_support import VISION_MODEL, VisionBatcher, noise_image

    vision = VisionBatcher(tiny_models_dir / VISION_MODEL)
    rows = [vision.row(uid, "Describe these.", [noise_image(w, h, seed=uid * 10 + i) for i, (w, h) in enumerate(sizes)],
                       max_tokens=5) for uid, sizes in enumerate(image_sizes)]
    for row in rows:
        vision.batcher.add(row)
    trace = []
    while vision.batcher.has_work:
        vision.batcher.step()
        trace.append(vision.batcher.used_bytes())
    soft = [sum(vision.vision.files.rule.prompt_tokens(h, w) for w, h in sizes) for sizes in image_sizes]
    assert all(len(row.prompt) > tokens for row, tokens in zip(rows, soft))
    longest = max(len(row.prompt) for row in rows)
    predicted = engine_kv_trace(vision.spec, longest, longest + 5 - 1, batch_size=len(rows))
    assert trace[-1] == 0 and trace[:-1] == predicted[1:]
    assert max(predicted) == kv_peak_bytes_at(vision.spec, longest + 4, prompt_tokens=longest, batch_size=len(rows))
