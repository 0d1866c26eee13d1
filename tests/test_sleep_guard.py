from __future__ import annotations

import subprocess
from collections.abc import Sequence

from agent.daemon.sleep_guard import Process, ProcessStarter, SleepGuard, caffeinate_argv, start_process


class FakeProcess:
    def __init__(self, pid: int, *, ignores_terminate: bool = False) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.ignores_terminate = ignores_terminate
        self.signals: list[str] = []

    def poll(self) -> int | None:
        return self.returncode

    def terminate(self) -> None:
        self.signals.append("TERM")
        if not self.ignores_terminate:
            self.returncode = -15

    def kill(self) -> None:
        self.signals.append("KILL")
        self.returncode = -9

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            raise subprocess.TimeoutExpired("caffeinate", timeout or 0)
        return self.returncode


class FakeStarter:
    def __init__(self, *, fail: bool = False, ignores_terminate: bool = False) -> None:
        self.started: list[list[str]] = []
        self.processes: list[FakeProcess] = []
        self.fail = fail
        self.ignores_terminate = ignores_terminate

    def __call__(self, argv: Sequence[str]) -> FakeProcess:
        self.started.append(list(argv))
        if self.fail:
            raise FileNotFoundError(2, "No such file or directory", argv[0])
        process = FakeProcess(1000 + len(self.processes), ignores_terminate=self.ignores_terminate)
        self.processes.append(process)
        return process


def mac_guard(starter: ProcessStarter, pid: int = 4242) -> SleepGuard:
    return SleepGuard(start_process=starter, pid=pid, system="Darwin")


def test_going_busy_starts_caffeinate_that_prevents_idle_sleep_and_follows_the_agent_pid():
    starter = FakeStarter()
    guard = mac_guard(starter)
    guard.update(any_running=True)
    assert starter.started == [["/usr/bin/caffeinate", "-i", "-w", "4242"]]
    assert guard.is_held


def test_staying_busy_keeps_one_caffeinate_however_often_the_daemon_asks():
    starter = FakeStarter()
    guard = mac_guard(starter)
    for _ in range(5):
        guard.update(any_running=True)
    assert len(starter.started) == 1


def test_going_idle_terminates_caffeinate_and_going_busy_again_starts_a_new_one():
    starter = FakeStarter()
    guard = mac_guard(starter)
    guard.update(any_running=True)
    guard.update(any_running=False)
    assert starter.processes[0].signals == ["TERM"]
    assert not guard.is_held
    guard.update(any_running=False)
    assert starter.processes[0].signals == ["TERM"]
    guard.update(any_running=True)
    assert len(starter.started) == 2 and guard.is_held


def test_a_caffeinate_that_died_while_busy_is_started_again_on_the_next_update():
    starter = FakeStarter()
    guard = mac_guard(starter)
    guard.update(any_running=True)
    starter.processes[0].returncode = 1
    assert not guard.is_held
    guard.update(any_running=True)
    assert len(starter.started) == 2 and guard.is_held


def test_a_caffeinate_that_ignores_terminate_is_killed():
    starter = FakeStarter(ignores_terminate=True)
    guard = mac_guard(starter)
    guard.update(any_running=True)
    guard.update(any_running=False)
    assert starter.processes[0].signals == ["TERM", "KILL"]


def test_closing_the_guard_releases_a_held_assertion():
    starter = FakeStarter()
    guard = mac_guard(starter)
    guard.update(any_running=True)
    guard.close()
    assert not guard.is_held and starter.processes[0].signals == ["TERM"]
    guard.close()
    assert starter.processes[0].signals == ["TERM"]


def test_off_macos_the_guard_is_unsupported_and_starts_nothing():
    starter = FakeStarter()
    guard = SleepGuard(start_process=starter, pid=1, system="Linux")
    assert not guard.is_supported
    guard.update(any_running=True)
    guard.close()
    assert starter.started == [] and not guard.is_held


def test_a_missing_caffeinate_is_reported_once_and_never_breaks_serving():
    starter = FakeStarter(fail=True)
    guard = mac_guard(starter)
    guard.update(any_running=True)
    guard.update(any_running=True)
    guard.update(any_running=False)
    assert len(starter.started) == 1 and not guard.is_held


def test_the_default_starter_runs_a_real_process_that_the_guard_terminates_and_reaps():
    started: list[Process] = []

    def sleeper(argv: Sequence[str]) -> Process:
        assert argv == caffeinate_argv(4242)
        started.append(start_process(["sleep", "30"]))  # caffeinate exists only on macOS
        return started[-1]

    guard = mac_guard(sleeper)
    guard.update(any_running=True)
    assert started[0].poll() is None
    guard.update(any_running=False)
    assert started[0].poll() is not None
