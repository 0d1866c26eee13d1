"""The expected-output ratio: how much of its max_tokens a request is expected to produce.

Admission reserves KV for `prompt + min(max_tokens, clip) · ratio`. Summed over a batch, what matters
is the mean output, so the ratio follows an exponential moving average of observed completions
(finished by stop or length; a cancelled or failed request says nothing about lengths). It starts at
0.7 (SGLang's start), never drops below the 0.1 floor, and when the rows admitted under it turn out
to need more than the budget (memory runs short) it is raised halfway back to 1, so the slot stops
overcommitting while it drains. Every change is logged (`ratio.adapt`) and kept in `history`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import structlog

from agent.admission import EXPECTED_OUTPUT_RATIO_FLOOR, EXPECTED_OUTPUT_RATIO_START, OUTPUT_CLIP_TOKENS

log = structlog.get_logger(__name__)

SMOOTHING = 0.1  # weight of one completion: the ratio follows roughly the last ten to twenty
HISTORY_LENGTH = 256


@dataclass(frozen=True, slots=True)
class RatioChange:
    value: float
    reason: str  # "observed" | "memory_short"
    observed: float | None = None


@dataclass(slots=True)
class OutputRatio:
    model: str = ""
    value: float = EXPECTED_OUTPUT_RATIO_START
    floor: float = EXPECTED_OUTPUT_RATIO_FLOOR
    clip: int = OUTPUT_CLIP_TOKENS
    history: deque[RatioChange] = field(default_factory=lambda: deque(maxlen=HISTORY_LENGTH))

    def observe(self, completion_tokens: int, max_tokens: int) -> None:
        """A request finished by stop or length after `completion_tokens` of its `max_tokens`."""
        observed = min(1.0, completion_tokens / max(1, min(max_tokens, self.clip)))
        target = max(self.floor, observed)
        self._set(self.value + SMOOTHING * (target - self.value), "observed", observed)

    def raise_for_memory(self) -> None:
        """The admitted rows outgrew the budget: expect longer outputs until observations say otherwise."""
        self._set(self.value + (1.0 - self.value) / 2, "memory_short", None)

    def _set(self, value: float, reason: str, observed: float | None) -> None:
        value = min(1.0, max(self.floor, value))
        old, self.value = self.value, value
        self.history.append(RatioChange(value, reason, observed))
        log.debug("ratio.adapt", model=self.model, old=round(old, 4), new=round(value, 4), reason=reason,
                  observed=None if observed is None else round(observed, 4))
