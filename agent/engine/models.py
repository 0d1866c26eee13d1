"""Which models an engine serves, and where each one's numbers come from.

A model given as a directory is measured from its files: exact weight bytes and KV dtype from the
safetensors headers (`spec_from_model_dir`); a catalog entry adds what the files cannot say (its
activation reserve and context length). A bare ModelSpec (no files) is enough for the fake engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from agent.catalog import ModelSpec, spec_from_model_dir


@dataclass(frozen=True, slots=True)
class ModelEntry:
    spec: ModelSpec
    source: Path | None = None  # the model directory to load

    @classmethod
    def from_dir(cls, model_id: str, model_dir: Path | str, catalog_spec: ModelSpec | None = None) -> ModelEntry:
        spec = spec_from_model_dir(Path(model_dir), model_id=model_id)
        if catalog_spec is not None:
            spec = replace(
                spec, activation_reserve_bytes=catalog_spec.activation_reserve_bytes,
                activation_reserve_basis=catalog_spec.activation_reserve_basis,
                max_context=min(spec.max_context, catalog_spec.max_context), repo=catalog_spec.repo,
                revision=catalog_spec.revision,
            )
        return cls(spec, Path(model_dir))


def model_entries(models: Mapping[str, object]) -> list[ModelEntry]:
    """model id -> ModelEntry, a model directory, or a ModelSpec."""
    entries = []
    for model_id, value in models.items():
        if isinstance(value, ModelEntry):
            entry = value
        elif isinstance(value, ModelSpec):
            entry = ModelEntry(value)
        elif isinstance(value, (str, Path)):
            entry = ModelEntry.from_dir(model_id, value)
        else:
            raise TypeError(f"model {model_id!r}: expected a ModelEntry, ModelSpec or directory, got {value!r}")
        entries.append(entry if entry.spec.id == model_id else replace(entry, spec=replace(entry.spec, id=model_id)))
    return entries
