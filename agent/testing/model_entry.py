"""What a scripted peer says about a model in `register`: the catalog's numbers, as a real agent sends them.

    entry_for(spec)                    a ModelEntry with the catalog's KV layout and LIMITS
    entry_for(spec, limits=...)        ... with other admission numbers (a hostile peer's, say)

Public names: entry_for, LIMITS, GIB.
"""

from __future__ import annotations

from agent.catalog import ModelSpec
from agent.kvcost import PREFILL_CHUNK_TOKENS, kv_bytes_per_token, kv_fixed_bytes_per_sequence
from agent.wire.frames import AdmissionLimits, KVLayer, KVLayout, ModelEntry

GIB = 2**30
# What a scripted provider says about how it admits (as a real agent sends its EngineConfig's numbers).
LIMITS = AdmissionLimits(kv_safety_margin=0.05, max_num_seqs=32, prefill_chunk_tokens=PREFILL_CHUNK_TOKENS,
                         default_max_tokens=4096, output_clip_tokens=4096)


def entry_for(spec: ModelSpec, *, fits: bool = True, fit_reason: str = "fits", layout: bool = True,
              limits: AdmissionLimits | None = LIMITS) -> ModelEntry:
    kv_layout = KVLayout(architecture=spec.architecture, kv_dtype=spec.kv_dtype, sliding_window=spec.sliding_window,
                         layers=tuple(KVLayer(kind=layer.kind.value, num_kv_heads=layer.num_kv_heads,
                                              head_dim=layer.head_dim) for layer in spec.kv_layers))
    return ModelEntry(id=spec.id, weights_bytes=spec.weights_bytes, max_context=spec.max_context,
                      kv_bytes_per_token=kv_bytes_per_token(spec), kv_fixed_bytes_per_sequence=kv_fixed_bytes_per_sequence(spec),
                      fits=fits, fit_reason=fit_reason, activation_reserve_bytes=spec.activation_reserve_bytes,
                      kv_layout=kv_layout if layout else None, admission=limits)
