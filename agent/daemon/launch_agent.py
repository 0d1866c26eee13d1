"""The Mac owner's LaunchAgent: render its plist, install it into launchd, report on it, restart it.

    plist = launch_agent(program, config, home)        # a dict; render_plist(plist) -> XML bytes
    service = LaunchAgentService.for_current_user()    # macOS only; ServiceUnsupported elsewhere
    service.install(plist) / .uninstall() / .status() / .restart();  install_service(config) does it all

install writes ~/Library/LaunchAgents/<label>.plist, then `launchctl bootout gui/<uid>/<label>`, waits
until `launchctl print` no longer finds the job, `enable`s it (a `launchctl disable` outlives bootouts),
`bootstrap gui/<uid> <plist>` and `kickstart`: idempotent. restart is the same without the write.
bootout sends SIGTERM and launchd waits ExitTimeOut (the drain deadline, not its default 20 s) before
SIGKILL, so streams drain. Nothing may live under ~/Desktop, ~/Documents or ~/Downloads: macOS privacy
protection (TCC) denies a LaunchAgent access there. Commands go through an injected runner.

Public names: LABEL, LaunchAgentService, ServiceStatus, ServiceError, ServiceUnsupported, CommandResult,
CommandRunner, run_command, install_service, launch_agent, render_plist, plist_problems,
parse_launchctl_print, default_program, DEFAULT_PATH.
"""

from __future__ import annotations

import math
import os
import platform
import plistlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import DarkbloomError

LABEL = "com.darkbloom.agent"
DEFAULT_PATH = "/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
DEFAULT_DRAIN_DEADLINE_S = 120.0  # AgentConfig's default
THROTTLE_INTERVAL_S = 10
PROTECTED_FOLDERS = ("Desktop", "Documents", "Downloads")
_REVERSE_DNS = re.compile(r"^[a-z][a-z0-9-]*(\.[A-Za-z0-9-]+){2,}$")
_POLL_S = 0.25


class ServiceError(DarkbloomError):
    code = "service_failed"


class ServiceUnsupported(ServiceError):
    code = "service_macos_only"


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    stdout: str = ""
    stderr: str = ""


CommandRunner = Callable[[Sequence[str]], CommandResult]


def run_command(argv: Sequence[str]) -> CommandResult:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    return CommandResult(done.returncode, done.stdout, done.stderr)


def default_program() -> Path:
    """The installed `darkbloom-agent` script: beside this interpreter (venv, pipx, uv tool), else on PATH."""
    beside = Path(sys.executable).parent / "darkbloom-agent"
    found = beside if beside.is_file() else shutil.which("darkbloom-agent")
    if not found:
        raise ServiceError("cannot find the installed darkbloom-agent command; install the package "
                           "(e.g. `pipx install darkbloom-agent`) or pass --program with its absolute path")
    return Path(found).absolute()


def log_dir(home: Path) -> Path:
    """Where launchd writes the agent's stdout (agent.log) and stderr (agent.err.log)."""
    return home / "Library" / "Logs" / "darkbloom"


def launch_agent(
    program: Path, config: Path, home: Path, *, path_env: str | None = None,
    drain_deadline_s: float = DEFAULT_DRAIN_DEADLINE_S, label: str = LABEL,
) -> dict[str, Any]:
    """The LaunchAgent as a plist dict. PATH puts the program's own directory first; launchd SIGKILLs a
    stopping agent after ExitTimeOut, so that is the drain deadline plus time to close the link."""
    logs = log_dir(home)
    if path_env is None:
        path_env = ":".join(dict.fromkeys([str(program.parent), *DEFAULT_PATH.split(":")]))
    return {
        "Label": label,
        "ProgramArguments": [str(program), "start", "--config", str(config)],
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": THROTTLE_INTERVAL_S,
        "ExitTimeOut": math.ceil(drain_deadline_s) + 10,
        "ProcessType": "Interactive",
        "StandardOutPath": str(logs / "agent.log"),
        "StandardErrorPath": str(logs / "agent.err.log"),
        # Unbuffered so a crash loses no log lines: stdout is a file under launchd.
        "EnvironmentVariables": {"PATH": path_env, "PYTHONUNBUFFERED": "1"},
    }


def render_plist(plist: dict[str, Any]) -> bytes:
    return plistlib.dumps(plist, fmt=plistlib.FMT_XML, sort_keys=False)


