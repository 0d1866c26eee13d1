"""The model catalog: models.toml and config.json files -> ModelSpec.

A ModelSpec is everything the memory gate and the KV cost need to know about a model: which of its
layers keep their own KV cache, whether each one slides or grows, its KV heads and head dims, the
cache dtype, its weight bytes and its context length. It is built the same way from a models.toml
entry (whose `architecture` table is copied from the real config.json) and from a downloaded model
directory, so the two can be compared.

Public names: ModelSpec, KVLayer, LayerKind, CatalogError, load_catalog, spec_from_config,
spec_from_model_dir, resolve_model, default_catalog_path.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import DarkbloomError, UnknownModel
from agent.safetensors_info import read_safetensors_info
from agent.vision_cost import read_vision_rule, vision_reserve_bytes
from agent.vision_tokens import VisionRule

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
SUPPORTED_ARCHITECTURES = ("gpt_oss", "gemma4_text")


class CatalogError(DarkbloomError):
    code = "catalog_invalid"


class LayerKind(StrEnum):
    FULL = "full"
    SLIDING = "sliding"


@dataclass(frozen=True, slots=True)
class KVLayer:
    """One layer that owns a KV cache. K and V are both cached, even where V is derived from K."""

    kind: LayerKind
    num_kv_heads: int
    head_dim: int

    def bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.num_kv_heads * self.head_dim * dtype_bytes


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
    architecture: str
    kv_layers: tuple[KVLayer, ...]
    sliding_window: int
    kv_dtype: str
    max_context: int
    weights_bytes: int
    activation_reserve_bytes: int = 0
    activation_reserve_basis: str = ""
    repo: str | None = None
    revision: str | None = None
    quantization: str = ""
    source: str = ""
    # Vision (gemma-4 with its tower on disk): the tower's exact bytes, the activations of encoding the largest
    # image (agent/vision_cost.py), and the processor's rule. Loading with vision adds both byte counts.
    vision: VisionRule | None = None
    vision_weights_bytes: int = 0
    vision_reserve_bytes: int = 0

    @property
    def has_vision(self) -> bool:
        return self.vision is not None

    def with_vision(self) -> ModelSpec:
        """The spec as a load with vision costs it: the tower's weights and reserve on top."""
        return replace(self, weights_bytes=self.weights_bytes + self.vision_weights_bytes,
                       activation_reserve_bytes=self.activation_reserve_bytes + self.vision_reserve_bytes)

    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Hashed once: admission's caches (kvcost._replay) key on the spec, and a generated hash would walk
        # every layer on every call (a routing decision over 1,000 providers makes thousands of them).
        object.__setattr__(self, "_hash", hash(tuple(getattr(self, f.name) for f in fields(self) if f.compare)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def kv_dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.kv_dtype]

    def layers_of(self, kind: LayerKind) -> tuple[KVLayer, ...]:
        return tuple(layer for layer in self.kv_layers if layer.kind == kind)


class Architecture(BaseModel):
    """The KV-relevant fields of a config.json (gemma-4's come from its text_config)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    model_type: str
    num_hidden_layers: int = Field(gt=0)
    layer_types: list[str]
    sliding_window: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    max_position_embeddings: int = Field(gt=0)
    num_global_key_value_heads: int | None = Field(default=None, gt=0)
    global_head_dim: int | None = Field(default=None, gt=0)
    attention_k_eq_v: bool = False
    num_kv_shared_layers: int = Field(default=0, ge=0)


class CatalogEntry(BaseModel):
    """One model in models.toml. Sizes are bytes; `kv_dtype` is the dtype the caches are built in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repo: str
    revision: str
    quantization: str
    weights_bytes: int = Field(gt=0)
    weights_bytes_basis: str
    max_context: int = Field(gt=0)
    kv_dtype: str
    activation_reserve_bytes: int = Field(ge=0)
    activation_reserve_basis: str
    architecture: dict[str, Any]
    files: dict[str, dict[str, Any]] = {}  # weight file -> {sha256, bytes}; checked by agent.daemon.model_store


def default_catalog_path() -> Path:
    """The catalog shipped inside the package (agent/models.toml), the same file in a checkout and an install."""
    return Path(__file__).resolve().parent / "models.toml"


def load_catalog(path: Path | None = None) -> dict[str, ModelSpec]:
    path = path or default_catalog_path()
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"{path}: cannot read the catalog: {exc}") from exc
    return {model_id: _spec_from_entry(path, model_id, entry) for model_id, entry in raw.items()}


def _spec_from_entry(path: Path, model_id: str, raw: Any) -> ModelSpec:
    where = f"{path}: model {model_id!r}"
    try:
        entry = CatalogEntry.model_validate(raw)
    except ValidationError as exc:
        raise CatalogError(f"{where}: {_first_error(exc)}") from exc
    if entry.kv_dtype not in DTYPE_BYTES:
        raise CatalogError(f"{where}: field 'kv_dtype': unknown dtype {entry.kv_dtype!r}")
    spec = spec_from_config(entry.architecture, model_id=model_id, kv_dtype=entry.kv_dtype, where=where)
    return replace(
        spec,
        max_context=entry.max_context,
        weights_bytes=entry.weights_bytes,
        activation_reserve_bytes=entry.activation_reserve_bytes,
        activation_reserve_basis=entry.activation_reserve_basis,
        repo=entry.repo,
        revision=entry.revision,
        quantization=entry.quantization,
        source=str(path),
    )


