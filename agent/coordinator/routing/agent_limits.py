"""How each agent admits, as the coordinator reads it: the agent's own numbers, never a copy of them.

Besides its KV tracker, the agent's per-request admission reads a safety margin, a row limit, a
default max_tokens, a prefill chunk and an output clip (frames.AdmissionLimits, sent per model in
`register`), and its adapting expected-output ratio (sent in every heartbeat). The coordinator runs the
same check with exactly those. A peer that does not say is planned for conservatively, so the
coordinator never sends what such an agent must refuse: a quarter of the budget kept free, one row at
a time, a long prefill chunk (a wider sliding-layer overhang), no clip, outputs as long as max_tokens.
Its answer stays final either way.

Public names: CONSERVATIVE_LIMITS, UNKNOWN_RATIO, limits_of, ratio_of, margin_bytes.
"""

from __future__ import annotations

from agent.admission import safety_margin_bytes
from agent.coordinator.routing.registry import Offer
from agent.wire.frames import AdmissionLimits

CONSERVATIVE_LIMITS = AdmissionLimits(kv_safety_margin=0.25, max_num_seqs=1, prefill_chunk_tokens=8192)
UNKNOWN_RATIO = 1.0  # an agent that reports no ratio may expect every request to use all its max_tokens


def limits_of(offer: Offer) -> AdmissionLimits:
    return offer.entry.admission or CONSERVATIVE_LIMITS


def ratio_of(offer: Offer) -> float:
    status = offer.status
    if status is None or status.expected_output_ratio is None:
        return UNKNOWN_RATIO
    return status.expected_output_ratio


def margin_bytes(offer: Offer, budget_bytes: int) -> int:
    return safety_margin_bytes(budget_bytes, limits_of(offer).kv_safety_margin)
