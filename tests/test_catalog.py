from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.catalog import (
    CatalogError,
    LayerKind,
    default_catalog_path,
    load_catalog,
    resolve_model,
    spec_from_config,
    spec_from_model_dir,
)
from agent.errors import UnknownModel
from agent.safetensors_info import read_safetensors_info

REFERENCE = Path(__file__).parent / "fixtures" / "reference"
ARCHITECTURE_KEYS = [
    "model_type", "num_hidden_layers", "layer_types", "sliding_window", "num_key_value_heads", "head_dim",
    "num_global_key_value_heads", "global_head_dim", "attention_k_eq_v", "num_kv_shared_layers",
    "max_position_embeddings",
]


def reference_config(model_id: str) -> dict:
    config = json.loads((REFERENCE / f"{model_id}.config.json").read_text())
    return config.get("text_config", config)


def test_catalog_architecture_fields_are_copied_verbatim_from_the_real_configs():
    raw = __import__("tomllib").loads(Path("agent/models.toml").read_text())
    for model_id in ("gpt-oss-20b", "gemma-4-26b"):
        real = reference_config(model_id)
        for key, value in raw[model_id]["architecture"].items():
            assert key in ARCHITECTURE_KEYS
            assert value == real[key], f"{model_id}.{key}"


def test_catalog_spec_equals_the_spec_read_from_the_real_config_json():
    catalog = load_catalog()
    for model_id in ("gpt-oss-20b", "gemma-4-26b"):
        config = json.loads((REFERENCE / f"{model_id}.config.json").read_text())
        from_config = spec_from_config(config, model_id=model_id, kv_dtype="bfloat16")
        assert catalog[model_id].kv_layers == from_config.kv_layers
        assert catalog[model_id].sliding_window == from_config.sliding_window


def test_gpt_oss_alternates_sliding_and_full_layers_with_eight_heads_of_64():
    spec = load_catalog()["gpt-oss-20b"]
    assert len(spec.layers_of(LayerKind.FULL)) == 12 and len(spec.layers_of(LayerKind.SLIDING)) == 12
    assert {(layer.num_kv_heads, layer.head_dim) for layer in spec.kv_layers} == {(8, 64)}


def test_gemma_full_layers_use_the_global_heads_and_head_dim():
    spec = load_catalog()["gemma-4-26b"]
    assert [(layer.num_kv_heads, layer.head_dim) for layer in spec.layers_of(LayerKind.FULL)] == [(2, 512)] * 5
    assert [(layer.num_kv_heads, layer.head_dim) for layer in spec.layers_of(LayerKind.SLIDING)] == [(8, 256)] * 25


def test_gemma_kv_shared_layers_own_no_cache():
    config = json.loads((REFERENCE / "gemma-4-26b.config.json").read_text())
    config["text_config"] = {**config["text_config"], "num_kv_shared_layers": 6}
    spec = spec_from_config(config, model_id="shared", kv_dtype="bfloat16")
    assert len(spec.kv_layers) == 24


def test_an_unknown_architecture_is_a_clear_error():
    config = {**reference_config("gpt-oss-20b"), "model_type": "llama"}
    with pytest.raises(CatalogError, match="'llama' is not supported"):
        spec_from_config(config, model_id="x", kv_dtype="bfloat16")


def write_catalog(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_a_bad_entry_names_the_file_the_model_and_the_field(tmp_path):
    text = Path("agent/models.toml").read_text().replace("max_context = 131072", 'max_context = "long"', 1)
    path = write_catalog(tmp_path, text)
    with pytest.raises(CatalogError) as error:
        load_catalog(path)
    assert str(path) in str(error.value) and "gpt-oss-20b" in str(error.value) and "max_context" in str(error.value)


def test_a_missing_architecture_field_is_named(tmp_path):
    text = Path("agent/models.toml").read_text().replace("sliding_window = 1024\n", "", 1)
    with pytest.raises(CatalogError, match=r"gemma-4-26b.*sliding_window"):
        load_catalog(write_catalog(tmp_path, text))


def test_layer_types_must_match_the_layer_count(tmp_path):
    text = Path("agent/models.toml").read_text().replace("num_hidden_layers = 24", "num_hidden_layers = 25", 1)
    with pytest.raises(CatalogError, match=r"gpt-oss-20b.*layer_types.*24 entries for 25"):
        load_catalog(write_catalog(tmp_path, text))


def test_users_can_add_a_model_with_the_same_schema(tmp_path):
    text = Path("agent/models.toml").read_text().replace('["gemma-4-26b"', '["my-gemma"')
    catalog = load_catalog(write_catalog(tmp_path, text))
    assert set(catalog) == {"gpt-oss-20b", "my-gemma"}
    assert catalog["my-gemma"].kv_layers == load_catalog()["gemma-4-26b"].kv_layers


def test_resolve_model_rejects_an_unknown_name_with_the_known_ids():
    with pytest.raises(UnknownModel, match="gpt-oss-20b") as unknown:
        resolve_model("no-such-model")
    assert unknown.value.code == "unknown_model"  # the one way the tree says it


def test_a_model_directory_gives_exact_weight_bytes_and_kv_dtype_from_safetensors_headers(tmp_path):
    import struct

    header = {
        "model.embed_tokens.weight": {"dtype": "BF16", "shape": [4, 2], "data_offsets": [0, 16]},
        "model.layers.0.mlp.weight": {"dtype": "U32", "shape": [3], "data_offsets": [16, 28]},
        "vision_tower.patch.weight": {"dtype": "BF16", "shape": [50], "data_offsets": [28, 128]},
        "__metadata__": {"format": "mlx"},
    }
    blob = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(128))
    (tmp_path / "config.json").write_text(json.dumps(reference_config("gpt-oss-20b")))
    info = read_safetensors_info(tmp_path)
    assert (info.total_bytes, info.activation_dtype) == (28, "bfloat16")  # vision tensors are not loaded
    spec = spec_from_model_dir(tmp_path)
    assert spec.weights_bytes == 28 and spec.kv_dtype == "bfloat16" and spec.id == tmp_path.name


def test_the_default_catalog_is_the_file_inside_the_package_never_one_found_above_it():
    import agent

    package = Path(agent.__file__).resolve().parent
    path = default_catalog_path()
    assert path == package / "models.toml" and path.is_file() and not path.is_symlink()
    assert set(load_catalog()) >= {"gpt-oss-20b", "gemma-4-26b"}
