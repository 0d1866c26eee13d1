"""The coordinator process: one Starlette app on uvicorn (startup → main loop → shutdown).

    serve(host, port, db_path, ...)    what `darkbloom-agent coordinator` runs (blocks until a signal)
    build_app(accounts, settings)      the ASGI app, for tests and embedding
    running(app, host, port)           async context manager: the app served in this event loop (tests, bench)

Local by default: bound to 127.0.0.1, no consumer keys (open mode: one local account, no billing) and
any provider token, unless a database of keys (--db) and a provider token are configured. Exposing an
open coordinator on a non-loopback address is refused unless `allow_open_remote` says it is meant.

    event_loop_factory()               the event loop `serve` runs on (uvicorn's choice), for a host that embeds it

Public names: serve, build_app, running, check_exposure, event_loop_factory, RunningServer, EmbeddedServer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute

from agent.catalog import ModelSpec
from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.identities import list_identities
from agent.coordinator.billing.ratelimit import RateLimits
from agent.coordinator.core import Coordinator
from agent.coordinator.http.access_log import AccessLog
from agent.coordinator.http.api import routes
from agent.coordinator.http.denial_log import install_denial_filter
from agent.coordinator.http.error_pages import EXCEPTION_HANDLERS
from agent.coordinator.http.frame_tap import with_frame_tap
from agent.coordinator.http.gc_tuning import tune_gc
from agent.coordinator.http.head_deadline import with_head_deadline
from agent.coordinator.http.provider_ws import ProviderEndpoint
from agent.coordinator.reputations import keep_saving, save_final_reputations
from agent.coordinator.settings import DEFAULT_HOST, DEFAULT_PORT, CoordinatorSettings, is_loopback_host
from agent.errors import ConfigError
from agent.wire.protocol import MAX_FRAME_BYTES

log = structlog.get_logger("agent.coordinator")


def build_app(accounts: Accounts | None = None, settings: CoordinatorSettings | None = None, *,
              catalog: dict[str, ModelSpec] | None = None, clock: Callable[[], float] = time.monotonic,
              owns_accounts: bool = False) -> Starlette:
    """The app; `app.state.coordinator` is its Coordinator (router, accounts, metrics)."""
    accounts = accounts if accounts is not None else Accounts.open()
    coordinator = Coordinator(accounts, settings, catalog=catalog, clock=clock)
    endpoint = ProviderEndpoint(coordinator)
    install_denial_filter()

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        evictions = asyncio.create_task(coordinator.run_evictions(), name="coordinator-evictions")
        db_path = getattr(accounts.ledger, "db_path", None)  # identities' reputations are saved beside them
        saves = asyncio.create_task(keep_saving(coordinator.router, db_path), name="coordinator-reputation") \
            if db_path is not None else None
        log.info("coordinator.start", mode="open" if accounts.is_open else "keys",
                 provider_token=coordinator.settings.provider_token is not None,
                 heartbeat_interval_s=coordinator.settings.heartbeat_interval_s)
        try:
            yield
        finally:
            for task in (evictions, saves):
                if task is not None:
                    task.cancel()
            await asyncio.gather(*(t for t in (evictions, saves) if t is not None), return_exceptions=True)
            if db_path is not None:
                save_final_reputations(coordinator.router, db_path)
            endpoint.close_all("the coordinator is shutting down")
            unwritten = accounts.close() if owns_accounts else []
            log.info("coordinator.stop", num_unwritten_charges=len(unwritten))

    app = Starlette(routes=[*routes(coordinator), WebSocketRoute("/ws/provider", endpoint)], lifespan=lifespan,
                    exception_handlers=EXCEPTION_HANDLERS, middleware=[Middleware(AccessLog)])
    app.state.coordinator = coordinator
    app.state.provider_endpoint = endpoint
    return app


def check_exposure(host: str, *, is_open: bool, provider_token: str | None, allow_open_remote: bool,
                   has_provider_identities: bool = False) -> None:
    """Refuse an open coordinator (no consumer keys, or any provider token) on a non-loopback address.
    Provider identities in the database stand in for the shared token (provider_auth.py)."""
    if is_loopback_host(host) or allow_open_remote:
        return
    missing = [what for what, is_missing in (("consumer API keys (--db)", is_open),
                                             ("a provider token (--provider-token) or provider identities",
                                              provider_token is None and not has_provider_identities))
               if is_missing]
    if missing:
        raise ConfigError(f"refusing to serve on {host} without {' and '.join(missing)}: anyone who can reach it "
                          "could use or impersonate providers. Configure them, bind 127.0.0.1, or pass "
                          "--allow-open-remote if that is really meant.")


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, db_path: str | Path | None = None, *,
          open_mode: bool | None = None, provider_token: str | None = None, allow_open_remote: bool = False,
          queue_depth: int | None = None, queue_max_wait_s: float | None = None,
          heartbeat_interval_s: float | None = None, settings: CoordinatorSettings | None = None,
          rate_limits: RateLimits | None = None, operator_token: str | None = None,
          open_requests_per_minute_per_ip: int | None = None, log_level: str = "info") -> None:
    """Run the coordinator until SIGINT/SIGTERM. Open mode (no keys, no billing) unless `db_path` is given.
    With keys, every account is rate limited (`rate_limits`, RateLimits.generous() unless given; an account's
    own limits in the database win); in open mode every client address is (the settings' default unless
    `open_requests_per_minute_per_ip` is given; 0: unlimited)."""
    is_open = db_path is None if open_mode is None else open_mode
    if is_open and db_path is not None:
        raise ConfigError("--open and --db exclude each other: open mode has no keys and no billing")
    if not is_open and db_path is None:
        raise ConfigError("keys and billing need an accounts database: pass --db PATH")
    overrides = {name: value for name, value in (
        ("provider_token", provider_token), ("queue_depth", queue_depth), ("queue_max_wait_s", queue_max_wait_s),
        ("heartbeat_interval_s", heartbeat_interval_s), ("operator_token", operator_token)) if value is not None}
    if open_requests_per_minute_per_ip is not None:
        overrides["open_requests_per_minute_per_ip"] = open_requests_per_minute_per_ip or None
    settings = replace(settings or CoordinatorSettings(), **overrides)
    has_identities = not is_open and db_path is not None and bool(list_identities(db_path))
    check_exposure(host, is_open=is_open, provider_token=settings.provider_token, allow_open_remote=allow_open_remote,
                   has_provider_identities=has_identities or settings.require_provider_identity)
    accounts = served_accounts(db_path if not is_open else None, rate_limits, settings)
    app = build_app(accounts, settings, owns_accounts=True)
    tune_gc(settings)
    uvicorn.Server(_config(app, host, port, log_level)).run()


def served_accounts(db_path: str | Path | None, rate_limits: RateLimits | None = None,
                    settings: CoordinatorSettings = CoordinatorSettings()) -> Accounts:
    """The accounts `serve` runs with: open (no keys) without a database, else keyed and rate limited by default."""
    if db_path is None:
        return Accounts.open()
    return Accounts.from_db(db_path, limits=rate_limits if rate_limits is not None else RateLimits.generous(),
                            max_backlog_entries=settings.ledger_max_backlog_entries,
                            retry_max_s=settings.ledger_retry_max_s)


def _config(app: Starlette, host: str, port: int, log_level: str) -> uvicorn.Config:
    settings: CoordinatorSettings = app.state.coordinator.settings
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
                          ws=with_frame_tap(), ws_max_size=MAX_FRAME_BYTES + 64 * 1024, timeout_graceful_shutdown=5,
                          log_config=None,
                          http=with_head_deadline(settings.http_head_timeout_s, settings.http_max_header_bytes,
                                                  httptools=settings.http_parser != "h11"),
                          limit_concurrency=settings.http_max_connections,
                          timeout_keep_alive=settings.http_keep_alive_s,
                          h11_max_incomplete_event_size=settings.http_max_header_bytes)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when it is installed (what uvicorn's default `loop="auto"` gives `serve`), else asyncio's:
    a host that embeds the coordinator with `running` (the relay benchmark) runs on the loop `serve` would."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


@dataclass(slots=True)
class RunningServer:
    app: Starlette
    server: uvicorn.Server
    host: str
    port: int

    @property
    def coordinator(self) -> Coordinator:
        return self.app.state.coordinator

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws/provider"


class EmbeddedServer(uvicorn.Server):
    """uvicorn's own startup → main loop → shutdown (`serve`), for a server inside a host's event loop.

    Two public hooks of uvicorn.Server are narrowed: `startup` also sets `is_serving`, so whoever waits
    for the socket wakes on an event instead of polling `started`; `capture_signals` leaves SIGINT and
    SIGTERM to the host program (a test run, a benchmark), which stops the server with `should_exit`.
    tests/test_coordinator_embedded_server.py pins both to the uvicorn range of pyproject.toml."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.is_serving = asyncio.Event()

    async def startup(self, sockets=None) -> None:
        try:
            await super().startup(sockets)
        except SystemExit as exc:
            # uvicorn exits the whole process when it cannot start; inside a host's loop that is a crash.
            if not self.lifespan.should_exit:  # the app started: stop it again before saying why
                await self.lifespan.shutdown()
            cause = exc.__context__ if isinstance(exc.__context__, OSError) else "the app's startup failed"
            raise ConfigError(f"the coordinator could not start on {self.config.host}:{self.config.port}: "
                              f"{cause}") from None
        if self.started:
            self.is_serving.set()

    def capture_signals(self) -> AbstractContextManager[None]:
        return nullcontext()


@asynccontextmanager
async def running(app: Starlette, host: str = "127.0.0.1", port: int = 0,
                  log_level: str = "warning") -> AsyncIterator[RunningServer]:
    """Serve `app` in the running event loop (port 0: any free port) until the block ends."""
    server = EmbeddedServer(_config(app, host, port, log_level))
    task = asyncio.create_task(server.serve(), name="coordinator-server")
    serving = asyncio.create_task(server.is_serving.wait(), name="coordinator-serving")
    await asyncio.wait((task, serving), return_when=asyncio.FIRST_COMPLETED)
    if not server.is_serving.is_set():
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        task.result()  # startup failed: raise why
        raise RuntimeError("the coordinator server stopped during startup")
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningServer(app, server, host, bound)
    finally:
        server.should_exit = True
        await task
