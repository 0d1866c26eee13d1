"""What a soak run found, as one JSON-able dict, a terminal table and a markdown block.

Times are simulated seconds (real ÷ time_scale). A request is *lost* when the client got an error or no
answer (consumers.NOT_LOST are the others: served, or refused by the account's own money or rate limit);
it is *lost to a hostile provider* when it is lost and a hostile peer was sent it. Requests are split by
when they started: in the warm-up (the first minute of reputation) or after it.

Public names: summarize, render_table, render_markdown.
"""

from __future__ import annotations

from collections import Counter

from agent.testing.soak.consumers import Outcome

HONEST = "honest-or-none"


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _phase(outcomes: list[Outcome], first_hostile: dict[str, str]) -> dict:
    lost = [o for o in outcomes if o.is_lost]
    to_hostile = [o for o in lost if o.tag in first_hostile]
    return {"num_sent": len(outcomes), "num_served": sum(o.cause == "ok" for o in outcomes),
            "num_lost": len(lost), "num_lost_to_hostile": len(to_hostile),
            "lost_by_first_hostile": dict(Counter(first_hostile[o.tag] for o in to_hostile)),
            "lost_causes": dict(Counter(o.cause for o in lost))}


def _tokens_per_chunk(outcomes: list[Outcome], first_hostile: dict[str, str]) -> dict:
    """Completion tokens charged per text chunk the client received, by who took the request first."""
    served: dict[str, list[Outcome]] = {}
    for o in outcomes:
        if o.cause == "ok" and o.usage and o.num_chunks:
            served.setdefault(first_hostile.get(o.tag, HONEST), []).append(o)
    return {who: round(sum(o.usage["completion_tokens"] for o in group) / sum(o.num_chunks for o in group), 2)
            for who, group in served.items()}


def summarize(*, config: dict, outcomes: list[Outcome], first_hostile: dict[str, str], wall_s: float,
              books: dict, floors: dict, **rest) -> dict:
    scale, warmup_real = config["time_scale"], config["warmup_seconds"] * config["time_scale"]
    served_latency = [o.latency_s / scale for o in outcomes if o.cause == "ok"]
    headroom = {account: f["headroom_micros"] for account, f in floors.items()}
    return {
        "config": config, "wall_s": round(wall_s, 1),
        "num_sent": len(outcomes), "num_served": sum(o.cause == "ok" for o in outcomes),
        "causes": dict(Counter(o.cause for o in outcomes)),
        "first_placed": dict(Counter(first_hostile.get(o.tag, HONEST) for o in outcomes)),
        "warmup": _phase([o for o in outcomes if o.started_s < warmup_real], first_hostile),
        "after_warmup": _phase([o for o in outcomes if o.started_s >= warmup_real], first_hostile),
        "latency_s": {"served_p50": _round(_pct(served_latency, 0.5)), "served_p99": _round(_pct(served_latency, 0.99)),
                      "max_wait": _round(max((o.latency_s / scale for o in outcomes), default=None))},
        "tokens_charged_per_chunk": _tokens_per_chunk(outcomes, first_hostile),
        "books": books, "accounts": floors,
        "min_headroom_micros": min(headroom.values(), default=None),
        "accounts_below_limit": sorted(a for a, h in headroom.items() if h < 0),
        **rest,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _rows(report: dict) -> list[tuple[str, str]]:
    warm, after, books, probe, rss = (report["warmup"], report["after_warmup"], report["books"], report["probe"],
                                      report["rss"])
    c = report["config"]
    return [
        ("run", f"{c['num_consumers']} consumers, {c['warmup_seconds']:g} s warm-up + {c['seconds']:g} s, "
                f"time scale {c['time_scale']:g}, {c['num_honest']} honest, sinkholes {', '.join(c['sinkhole_modes'])}, "
                f"{c['num_inflaters']} inflater, {c['num_flooders']} flooder; identities: "
                f"{'yes' if report['cast']['uses_identities'] else 'no (shared token)'}"),
        ("requests sent / served", f"{report['num_sent']} / {report['num_served']}"),
        ("causes", ", ".join(f"{k} {v}" for k, v in sorted(report["causes"].items()))),
        ("first placed on", ", ".join(f"{k} {v}" for k, v in sorted(report["first_placed"].items()))),
        ("lost to hostile: warm-up / after", f"{warm['num_lost_to_hostile']} of {warm['num_sent']} / "
                                             f"{after['num_lost_to_hostile']} of {after['num_sent']}"),
        ("lost after warm-up, by first hostile", str(after["lost_by_first_hostile"] or "none")),
        ("latency served p50 / p99, max wait (s)", f"{report['latency_s']['served_p50']} / "
                                                   f"{report['latency_s']['served_p99']}, {report['latency_s']['max_wait']}"),
        ("tokens charged per chunk", str(report["tokens_charged_per_chunk"])),
        ("ledger usage vs shown usage (µ$)", f"{books['ledger_usage_micros']} vs {books['shown_usage_micros']}"
                                             f" (+{books['unshown_micros']} for {books['num_unshown_charges']} streams "
                                             f"shown no usage); mismatched {books['num_mismatched']}, unknown "
                                             f"{books['num_unknown_charges']}, balanced {books['is_balanced']}"),
        ("min account headroom (µ$), below limit", f"{report['min_headroom_micros']}, "
                                                   f"{report['accounts_below_limit'] or 'none'}"),
        ("/health p99 / max (ms)", f"{probe['health']['p99_ms']} / {probe['health']['max_ms']}"),
        ("/metrics p99 / max (ms)", f"{probe['metrics']['p99_ms']} / {probe['metrics']['max_ms']}"),
        ("process RSS start / end / max (MB)", f"{rss['start_bytes'] // 2**20} / {rss['end_bytes'] // 2**20} / "
                                                f"{rss['max_bytes'] // 2**20}"),
        ("bad frames counted", f"{int(sum(report['bad_frames'].values()))} "
                               f"({', '.join(f'{k} {int(v)}' for k, v in sorted(report['bad_frames'].items()))})"),
        ("usage claims clamped", str(int(sum(report["clamped_claims"].values())))),
    ]


def render_table(report: dict) -> str:
    rows = _rows(report)
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def render_markdown(report: dict, command: str) -> str:
    lines = [f"Measured with `{command}` (loopback, one process; times in simulated seconds):", "",
             "| | |", "|---|---|"]
    lines += [f"| {label} | {value.replace('|', '/')} |" for label, value in _rows(report)]
    return "\n".join(lines)