def spec_from_config(
    config: dict[str, Any], *, model_id: str, kv_dtype: str, where: str = "config.json"
) -> ModelSpec:
    """A ModelSpec (without weights or reserve) from a config.json dict or a models.toml architecture table."""
    text_config = config.get("text_config", config) if config.get("model_type") == "gemma4" else config
    try:
        arch = Architecture.model_validate(text_config)
    except ValidationError as exc:
        raise CatalogError(f"{where}: architecture {_first_error(exc)}") from exc
    if arch.model_type not in SUPPORTED_ARCHITECTURES:
        raise CatalogError(
            f"{where}: field 'model_type': architecture {arch.model_type!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)}); its KV cost cannot be computed exactly"
        )
    if len(arch.layer_types) != arch.num_hidden_layers:
        raise CatalogError(
            f"{where}: field 'layer_types': {len(arch.layer_types)} entries for "
            f"{arch.num_hidden_layers} hidden layers"
        )
    unknown = sorted(set(arch.layer_types) - {"full_attention", "sliding_attention"})
    if unknown:
        raise CatalogError(f"{where}: field 'layer_types': unknown layer type {unknown[0]!r}")
    return ModelSpec(
        id=model_id,
        architecture=arch.model_type,
        kv_layers=_kv_layers(arch),
        sliding_window=arch.sliding_window,
        kv_dtype=kv_dtype,
        max_context=arch.max_position_embeddings,
        weights_bytes=0,
        source=where,
    )


def _kv_layers(arch: Architecture) -> tuple[KVLayer, ...]:
    # gemma-4's last num_kv_shared_layers reuse earlier layers' caches and own none.
    owners = arch.layer_types[: arch.num_hidden_layers - arch.num_kv_shared_layers]
    return tuple(_kv_layer(arch, layer_type) for layer_type in owners)


def _kv_layer(arch: Architecture, layer_type: str) -> KVLayer:
    if layer_type == "sliding_attention":
        return KVLayer(LayerKind.SLIDING, arch.num_key_value_heads, arch.head_dim)
    if arch.model_type == "gpt_oss":
        return KVLayer(LayerKind.FULL, arch.num_key_value_heads, arch.head_dim)
    # gemma-4 full layers: their own head dim; K=V models use the global KV head count.
    head_dim = arch.global_head_dim or arch.head_dim
    use_global_heads = arch.attention_k_eq_v and arch.num_global_key_value_heads is not None
    heads = arch.num_global_key_value_heads if use_global_heads else arch.num_key_value_heads
    return KVLayer(LayerKind.FULL, heads, head_dim)


def spec_from_model_dir(model_dir: Path, *, model_id: str | None = None) -> ModelSpec:
    """A ModelSpec from a downloaded model: its config.json, and exact bytes and dtype from safetensors headers."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"{config_path}: cannot read the model config: {exc}") from exc
    weights = read_safetensors_info(model_dir)
    if weights.total_bytes == 0:
        raise CatalogError(f"{model_dir}: no *.safetensors weight files found")
    spec = spec_from_config(
        config, model_id=model_id or model_dir.name, kv_dtype=weights.activation_dtype, where=str(config_path)
    )
    spec = replace(spec, weights_bytes=weights.total_bytes, quantization=_describe_quantization(config))
    return with_vision_files(spec, model_dir, config, weights.vision_bytes)


def with_vision_files(spec: ModelSpec, model_dir: Path, config: dict[str, Any], vision_bytes: int) -> ModelSpec:
    """The spec with what loading its vision costs, when the directory has a vision tower and its processor."""
    rule = read_vision_rule(model_dir, config)
    if rule is None or vision_bytes == 0:
        return spec
    return replace(spec, vision=rule, vision_weights_bytes=vision_bytes,
                   vision_reserve_bytes=vision_reserve_bytes(config["vision_config"], rule))


def _describe_quantization(config: dict[str, Any]) -> str:
    quant = config.get("quantization") or config.get("quantization_config")
    if not quant:
        return "none"

    def describe(entry: dict[str, Any]) -> str:
        mode = entry.get("mode") or entry.get("quant_method") or "affine"
        return f"{mode} {entry['bits']}-bit" if entry.get("bits") else str(mode)

    base = describe(quant)
    overrides = [describe(v) for v in quant.values() if isinstance(v, dict) and describe(v) != base]
    if not overrides:
        return base
    kinds = ", ".join(sorted(set(overrides)))
    return f"{base}, {kinds} on {len(overrides)} layers"


def resolve_model(model: str, catalog: dict[str, ModelSpec] | None = None) -> ModelSpec:
    """A catalog id, or a path to a model directory."""
    catalog = load_catalog() if catalog is None else catalog
    if model in catalog:
        return catalog[model]
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return spec_from_model_dir(path)
    known = ", ".join(sorted(catalog)) or "none"
    raise UnknownModel(f"unknown model {model!r}: not a catalog id ({known}) and not a model directory")


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "(entry)"
    return f"field {field!r}: {error['msg']}"
