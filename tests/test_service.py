from __future__ import annotations

import plistlib
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.daemon.launch_agent import (
    LABEL,
    CommandResult,
    LaunchAgentService,
    ServiceError,
    ServiceUnsupported,
    default_program,
    install_service,
    launch_agent,
    parse_launchctl_print,
    plist_problems,
    render_plist,
)

UID = 501
TARGET = f"gui/{UID}/{LABEL}"
PRINT_RUNNING = (Path(__file__).parent / "fixtures" / "launchd" / "launchctl_print_running.txt").read_text()
NOT_FOUND = CommandResult(113, "", f'Bad request.\nCould not find service "{LABEL}" in domain for user gui: {UID}\n')


class FakeLaunchd:
    """launchctl as launchd answers it: a job is loaded or not; after bootout it is still found by the next
    `stop_polls` prints (the agent draining), and gone after that."""

    def __init__(self, *, loaded: bool = False, stop_polls: int = 0, disabled: bool = False,
                 never_stops: bool = False, bootstrap_error: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.loaded, self.disabled, self.never_stops = loaded, disabled, never_stops
        self.stop_polls = stop_polls
        self.stopping: int | None = None
        self.bootstrap_error = bootstrap_error
        self.plist: dict | None = None

    def verbs(self) -> list[str]:
        return [call[1] for call in self.calls]

    def __call__(self, argv: Sequence[str]) -> CommandResult:
        self.calls.append(list(argv))
        assert argv[0] == "launchctl"
        return getattr(self, f"_{argv[1]}")(*argv[2:])

    def _print(self, target: str) -> CommandResult:
        assert target == TARGET
        if self.stopping is not None and not self.never_stops:
            self.stopping -= 1
            if self.stopping < 0:
                self.loaded, self.stopping = False, None
        return CommandResult(0, PRINT_RUNNING) if self.loaded else NOT_FOUND

    def _bootout(self, target: str) -> CommandResult:
        assert target == TARGET
        if not self.loaded:
            return CommandResult(3, "", "Boot-out failed: 3: No such process\n")
        self.stopping = self.stop_polls
        return CommandResult(0)

    def _enable(self, target: str) -> CommandResult:
        self.disabled = False
        return CommandResult(0)

    def _bootstrap(self, domain: str, path: str) -> CommandResult:
        assert domain == f"gui/{UID}"
        if self.bootstrap_error or self.disabled or self.loaded:
            message = self.bootstrap_error or ("119: Service is disabled" if self.disabled else "5: Input/output error")
            return CommandResult(5, "", f"Bootstrap failed: {message}\n")
        self.plist = plistlib.loads(Path(path).read_bytes())
        self.loaded = True
        return CommandResult(0)

    def _kickstart(self, target: str) -> CommandResult:
        return CommandResult(0) if self.loaded else NOT_FOUND


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "darkbloom-agent").write_text("#!/bin/sh\n")
    (tmp_path / ".config" / "darkbloom").mkdir(parents=True)
    (tmp_path / ".config" / "darkbloom" / "agent.toml").write_text('coordinator_url = "wss://coord.example/agent"\n')
    return tmp_path


def service_for(home: Path, launchd: FakeLaunchd, clock: FakeClock | None = None, **kwargs) -> LaunchAgentService:
    clock = clock or FakeClock()
    return LaunchAgentService(home=home, uid=UID, run=launchd, system="Darwin", clock=clock, sleep=clock.sleep,
                              **kwargs)


def plist_for(home: Path, **kwargs) -> dict:
    return launch_agent(home / "bin" / "darkbloom-agent", home / ".config" / "darkbloom" / "agent.toml", home,
                        **kwargs)


def test_install_writes_the_plist_to_launch_agents_then_enables_bootstraps_and_kickstarts(home):
    launchd = FakeLaunchd()
    status = service_for(home, launchd).install(plist_for(home))
    written = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    assert plistlib.loads(written.read_bytes()) == plist_for(home) == launchd.plist
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    assert (home / "Library" / "Logs" / "darkbloom").is_dir()
    assert launchd.calls == [["launchctl", "print", TARGET], ["launchctl", "enable", TARGET],
                             ["launchctl", "bootstrap", f"gui/{UID}", str(written)],
                             ["launchctl", "kickstart", TARGET], ["launchctl", "print", TARGET]]
    assert status.is_installed and status.is_loaded and status.state == "running" and status.pid == 4242


