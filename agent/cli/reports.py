"""What `darkbloom-agent kv` and `darkbloom-agent doctor` report: plain dicts (for --json) and tables."""

from __future__ import annotations

from agent.admission import GIB, load_gate, memory_cap_bytes
from agent.catalog import ModelSpec
from agent.kvcost import (
    PREFILL_CHUNK_TOKENS,
    architecture_kv_bytes,
    kv_bytes_at,
    kv_bytes_per_token,
    kv_fixed_bytes_per_sequence,
    kv_peak_bytes_at,
)
from agent.tables import human_bytes, render_table

DEFAULT_CONTEXTS = (4096, 8192, 32768, 131072)
REQUEST_TOKENS = 4096  # the "typical request" doctor counts


def kv_report(spec: ModelSpec, contexts: tuple[int, ...] = DEFAULT_CONTEXTS) -> dict:
    return {
        "model": spec.id,
        "kv_dtype": spec.kv_dtype,
        "prefill_chunk_tokens": PREFILL_CHUNK_TOKENS,
        "kv_bytes_per_token": kv_bytes_per_token(spec),
        "kv_fixed_bytes_per_sequence": kv_fixed_bytes_per_sequence(spec),
        "kv_bytes_at": {str(n): kv_bytes_at(spec, n) for n in contexts},
        "kv_peak_bytes_at": {str(n): kv_peak_bytes_at(spec, n) for n in contexts},
        "architecture_kv_bytes_at": {str(n): architecture_kv_bytes(spec, n) for n in contexts},
    }


def format_kv_report(report: dict) -> str:
    head = (
        f"{report['model']}: {report['kv_bytes_per_token']:,} B per token (full-attention layers) + "
        f"{human_bytes(report['kv_fixed_bytes_per_sequence'])} per sequence (sliding layers), "
        f"{report['kv_dtype']}, prefill chunk {report['prefill_chunk_tokens']}"
    )
    rows = []
    for n, held in report["kv_bytes_at"].items():
        peak = report["kv_peak_bytes_at"][n]
        textbook = report["architecture_kv_bytes_at"][n]
        rows.append([f"{int(n):,}", f"{held:,}", human_bytes(held), human_bytes(peak),
                     human_bytes(textbook), f"{(held - textbook) / textbook:+.1%}"])
    table = render_table(["context", "bytes held", "held", "peak (prefill)", "formula", "engine over formula"], rows)
    return f"{head}\n\n{table}"


def doctor_report(catalog: dict[str, ModelSpec], memory_bytes: int, operator_reserve_bytes: int = 0,
                  metal_limit_bytes: int | None = None) -> dict:
    models = []
    for spec in catalog.values():
        gate = load_gate(spec, total_memory_bytes=memory_bytes, operator_reserve_bytes=operator_reserve_bytes,
                         metal_limit_bytes=metal_limit_bytes)
        full_context = kv_peak_bytes_at(spec, spec.max_context)
        request = kv_peak_bytes_at(spec, REQUEST_TOKENS)
        models.append({
            "model": spec.id,
            "fits": gate.fits,
            "reason": gate.reason,
            "weights_bytes": spec.weights_bytes,
            "activation_reserve_bytes": spec.activation_reserve_bytes,
            "min_kv_budget_bytes": gate.min_kv_budget_bytes,
            "kv_budget_bytes": gate.kv_budget_bytes,
            "max_context": spec.max_context,
            "full_context_sequences": gate.kv_budget_bytes // full_context,
            f"requests_{REQUEST_TOKENS}_tokens": gate.kv_budget_bytes // request,
            "vision": _vision_option(spec, memory_bytes, operator_reserve_bytes, metal_limit_bytes),
        })
    cap = memory_cap_bytes(memory_bytes, operator_reserve_bytes, metal_limit_bytes)
    return {"memory_bytes": memory_bytes, "operator_reserve_bytes": operator_reserve_bytes, "cap_bytes": cap,
            "models": models}


def _vision_option(spec: ModelSpec, memory_bytes: int, operator_reserve_bytes: int,
                   metal_limit_bytes: int | None) -> dict | None:
    """The other way to load a model with vision: with its tower (the agent's first choice) or text-only."""
    if not spec.has_vision:
        return None
    gate = load_gate(spec.with_vision(), total_memory_bytes=memory_bytes, operator_reserve_bytes=operator_reserve_bytes,
                     metal_limit_bytes=metal_limit_bytes)
    return {"fits": gate.fits, "reason": gate.reason, "weights_bytes": spec.vision_weights_bytes,
            "reserve_bytes": spec.vision_reserve_bytes, "kv_budget_bytes": gate.kv_budget_bytes,
            "max_soft_tokens_per_image": spec.vision.max_soft_tokens}


def _vision_line(model: dict) -> str:
    vision = model.get("vision")
    if vision is None:
        return ""
    tower = (f"tower {human_bytes(vision['weights_bytes'])} + encoder reserve {human_bytes(vision['reserve_bytes'])}, "
             f"≤ {vision['max_soft_tokens_per_image']} soft tokens per image")
    if vision["fits"]:
        return f"\n  {model['model']} with vision: loads with it ({tower}); KV budget {human_bytes(vision['kv_budget_bytes'])}"
    choice = "loads text-only" if model["fits"] else "does not load"
    return f"\n  {model['model']} with vision: {choice} ({tower}): with its tower it {vision['reason']}"


def format_doctor_report(report: dict) -> str:
    head = (f"memory {report['memory_bytes'] / GIB:.0f} GiB, cap {human_bytes(report['cap_bytes'])} "
            f"(operator reserve {human_bytes(report['operator_reserve_bytes'])})")
    rows = [[m["model"], "yes" if m["fits"] else "no", human_bytes(m["weights_bytes"]),
             human_bytes(m["activation_reserve_bytes"]), human_bytes(m["kv_budget_bytes"]),
             m["full_context_sequences"], m[f"requests_{REQUEST_TOKENS}_tokens"]] for m in report["models"]]
    table = render_table(["model", "fits", "weights", "activations", "KV budget", "full-context seqs",
                          f"{REQUEST_TOKENS}-token reqs"], rows)
    reasons = "\n".join(f"  {m['model']}: {m['reason']}{_vision_line(m)}" for m in report["models"])
    text = f"{head}\n\n{table}\n\n{reasons}"
    machine = report.get("machine")
    if machine:
        metal = machine["metal_working_set_bytes"]
        text += (f"\n\nmachine: {machine['chip'] or 'unknown chip'}, {machine['os_version'] or 'unknown OS'}, "
                 f"Metal working set {human_bytes(metal) if metal else 'n/a'}\n"
                 f"model cache: {machine['model_cache']} ({human_bytes(machine['disk_free_bytes'])} free)\n"
                 f"launchd: {machine['launchd']}")
        text += "".join(f"\nnote: {note}" for note in machine["notes"])
    return text