def plist_problems(plist: dict[str, Any], home: Path) -> list[str]:
    """Everything that would stop this LaunchAgent working as the agent's service; [] when none."""
    expect = {"RunAtLoad": True, "KeepAlive": {"SuccessfulExit": False},
              "ThrottleInterval": THROTTLE_INTERVAL_S, "ProcessType": "Interactive"}
    problems = [f"{key} must be {value!r} (is {plist.get(key)!r})" for key, value in expect.items()
                if plist.get(key) != value]
    if not _REVERSE_DNS.match(str(plist.get("Label", ""))):
        problems.append(f"Label must be a reverse-DNS name (is {plist.get('Label')!r})")
    args = plist.get("ProgramArguments") or []
    if len(args) != 4 or args[1:3] != ["start", "--config"]:
        problems.append(f"ProgramArguments must be [program, 'start', '--config', config] (is {args!r})")
    paths = {"program": args[0] if args else "", "config": args[3] if len(args) > 3 else ""}
    paths |= {key: plist.get(key, "") for key in ("StandardOutPath", "StandardErrorPath")}
    logs = log_dir(home)
    for name, value in paths.items():
        path = Path(str(value))
        if not path.is_absolute():
            problems.append(f"{name} must be an absolute path (is {value!r})")
        elif any(path.is_relative_to(home / folder) for folder in PROTECTED_FOLDERS):
            problems.append(f"{name} {value} is under a folder macOS protects from background agents "
                            f"(~/{', ~/'.join(PROTECTED_FOLDERS)}); install or keep it elsewhere")
        elif name.startswith("Standard") and path.parent != logs:
            problems.append(f"{name} must be in {logs} (is {value})")
    env_path = (plist.get("EnvironmentVariables") or {}).get("PATH", "")
    if not env_path or not all(part.startswith("/") for part in env_path.split(":")):
        problems.append(f"EnvironmentVariables.PATH must be a list of absolute directories (is {env_path!r})")
    return problems


def parse_launchctl_print(text: str) -> dict[str, str]:
    """The service's own `key = value` lines (one tab deep) from `launchctl print gui/<uid>/<label>`.
    The format is not a stable API, so only a few keys are read and none is required."""
    fields = {}
    for line in text.splitlines():
        if line.startswith("\t") and not line.startswith("\t\t") and " = " in line and not line.endswith("{"):
            key, _, value = line.strip().partition(" = ")
            fields.setdefault(key, value)
    return fields


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    label: str
    plist_path: Path
    is_installed: bool  # the plist is in ~/Library/LaunchAgents
    is_loaded: bool  # launchd knows the job
    state: str | None = None  # "running", "not running", ... as launchctl prints it
    pid: int | None = None
    last_exit: str | None = None
    details: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        where = f"plist {self.plist_path}" if self.is_installed else "plist missing"
        if not self.is_loaded:
            advice = "service restart" if self.is_installed else "service install"
            return f"{self.label}: not loaded ({where}); run `darkbloom-agent {advice}`"
        extra = (f", pid {self.pid}" if self.pid else "") + (f", last exit {self.last_exit}" if self.last_exit else "")
        return f"{self.label}: {self.state or 'loaded'}{extra} ({where})"