def test_install_over_a_running_agent_boots_it_out_and_waits_until_launchd_has_let_it_go(home):
    launchd, clock = FakeLaunchd(loaded=True, stop_polls=3), FakeClock()
    service_for(home, launchd, clock).install(plist_for(home))
    verbs = launchd.verbs()
    assert verbs[:2] == ["print", "bootout"]
    assert verbs[verbs.index("bootout") + 1:verbs.index("enable")] == ["print"] * 4  # 3 still loaded, then gone
    assert len(clock.slept) == 3 and launchd.loaded


def test_installing_twice_leaves_the_same_plist_and_one_loaded_job(home):
    launchd = FakeLaunchd()
    service = service_for(home, launchd)
    service.install(plist_for(home))
    first = service.plist_path.read_bytes()
    status = service.install(plist_for(home))
    assert service.plist_path.read_bytes() == first and status.is_loaded
    assert launchd.verbs().count("bootstrap") == 2 and launchd.verbs().count("bootout") == 1
    assert list(service.plist_path.parent.iterdir()) == [service.plist_path]


def test_an_agent_that_does_not_stop_in_time_fails_the_install_before_bootstrap(home):
    launchd, clock = FakeLaunchd(loaded=True, never_stops=True), FakeClock()
    with pytest.raises(ServiceError, match="still loaded 140 s after `launchctl bootout`"):
        service_for(home, launchd, clock).install(plist_for(home))
    assert "bootstrap" not in launchd.verbs() and clock.now >= 140


def test_a_disabled_service_is_enabled_again_so_bootstrap_succeeds(home):
    launchd = FakeLaunchd(disabled=True)
    assert service_for(home, launchd).install(plist_for(home)).is_loaded


def test_a_failing_bootstrap_reports_what_launchctl_said_and_where_to_look(home):
    launchd = FakeLaunchd(bootstrap_error="5: Input/output error")
    with pytest.raises(ServiceError, match=r"launchctl bootstrap .* failed \(Bootstrap failed: 5: Input/output"):
        service_for(home, launchd).install(plist_for(home))


def test_install_refuses_a_program_in_documents_before_touching_launchd(home):
    program = home / "Documents" / "darkbloom" / ".venv" / "bin" / "darkbloom-agent"
    plist = launch_agent(program, home / ".config" / "darkbloom" / "agent.toml", home)
    launchd = FakeLaunchd()
    with pytest.raises(ServiceError, match="protects from background agents"):
        service_for(home, launchd).install(plist)
    assert launchd.calls == [] and not (home / "Library" / "LaunchAgents").exists()


def test_install_refuses_a_missing_program_or_config_that_launchd_would_restart_forever(home):
    (home / ".config" / "darkbloom" / "agent.toml").unlink()
    with pytest.raises(ServiceError, match="agent.toml does not exist"):
        service_for(home, FakeLaunchd()).install(plist_for(home))


def test_uninstall_stops_the_agent_and_removes_the_plist_and_a_second_uninstall_does_nothing(home):
    launchd = FakeLaunchd()
    service = service_for(home, launchd)
    service.install(plist_for(home))
    assert service.uninstall() is True
    assert not service.plist_path.exists() and not launchd.loaded
    assert (home / "Library" / "Logs" / "darkbloom").is_dir()
    calls = len(launchd.calls)
    assert service.uninstall() is False
    assert launchd.verbs()[calls:] == ["print"]


def test_status_reads_state_pid_and_last_exit_from_launchctl_print(home):
    launchd = FakeLaunchd()
    service = service_for(home, launchd)
    service.install(plist_for(home))
    status = service.status()
    assert (status.state, status.pid, status.last_exit) == ("running", 4242, "1")
    assert status.details["exit timeout"] == "130"
    assert status.describe() == f"{LABEL}: running, pid 4242, last exit 1 (plist {service.plist_path})"


def test_status_of_a_mac_without_the_service_says_how_to_install_it(home):
    status = service_for(home, FakeLaunchd()).status()
    assert not status.is_installed and not status.is_loaded
    assert "run `darkbloom-agent service install`" in status.describe()


def test_restart_boots_out_and_bootstraps_the_installed_plist_without_rewriting_it(home):
    launchd = FakeLaunchd()
    service = service_for(home, launchd)
    service.install(plist_for(home))
    service.plist_path.write_bytes(render_plist(plist_for(home, drain_deadline_s=5)))
    before = launchd.verbs()
    status = service.restart()
    assert launchd.verbs()[len(before):] == ["print", "bootout", "print", "enable", "bootstrap", "kickstart", "print"]
    assert status.is_loaded and launchd.plist["ExitTimeOut"] == 15


