"""Whether the provider holding a request's prefix gets it: a scored choice of overlap against load.

As llm-d's and Dynamo's routers weigh a replica's cached prefix against its load, the holder is scored as
if it had `prefix_affinity_slack_rows` fewer rows (what the prefill it saves is worth), and it must also
stay within a bound on load relative to the fleet:

    queue   its waiting rows ≤ the best warm slot's + slack     (a prefill queue costs every row behind it)
    score   its rows − slack ≤ the least busy warm slot's rows   (overlap against load)
    bound   its rows + 1 ≤ max_load × (mean rows + 1)            (both with this request placed: within
                                                                 max_load of the mean; the + 1 keeps a
                                                                 quiet fleet from refusing the holder a row)

All three must hold; otherwise the request is placed by load as any other (and the conversation's prefix
moves with it). The bound is what keeps prefix routing from piling conversations on one provider: the
busiest provider's rows stay near max_load × the mean however the conversations were first placed.

Public names: prefer_holder.

Pure: the caller's warm list.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def prefer_holder(warm: list[tuple[tuple, object, T]], preferred: str | None, slack_rows: int,
                  max_load: float) -> tuple[tuple, object, T] | None:
    """Take the holder out of `warm` (sorted by queue rank: (waiting rows, rows, …) first) to be tried first,
    or None: it is not preferred (not warm here, or too busy by the rules above)."""
    index = next((i for i, (_, p, _) in enumerate(warm) if p.provider_id == preferred), None)
    if index is None:
        return None
    best_waiting, (waiting, busy, *_) = warm[0][0][0], warm[index][0]
    least_busy = min(rank[1] for rank, _, _ in warm)  # warm[0] has the shortest queue, not always the fewest rows
    mean_busy = (sum(rank[1] for rank, _, _ in warm) + 1) / len(warm)  # with this request placed
    queue = waiting <= best_waiting + slack_rows
    score = busy - slack_rows <= least_busy
    bound = busy + 1 <= max_load * (mean_busy + 1)
    return warm.pop(index) if queue and score and bound else None
