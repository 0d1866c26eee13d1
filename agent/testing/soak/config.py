"""What a soak run is made of, and the coordinator settings it runs with.

Every duration in SoakConfig is in simulated seconds; real time is that times `time_scale` (the fleet's
convention: 0.5 runs the simulated Macs and the coordinator's clocks twice as fast). soak_settings()
scales the coordinator's deadlines the same way: every `*_s` setting except the HTTP edge's and the
link's housekeeping, so a deadline added later (named `*_s`) is scaled without a change here.

Public names: SoakConfig, soak_settings, UNSCALED_SETTINGS.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from agent.coordinator.settings import CoordinatorSettings

# Not the peers' deadlines: the HTTP edge's and the link's own housekeeping keep their real-time values.
UNSCALED_SETTINGS = frozenset({"heartbeat_interval_s", "register_timeout_s", "bad_frame_log_interval_s",
                               "http_keep_alive_s", "http_head_timeout_s", "body_read_timeout_s",
                               "ledger_retry_max_s"})
SOAK_HEARTBEAT_S = 0.5  # real seconds; with 6 missed a loaded machine does not evict an honest agent by accident
SOAK_MISSED_HEARTBEATS = 6


@dataclass(frozen=True, slots=True)
class SoakConfig:
    num_consumers: int = 64
    seconds: float = 60.0  # the measured window, after the warm-up
    warmup_seconds: float = 60.0  # "the first minute of reputation": requests started in it are counted apart
    time_scale: float = 1.0
    max_wait_s: float = 60.0  # a client gives up after this (and counts the request lost: no answer); below the
    # window, so a client stuck on a sinkhole in the warm-up still sends requests after it
    max_tokens: int = 32
    model: str = "gpt-oss-20b"
    num_honest: int = 4
    uses_identities: bool = True  # False: every provider presents the one shared token (as before identities)
    honest_memory_gb: int = 64
    sinkhole_modes: tuple[str, ...] = ("silent", "trickle")
    trickle_interval_s: float = 5.0
    num_inflaters: int = 1
    num_flooders: int = 1
    flood_links: int = 4
    max_flood_frames_per_s: float = 400.0  # real frames per second, all the flooder's links together
    num_funded_accounts: int = 5
    funded_dollars: int = 100
    num_small_accounts: int = 2  # accounts that run dry during the run: no account may end below its limit
    small_balance_micros: int = 300  # ~30 requests: these run dry within the run
    num_credit_accounts: int = 1  # ... and one allowed into debt, down to its credit limit
    credit_limit_micros: int = 200
    refusal_pause_s: float = 1.0  # a client refused for money or rate waits this before its next request
    probe_interval_s: float = 0.25  # real seconds between /health and /metrics probes

    def real(self, simulated_s: float) -> float:
        return simulated_s * self.time_scale

    @property
    def num_accounts(self) -> int:
        return self.num_funded_accounts + self.num_small_accounts + self.num_credit_accounts


def soak_settings(time_scale: float, base: CoordinatorSettings | None = None) -> CoordinatorSettings:
    """The coordinator's settings with every peer-facing deadline scaled to the soak's clock."""
    base = base or CoordinatorSettings()
    scaled = {f.name: getattr(base, f.name) * time_scale for f in fields(base)
              if f.name.endswith("_s") and f.name not in UNSCALED_SETTINGS
              and isinstance(getattr(base, f.name), int | float) and not isinstance(getattr(base, f.name), bool)}
    return replace(base, **scaled, heartbeat_interval_s=SOAK_HEARTBEAT_S, missed_heartbeats=SOAK_MISSED_HEARTBEATS)
