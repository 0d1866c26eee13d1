"""Tool-call deltas put together: consecutive pieces of one call become one piece, as OpenAI streams them
(one entry per call in a chunk). The agent's stream merges the deltas a slow reader let queue up with it.

Public names: coalesce_tool_deltas.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.wire.frames import ToolCallDelta


def coalesce_tool_deltas(deltas: Iterable[ToolCallDelta]) -> tuple[ToolCallDelta, ...]:
    out: list[ToolCallDelta] = []
    for delta in deltas:
        last = out[-1] if out else None
        if last is not None and last.index == delta.index and delta.id is None and delta.name is None:
            out[-1] = last.model_copy(update={"arguments": last.arguments + delta.arguments})
        else:
            out.append(delta)
    return tuple(out)
