"""Keep the Mac awake while a model slot is serving, and let it sleep when every slot is idle.

    guard = SleepGuard()              # start_process defaults to subprocess.Popen
    guard.update(any_running=True)    # starts `caffeinate -i -w <our pid>`
    guard.update(any_running=False)   # terminates it
    guard.close()                     # on shutdown

`caffeinate -i` holds a "prevent idle system sleep" assertion for as long as it runs, and `-w <pid>`
ends it when the agent's process ends, so a crashed agent never leaves the Mac unable to sleep. The
display may still sleep, and closing a laptop's lid still sleeps it: only idle sleep is prevented.
Off macOS there is no caffeinate and the guard does nothing (`is_supported` is False).

The daemon calls `update` on every slot state change and may call it on every heartbeat too: a
repeated call with the same answer costs nothing, and a caffeinate that died is started again.

Public names: SleepGuard, Process, ProcessStarter, start_process, caffeinate_argv.
"""

from __future__ import annotations

import os
import platform
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from agent.logs import get_logger

log = get_logger()
TERMINATE_WAIT_S = 2.0


class Process(Protocol):
    """The part of subprocess.Popen the guard uses."""

    pid: int

    def poll(self) -> int | None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


ProcessStarter = Callable[[Sequence[str]], Process]


def start_process(argv: Sequence[str]) -> Process:
    return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, close_fds=True)


def caffeinate_argv(pid: int) -> list[str]:
    return ["/usr/bin/caffeinate", "-i", "-w", str(pid)]


class SleepGuard:
    def __init__(
        self, *, start_process: ProcessStarter = start_process, pid: int | None = None, system: str | None = None
    ) -> None:
        self._start = start_process
        self._pid = os.getpid() if pid is None else pid
        self.is_supported = (system or platform.system()).lower() == "darwin"
        self._process: Process | None = None
        self._failed = False  # caffeinate could not be started once: say so once, then stop trying
        self._lock = threading.Lock()  # slot state changes may come from more than one thread

    @property
    def is_held(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def update(self, any_running: bool) -> None:
        """Hold the assertion while any slot is running; release it when none is."""
        if not self.is_supported:
            return
        with self._lock:
            if any_running and not self.is_held:
                self._hold()
            elif not any_running and self._process is not None:
                self._release()

    def close(self) -> None:
        with self._lock:
            if self._process is not None:
                self._release()

    def _hold(self) -> None:
        if self._failed:
            return
        restarted = self._process is not None
        argv = caffeinate_argv(self._pid)
        try:
            self._process = self._start(argv)
        except OSError as exc:
            self._failed = True
            self._process = None
            log.warning("sleep.hold_failed", argv=" ".join(argv), error=str(exc),
                        advice="the Mac may sleep while serving; check System Settings > Energy")
            return
        log.info("sleep.hold", caffeinate_pid=self._process.pid, restarted=restarted)

    def _release(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=TERMINATE_WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=TERMINATE_WAIT_S)
        log.info("sleep.release", caffeinate_pid=process.pid)