def test_restart_without_an_installed_plist_says_to_install_first(home):
    with pytest.raises(ServiceError, match="service install` first"):
        service_for(home, FakeLaunchd()).restart()


@pytest.mark.parametrize("action", ["status", "uninstall", "restart"])
def test_every_service_command_on_linux_says_it_is_macos_only(home, action):
    launchd = FakeLaunchd()
    service = LaunchAgentService(home=home, uid=UID, run=launchd, system="Linux")
    with pytest.raises(ServiceUnsupported, match="works only on macOS") as raised:
        getattr(service, action)()
    assert raised.value.code == "service_macos_only" and launchd.calls == []


def test_running_the_service_commands_as_root_is_refused(home):
    service = LaunchAgentService(home=home, uid=0, run=FakeLaunchd(), system="Darwin")
    with pytest.raises(ServiceError, match="without sudo"):
        service.status()


def test_install_service_takes_exit_timeout_from_the_config_drain_deadline(home):
    config = home / ".config" / "darkbloom" / "agent.toml"
    config.write_text('coordinator_url = "wss://coord.example/agent"\ndrain_deadline_s = 299.5\n')
    launchd = FakeLaunchd()
    status = install_service(config, program=home / "bin" / "darkbloom-agent", service=service_for(home, launchd))
    assert status.is_loaded
    assert launchd.plist["ExitTimeOut"] == 310
    program = str(home / "bin" / "darkbloom-agent")
    assert launchd.plist["ProgramArguments"] == [program, "start", "--config", str(config)]


def test_install_service_refuses_a_config_without_a_coordinator_since_the_agent_would_exit_at_once(home):
    config = home / ".config" / "darkbloom" / "agent.toml"
    config.write_text("log_level = 'debug'\n")
    launchd = FakeLaunchd()
    with pytest.raises(ServiceError, match="set coordinator_url first"):
        install_service(config, program=home / "bin" / "darkbloom-agent", service=service_for(home, launchd))
    assert launchd.calls == []


def test_the_rendered_plist_round_trips_through_plistlib_with_every_required_key(home):
    plist = plist_for(home)
    xml = render_plist(plist)
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist')
    assert plistlib.loads(xml) == plist
    assert plist_problems(plist, home) == []
    assert list(plist)[:2] == ["Label", "ProgramArguments"]
    assert plist["StandardOutPath"] == str(home / "Library" / "Logs" / "darkbloom" / "agent.log")
    assert plist["EnvironmentVariables"]["PATH"].split(":")[:2] == [str(home / "bin"), "/opt/homebrew/bin"]


@pytest.mark.parametrize("key, value, complaint", [
    ("KeepAlive", True, "KeepAlive must be"),
    ("RunAtLoad", False, "RunAtLoad must be"),
    ("ThrottleInterval", 1, "ThrottleInterval must be"),
    ("ProcessType", "Background", "ProcessType must be"),
    ("Label", "darkbloom", "reverse-DNS"),
    ("ProgramArguments", ["darkbloom-agent", "start", "--config", "/c.toml"], "program must be an absolute path"),
    ("StandardErrorPath", "/tmp/agent.err.log", "StandardErrorPath must be in"),
    ("StandardOutPath", "HOME/Downloads/agent.log", "protects from background agents"),
    ("EnvironmentVariables", {"PATH": "bin:/usr/bin"}, "PATH must be a list of absolute directories"),
])
def test_plist_problems_name_each_broken_key(home, key, value, complaint):
    plist = plist_for(home) | {key: value.replace("HOME", str(home)) if isinstance(value, str) else value}
    assert any(complaint in problem for problem in plist_problems(plist, home))


def test_parsing_launchctl_print_keeps_only_the_services_own_top_level_fields():
    fields = parse_launchctl_print(PRINT_RUNNING)
    assert fields["state"] == "running" and fields["pid"] == "4242" and fields["runs"] == "3"
    assert "activation rate" not in fields and "PATH => /Users" not in " ".join(fields)
    assert parse_launchctl_print("") == {}


def test_the_default_program_is_the_installed_console_script_beside_this_interpreter():
    program = default_program()
    assert program.is_absolute() and program.name == "darkbloom-agent" and program.is_file()