class LaunchAgentService:
    def __init__(
        self, *, home: Path, uid: int, run: CommandRunner = run_command, system: str | None = None,
        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
        stop_timeout_s: float = DEFAULT_DRAIN_DEADLINE_S + 20, label: str = LABEL,
    ) -> None:
        self.home, self.uid, self.label, self.stop_timeout_s = home, uid, label, stop_timeout_s
        self._run, self._clock, self._sleep = run, clock, sleep
        self._system = (system or platform.system()).lower()

    @classmethod
    def for_current_user(cls, **kwargs: Any) -> LaunchAgentService:
        return cls(home=Path.home(), uid=os.getuid(), **kwargs)

    @property
    def plist_path(self) -> Path:
        return self.home / "Library" / "LaunchAgents" / f"{self.label}.plist"

    @property
    def target(self) -> str:
        return f"gui/{self.uid}/{self.label}"

    def install(self, plist: dict[str, Any]) -> ServiceStatus:
        self.require_supported()
        problems = plist_problems(plist, self.home)
        if plist.get("Label") != self.label:
            problems.append(f"Label must be {self.label!r} (is {plist.get('Label')!r})")
        if problems:
            raise ServiceError("refusing to install the LaunchAgent: " + "; ".join(problems))
        for name, value in (("program", plist["ProgramArguments"][0]), ("config", plist["ProgramArguments"][3])):
            if not Path(value).is_file():
                raise ServiceError(f"the {name} {value} does not exist; launchd would restart a failing agent "
                                   f"every {THROTTLE_INTERVAL_S} s (write it first, or pass another path)")
        Path(plist["StandardOutPath"]).parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(self.plist_path, render_plist(plist))
        return self._reload()

    def restart(self) -> ServiceStatus:
        self.require_supported()
        if not self.plist_path.is_file():
            raise ServiceError(f"{self.plist_path} does not exist; run `darkbloom-agent service install` first")
        return self._reload()

    def uninstall(self) -> bool:
        """Stop the agent and remove its plist; False when there was nothing to remove. Logs are kept."""
        self.require_supported()
        was_loaded = self._stop()
        was_installed = self.plist_path.is_file()
        self.plist_path.unlink(missing_ok=True)
        return was_loaded or was_installed

    def status(self) -> ServiceStatus:
        self.require_supported()
        printed = self._launchctl("print", self.target)
        fields = parse_launchctl_print(printed.stdout) if printed.returncode == 0 else {}
        pid = fields.get("pid", "")
        return ServiceStatus(self.label, self.plist_path, self.plist_path.is_file(), printed.returncode == 0,
                             fields.get("state"), int(pid) if pid.isdigit() else None,
                             fields.get("last exit code"), fields)

    def _reload(self) -> ServiceStatus:
        self._stop()
        self._checked("enable", self.target)
        self._checked("bootstrap", f"gui/{self.uid}", str(self.plist_path))
        self._checked("kickstart", self.target)
        return self.status()

    def _stop(self) -> bool:
        """bootout, then wait until launchd no longer knows the job. True if it was loaded."""
        if not self._is_loaded():
            return False
        bootout = self._launchctl("bootout", self.target)
        deadline = self._clock() + self.stop_timeout_s
        while self._is_loaded():
            if self._clock() >= deadline:
                raise ServiceError(f"{self.target} was still loaded {self.stop_timeout_s:.0f} s after `launchctl "
                                   f"bootout` ({_said(bootout)}); check `launchctl print {self.target}`, try again")
            self._sleep(_POLL_S)
        return True

    def _is_loaded(self) -> bool:
        return self._launchctl("print", self.target).returncode == 0

    def _checked(self, *args: str) -> CommandResult:
        result = self._launchctl(*args)
        if result.returncode != 0:
            raise ServiceError(f"`launchctl {' '.join(args)}` failed ({_said(result)}); see "
                               f"~/Library/Logs/darkbloom/ and `launchctl print {self.target}`")
        return result

    def _launchctl(self, *args: str) -> CommandResult:
        return self._run(["launchctl", *args])

    def require_supported(self) -> None:
        if self._system != "darwin":
            raise ServiceUnsupported("`darkbloom-agent service` manages a macOS LaunchAgent and works only on "
                                     f"macOS (this is {self._system}); elsewhere run `darkbloom-agent start` "
                                     "under your own supervisor (e.g. a systemd user unit)")
        if self.uid == 0:
            raise ServiceError("the LaunchAgent belongs to the Mac owner's login session; run this command as "
                               "that user, without sudo")


def install_service(
    config_path: Path | None = None, *, program: Path | None = None, service: LaunchAgentService | None = None
) -> ServiceStatus:
    """`service install`: check the config `start` will read, render the plist, install and start it."""
    from agent.daemon.config import default_config_path, load_config

    service = service or LaunchAgentService.for_current_user()
    service.require_supported()
    config_path = (config_path or default_config_path()).expanduser().absolute()
    # launchd gives the agent none of this shell's DARKBLOOM_* variables, so check the file alone.
    config = load_config(config_path, env={"HOME": str(service.home)})
    if config.coordinator_url is None:
        raise ServiceError(f"{config_path}: set coordinator_url first; without it the agent would exit at once")
    plist = launch_agent(program or default_program(), config_path, service.home,
                         drain_deadline_s=config.drain_deadline_s)
    return service.install(plist)


def _said(result: CommandResult) -> str:
    return (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # ~/Library/LaunchAgents may not exist yet
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(data)
    os.chmod(tmp.name, 0o644)  # launchd ignores agent plists that others can write
    os.replace(tmp.name, path)
