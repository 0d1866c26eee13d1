"""How long the coordinator waits on a provider: deadlines a peer cannot stretch with what it claims.

    accepted → first token   first_token_base_s + prompt / rate × prefill_slack + images × first_token_s_per_image,
                             at most first_token_timeout_s
                             prompt: the agent's count, never above the coordinator's own bound for the body
                             rate:   the slot's reported prefill tokens/s, floored at min_prefill_tps (a
                                     provider that claims to be slow cannot buy itself more time), or
                                     assumed_prefill_tps before any is reported
    between tokens           stall_timeout_s without a chunk that carries text (an empty chunk is not a token)
    the whole stream         first token + stall_timeout_s + max_tokens / min_decode_tps, at most
                             max_request_s after the request arrived
    retries                  no new attempt starts first_token_total_s after the request arrived, so a
                             client that meets several silent providers still hears within a bounded time

Public names: first_token_window_s, stream_deadline.
"""

from __future__ import annotations

from agent.coordinator.settings import CoordinatorSettings


def first_token_window_s(prompt_tokens: int, prefill_tps: float | None, settings: CoordinatorSettings,
                         num_images: int = 0) -> float:
    """Seconds from `accepted` to the first token for a prompt of this size at this provider (each image adds the
    vision tower's encoding, which the prefill rate does not cover)."""
    rate = settings.assumed_prefill_tps if prefill_tps is None else max(prefill_tps, settings.min_prefill_tps)
    window = settings.first_token_base_s + max(0, prompt_tokens) / rate * settings.prefill_slack
    window += max(0, num_images) * settings.first_token_s_per_image
    return min(window, settings.first_token_timeout_s)


def stream_deadline(first_token_at: float, arrived_at: float, max_tokens: int, settings: CoordinatorSettings) -> float:
    """The time by which the whole stream must have ended, on the clock of the two times given."""
    decode_window = settings.stall_timeout_s + max(0, max_tokens) / settings.min_decode_tps
    return min(first_token_at + decode_window, arrived_at + settings.max_request_s)
