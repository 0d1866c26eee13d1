"""`darkbloom-agent coordinator status`: a running coordinator's capacity, per model and per provider slot.

It reads GET /v1/models/capacity (agent/coordinator/http/capacity.py): per model the providers by state,
free KV, the queue and the prefix cache summed over the slots; with the operator's view (loopback, or
`--operator-token`) a row per provider slot with its state, rows, free and cached KV, and its prefix cache's
hit rate, hit tokens, evictions and the chains its heartbeat reports.

Public names: coordinator_status, format_capacity.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer

from agent.cli.support import fail
from agent.tables import human_bytes, render_table

TIMEOUT_S = 10.0


def coordinator_status(
    url: Annotated[str, typer.Option(help="The coordinator's base URL.")] = "http://127.0.0.1:8000",
    operator_token: Annotated[Optional[str], typer.Option(help="Sent as x-darkbloom-operator: per-provider rows "
                                                                "from beyond loopback.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the capacity report as JSON.")] = False,
) -> None:
    """Every model's providers, free KV, queue and prefix cache, and (as an operator) each provider's slot."""
    import httpx

    headers = {"x-darkbloom-operator": operator_token} if operator_token else {}
    try:
        response = httpx.get(url.rstrip("/") + "/v1/models/capacity", headers=headers, timeout=TIMEOUT_S)
        response.raise_for_status()
        report = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        fail(f"could not read {url}/v1/models/capacity: {exc} (is the coordinator running there? --url)")
    typer.echo(json.dumps(report, indent=2) if as_json else format_capacity(report))


def format_capacity(report: dict[str, Any]) -> str:
    if not report.get("data"):
        return "no models: no provider has registered, and nothing is queued"
    return "\n\n".join(_model_block(model) for model in report["data"])


def _model_block(model: dict[str, Any]) -> str:
    states = ", ".join(f"{n} {state}" for state, n in model["providers"].items() if n) or "no providers"
    head = (f"{model['model']}: {states}; free KV {human_bytes(model['free_kv_bytes'])} of "
            f"{human_bytes(model['kv_budget_bytes'])}; queue {model['queue_depth']}; prefix cache "
            f"{human_bytes(model.get('kv_cached_bytes', 0))}, {model.get('prefix_hit_tokens', 0):,} tokens served "
            f"from it, {model.get('prefix_evictions', 0):,} evictions")
    details = model.get("details")
    if not details:
        return head
    rows = [[d["provider_id"], d["state"], d["num_running"], d["num_waiting"], d["num_in_flight"],
             human_bytes(d["free_kv_bytes"]), human_bytes(d.get("kv_cached_bytes", 0)),
             f"{d.get('prefix_hit_rate', 0.0):.0%}", f"{d.get('prefix_hit_tokens', 0):,}", d.get("prefix_evictions", 0),
             d.get("num_prefix_chains", 0), d.get("reason") or ""] for d in details]
    table = render_table(["provider", "state", "running", "waiting", "in flight", "free KV", "cached", "cache hits",
                          "hit tokens", "evictions", "chains", "note"], rows)
    return f"{head}\n{table}"
