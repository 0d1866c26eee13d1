"""`darkbloom-agent start`: the engine, the provider and the link, run until told to stop.

    startup    resolve models → engine → load each model through the gate (keep warm) → link
    main loop  the link pumps; every slot transition (an engine listener) is a heartbeat at once (the
               provider's) and an update of the sleep assertion and the status file (also every
               STATUS_INTERVAL_S, for the uptime)
    shutdown   SIGTERM/SIGINT → drain: refuse new work, let streams finish until the deadline,
               cancel the rest → close the link once its last frames are sent → stop the engine → exit 0
A refused provider token ends the daemon with EXIT_AUTH_REFUSED, a coordinator that speaks no protocol
version in common with EXIT_PROTOCOL_REFUSED (no restart storm under launchd).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil
import structlog

from agent.catalog import load_catalog
from agent.daemon.config import AgentConfig
from agent.daemon.handler import LinkHandler, MemoryReading
from agent.daemon.sleep_guard import SleepGuard
from agent.daemon.status_file import write_status
from agent.engine.core import EngineConfig
from agent.engine.models import ModelEntry
from agent.engine.types import EngineError, SlotState, SlotTransition
from agent.errors import ConfigError
from agent.images import ImageLimits
from agent.link.client import Link, LinkRefused
from agent.tasks import TaskSet
from agent.wire.frames import Hardware

log = structlog.get_logger("agent.daemon.main")

STATUS_INTERVAL_S = 1.0  # the status file's uptime is this fresh; a state change rewrites it at once
CANCEL_GRACE_S = 5.0  # after the drain deadline: how long cancelled streams get to send their last frame
EngineFactory = Callable[[Mapping[str, ModelEntry], EngineConfig], object]


def resolve_models(config: AgentConfig) -> dict[str, ModelEntry]:
    """Each `models` item: a catalog id (its files must be in the Hugging Face cache) or a model directory."""
    from agent.daemon.model_store import snapshot_dir

    catalog = load_catalog(config.catalog)
    entries: dict[str, ModelEntry] = {}
    for item in config.models:
        path = Path(item).expanduser()
        if item in catalog:
            spec = catalog[item]
            model_dir = snapshot_dir(spec.repo, spec.revision)
            if not (model_dir / "config.json").is_file():
                raise ConfigError(f"model {item!r} is not downloaded: run `darkbloom-agent models pull {item}`")
            entries[item] = ModelEntry.from_dir(item, model_dir, spec)
        elif (path / "config.json").is_file():
            entries[path.name] = ModelEntry.from_dir(path.name, path)
        else:
            raise ConfigError(f"model {item!r} is neither a catalog id ({', '.join(sorted(catalog))}) "
                              "nor a model directory with a config.json")
    if not entries:
        raise ConfigError("no models to serve: give --model ID_OR_DIR (or `models` in the config)")
    return entries


def system_memory() -> MemoryReading:
    memory = psutil.virtual_memory()
    return MemoryReading(total_bytes=memory.total, available_bytes=memory.available)


def mlx_engine_factory(entries: Mapping[str, ModelEntry], engine_config: EngineConfig):
    from agent.engine.mlx_engine import MLXEngine

    return MLXEngine(entries, config=engine_config)


class Daemon:
    def __init__(self, config: AgentConfig, entries: Mapping[str, ModelEntry], hardware: Hardware, *,
                 engine_factory: EngineFactory = mlx_engine_factory,
                 read_memory: Callable[[], MemoryReading] = system_memory, sleep_guard: SleepGuard | None = None):
        self.config = config
        idle = config.unload_after_minutes * 60 if config.idle_policy == "unload_after_minutes" else None
        engine_config = EngineConfig(operator_reserve_bytes=config.operator_reserve_bytes, idle_unload_after_s=idle,
                                     load_vision=config.load_vision,
                                     max_prefix_cache_bytes=config.max_prefix_cache_bytes,
                                     max_reported_prefix_chains=config.max_reported_prefix_chains,
                                     image_limits=ImageLimits(config.max_image_bytes, config.max_image_pixels))
        self.engine = engine_factory(entries, engine_config)
        self.handler = LinkHandler(self.engine, {k: e.spec for k, e in entries.items()}, hardware, read_memory,
                                 operator_reserve_bytes=config.operator_reserve_bytes)
        token = config.provider_token.get_secret_value() if config.provider_token else ""
        self.link = Link(config.coordinator_url, token, self.handler)
        self.sleep_guard = sleep_guard or SleepGuard()
        self.started_at = time.time()
        self.should_exit = asyncio.Event()
        self.status_changed = asyncio.Event()
        self.tasks = TaskSet("daemon")
        self.engine.add_listener(self._slot_changed)

    async def run(self, *, install_signals: bool = True) -> int:
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.should_exit.set)
        await self.engine.start()
        link_task = asyncio.create_task(self.link.run(), name="link")  # awaited below: its error decides the code
        self.tasks.spawn(self._keep_status(), name="status")
        self.tasks.spawn(self._load_all(), name="load")
        stop_task = asyncio.create_task(self.should_exit.wait(), name="should-exit")
        done, _ = await asyncio.wait({link_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        refusal = link_task.exception() if link_task in done else None
        if isinstance(refusal, LinkRefused):
            log.error("agent.link_refused", code=refusal.code, error=str(refusal))
            code = refusal.exit_code
        else:
            await self.drain()
        for task in (link_task, stop_task):
            task.cancel()
        await asyncio.gather(link_task, stop_task, return_exceptions=True)
        await self.tasks.close()
        await self.handler.close()
        await self.engine.stop()
        self.sleep_guard.close()
        self._write_status("stopped")
        log.info("agent.stopped", code=code)
        return code

    async def _load_all(self) -> None:
        for model in self.handler.specs:
            try:
                await self.engine.load(model)
            except EngineError as exc:
                log.warning("slot.load_refused", model=model, code=exc.code, reason=str(exc))
                self.handler.state_changed.set()  # refused: still cold, no transition to report it

    async def drain(self) -> None:
        """Stop accepting; let streams finish until the deadline; cancel what is left; close the link once
        the last frames are sent."""
        deadline = time.monotonic() + self.config.drain_deadline_s
        self.handler.draining = True
        self.handler.state_changed.set()
        self.status_changed.set()
        log.info("agent.drain", in_flight=self.handler.num_in_flight, deadline_s=self.config.drain_deadline_s)
        # A request that arrives meanwhile is refused at once, as its own task: the loop waits for it too.
        while self.handler.tasks and (remaining := deadline - time.monotonic()) > 0:
            await asyncio.wait(list(self.handler.tasks.values()), timeout=remaining)
        for request_id in list(self.handler.tasks):
            await self.handler.cancel(request_id)
        pending = list(self.handler.tasks.values())
        if pending:
            await asyncio.wait(pending, timeout=CANCEL_GRACE_S)
        await self.link.close()

    def _slot_changed(self, change: SlotTransition) -> None:
        self.status_changed.set()

    async def _keep_status(self) -> None:
        """On every slot transition, and every STATUS_INTERVAL_S (for the uptime, and to restart a
        caffeinate that died): the sleep assertion and the status file."""
        while True:
            running = any(slot.state is SlotState.RUNNING for slot in self.engine.snapshot().slots)
            self.sleep_guard.update(running)
            self._write_status("draining" if self.handler.draining else "running")
            try:
                async with asyncio.timeout(STATUS_INTERVAL_S):
                    await self.status_changed.wait()
            except TimeoutError:
                pass
            self.status_changed.clear()

    def _write_status(self, state: str) -> None:
        slots = [slot.heartbeat() | {"weights_bytes": slot.weights_bytes, "reason": slot.reason}
                 for slot in self.engine.snapshot().slots]
        try:
            write_status(self.config.status_path, {
                "pid": os.getpid(), "state": state, "started_at": self.started_at,
                "uptime_s": round(time.time() - self.started_at, 1), "coordinator_url": self.config.coordinator_url,
                "link": self.link.state.value, "provider_id": self.handler.provider_id,
                "num_in_flight": self.handler.num_in_flight, "num_served": self.handler.num_served, "slots": slots,
            })
        except OSError as exc:
            log.warning("status.write_failed", path=str(self.config.status_path), error=str(exc))
