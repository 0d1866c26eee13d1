"""Who takes part in a soak: honest simulated Macs and hostile peers, each with its own credential.

    cast = await Cast.start(server, config, credentials)   # everyone connected with its credential
    await cast.until_ready(server)                      # honest slots warm, every peer registered
    cast.first_hostile()                                # {request tag: the hostile peer that took it first}
    await cast.stop()

Public names: Cast.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from agent.coordinator.http.app import RunningServer
from agent.testing.fleet.agent import SimAgent
from agent.testing.hostile.flooder import Flooder
from agent.testing.hostile.inflater import UsageInflater
from agent.testing.hostile.peer import HostilePeer
from agent.testing.hostile.sinkhole import Sinkhole, SinkholeMode
from agent.testing.soak.config import SoakConfig
from agent.wire.frames import SlotState

READY_POLL_S = 0.02


@dataclass
class Cast:
    honest: list[SimAgent]
    hostile: list[HostilePeer]
    flooders: list[Flooder]
    uses_identities: bool
    names: dict[str, str] = field(default_factory=dict)  # provider id -> cast name

    @classmethod
    async def start(cls, server: RunningServer, config: SoakConfig, credentials: dict[str, str]) -> Cast:
        """`credentials` for every name of `member_names(config)` (identities.provider_credentials)."""
        honest_names, sinkhole_names, inflater_names, flooder_names = _names(config)
        url = server.ws_url
        honest = [await SimAgent(url, memory_gb=config.honest_memory_gb, preload=(config.model,),
                                 time_scale=config.time_scale, token=credentials[name]).start()
                  for name in honest_names]
        hostile: list[HostilePeer] = [
            await Sinkhole(url, token=credentials[name], name=name, mode=SinkholeMode(mode),
                           trickle_interval_s=config.real(config.trickle_interval_s)).start()
            for name, mode in zip(sinkhole_names, config.sinkhole_modes, strict=True)]
        hostile += [await UsageInflater(url, token=credentials[name], name=name).start() for name in inflater_names]
        flooders = [await Flooder(url, token=credentials[name], name=name, num_links=config.flood_links,
                                  max_frames_per_s=config.max_flood_frames_per_s).start() for name in flooder_names]
        return cls(honest, hostile, flooders, config.uses_identities)

    @staticmethod
    def member_names(config: SoakConfig) -> list[str]:
        return [name for names in _names(config) for name in names]

    async def until_ready(self, server: RunningServer, model: str, timeout_s: float) -> None:
        """Every honest agent registered with `model` warm, and every hostile peer registered."""
        registry = server.coordinator.router.registry
        async with asyncio.timeout(timeout_s):
            while not self._is_ready(registry, model):
                await asyncio.sleep(READY_POLL_S)
        self.names = {agent.provider_id: f"honest-{i}" for i, agent in enumerate(self.honest)}
        self.names |= {peer.provider_id: peer.name for peer in self.hostile}

    def _is_ready(self, registry, model: str) -> bool:
        for agent in self.honest:
            record = registry.get(agent.provider_id) if agent.provider_id else None
            slots = {slot.model: slot.state for slot in record.heartbeat.slots} if record and record.heartbeat else {}
            if slots.get(model) not in (SlotState.IDLE, SlotState.RUNNING):
                return False
        return all(registry.get(peer.provider_id) is not None for peer in self.hostile)

    def first_hostile(self) -> dict[str, str]:
        """{request text tag: the name of the first hostile peer it was sent to}."""
        firsts: dict[str, tuple[float, str]] = {}
        for peer in self.hostile:
            for request_id, at in peer.received.items():
                tag = peer.texts.get(request_id, "").partition(":")[0]
                if tag not in firsts or at < firsts[tag][0]:
                    firsts[tag] = (at, peer.name)
        return {tag: name for tag, (_, name) in firsts.items()}

    async def stop(self) -> None:
        for flooder in self.flooders:
            await flooder.stop()
        for peer in self.hostile:
            await peer.stop()
        for agent in self.honest:
            await agent.stop()


def _names(config: SoakConfig) -> tuple[list[str], list[str], list[str], list[str]]:
    return ([f"honest-{i}" for i in range(config.num_honest)],
            [f"sinkhole-{mode}" for mode in config.sinkhole_modes],
            [f"inflater-{i}" for i in range(config.num_inflaters)],
            [f"flooder-{i}" for i in range(config.num_flooders)])
