"""The README's commands, run as a newcomer would: on a fresh copy of the repository (the tracked files,
no caches) with a fresh HOME.

- Quick start: `scripts/demo.sh` runs to its clean last line (the copy's `.venv` is this checkout's, so
  setup.sh's stamp installs nothing; the tiny models are seeded from the session's so they are not
  written twice).
- "Running it yourself": its shell block, line by line. The only changes are the port (a free one for
  the README's 8000) and the shell's jobs: a line ending in `&` is started in the background and waited
  for (the coordinator's /health, the agent's models on /v1/models/capacity), `kill %N` stops job N.
  Without curl on the machine, a `curl -s URL` line is fetched with urllib.
- The KV table: every number in it is what `darkbloom-agent kv MODEL -c ... --json` prints.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
TINY_MODELS = ("gpt-oss-tiny", "gemma-4-tiny")
DEMO_TIMEOUT_S = 240
READY_TIMEOUT_S = 120
COMMAND_TIMEOUT_S = 60
POLL_S = 0.2


def shell_block(heading: str) -> str:
    """The first ```sh block after `heading` in the README."""
    section = README[README.index(heading):]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def commands(block: str) -> list[str]:
    """One command per logical line: continuations joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = (re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fresh_copy(tmp_path: Path, tiny_models_dir: Path) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout to know the tracked files")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.splitlines()
    copy = tmp_path / "darkbloom-agent"
    for name in listed:
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    (copy / ".venv").symlink_to(ROOT / ".venv")
    for name in TINY_MODELS:
        shutil.copytree(tiny_models_dir / name, copy / ".cache" / "tiny-models" / name)
    return copy


@pytest.fixture
def fresh_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DARKBLOOM_", "VIRTUAL_ENV", "PYTHON"))}
    return env | {"HOME": str(home)}


@pytest.mark.slow
def test_the_quick_start_demo_runs_to_a_clean_stop_on_a_fresh_copy(fresh_copy, fresh_env):
    assert "scripts/demo.sh" in commands(shell_block("## Quick start"))
    done = subprocess.run(["scripts/demo.sh"], cwd=fresh_copy, env=fresh_env, capture_output=True, text=True,
                          timeout=DEMO_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "== darkbloom-agent doctor (this machine) ==" in done.stdout
    for model in TINY_MODELS:  # each model streamed an answer to its end, with usage
        answer = done.stdout[done.stdout.index(f"== {model} =="):]
        assert re.search(r"\[finish_reason: (length|stop)\]", answer) and "completion tokens]" in answer
    assert done.stdout.rstrip().splitlines()[-1] == \
        "stopped (agent stopped cleanly, coordinator stopped cleanly)"


class BlockRunner:
    """Runs a README block's lines in order, in `cwd`, as one shell session would."""

    def __init__(self, cwd: Path, env: dict[str, str], port: int) -> None:
        self.cwd, self.env, self.port = cwd, env, port
        self.prelude: list[str] = []
        self.jobs: list[subprocess.Popen] = []
        self.outputs: dict[str, str] = {}

    def run(self, line: str) -> None:
        line = line.replace(":8000", f":{self.port}").replace(
            "darkbloom-agent coordinator", f"darkbloom-agent coordinator --port {self.port}")
        if line.startswith("source "):
            self.prelude.append(line)
        elif line.endswith("&"):
            self._start(line[:-1].strip())
        elif match := re.fullmatch(r"kill %(\d+)", line):
            self._kill(int(match.group(1)))
        elif line.startswith("curl ") and shutil.which("curl") is None:
            url = shlex.split(line)[-1]
            with urllib.request.urlopen(url if "://" in url else f"http://{url}", timeout=10) as response:
                self.outputs[line] = response.read().decode()
        else:
            self.outputs[line] = self._foreground(line)

    def stop_all(self) -> None:
        for job in self.jobs:
            if job.poll() is None:
                job.kill()
                job.wait()

    def _foreground(self, line: str) -> str:
        """Run `line` to its end while reaping the background jobs, as an interactive shell does (an exited
        but unreaped agent would still look alive to `darkbloom-agent stop`)."""
        command = subprocess.Popen(self._bash(line), cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while True:
            try:
                stdout, stderr = command.communicate(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                for job in self.jobs:
                    job.poll()
                if time.monotonic() > deadline:
                    command.kill()
                    raise AssertionError(f"{line!r} did not finish within {COMMAND_TIMEOUT_S} s") from None
        assert command.returncode == 0, f"{line!r} exited {command.returncode}: {stdout}{stderr}"
        return stdout

    def _bash(self, line: str) -> list[str]:
        return ["bash", "-c", "; ".join([*self.prelude, line])]

    def _start(self, line: str) -> None:
        log = self.cwd / f"job{len(self.jobs) + 1}.log"  # a file, not a pipe: a full pipe would block the job
        job = subprocess.Popen(self._bash(f"exec {line}"), cwd=self.cwd, env=self.env, stdout=log.open("w"),
                               stderr=subprocess.STDOUT)
        job.log = log
        self.jobs.append(job)
        if " coordinator" in line:
            self._wait_until(lambda: self._get("/health") is not None, job, "the coordinator's /health")
        elif " start " in line:
            self._wait_until(self._models_loaded, job, "the agent's models on /v1/models/capacity")

    def _kill(self, number: int) -> None:
        job = self.jobs[number - 1]
        job.send_signal(signal.SIGTERM)  # what `kill %N` sends; the job exec'd its command
        assert job.wait(COMMAND_TIMEOUT_S) in (0, -signal.SIGTERM), job.log.read_text()[-2000:]

    def _get(self, path: str) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return json.load(response)
        except OSError:
            return None

    def _models_loaded(self) -> bool:
        report = self._get("/v1/models/capacity")
        warm = {row["model"] for row in (report or {}).get("data", ())
                if row["providers"]["idle"] + row["providers"]["running"]}
        return warm >= set(TINY_MODELS)

    @staticmethod
    def _wait_until(ready, job: subprocess.Popen, what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready():
            assert job.poll() is None, f"exited {job.returncode} before {what}: {job.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"no {what} within {READY_TIMEOUT_S} s"
            time.sleep(POLL_S)


@pytest.mark.slow
def test_running_it_yourself_works_line_by_line_on_a_fresh_copy(fresh_copy, fresh_env):
    lines = commands(shell_block("## Running it yourself"))
    runner = BlockRunner(fresh_copy, fresh_env, free_port())
    try:
        for line in lines:
            runner.run(line)
        coordinator, agent = runner.jobs
        assert agent.wait(COMMAND_TIMEOUT_S) == 0  # `stop` drained it and it exited cleanly
        assert coordinator.poll() is not None  # `kill %1` stopped it
    finally:
        runner.stop_all()
    outputs = runner.outputs
    capacity = json.loads(next(text for line, text in outputs.items() if "capacity" in line))
    assert {row["model"] for row in capacity["data"]} >= set(TINY_MODELS)
    status = next(text for line, text in outputs.items() if line.endswith("darkbloom-agent status"))
    assert all(name in status for name in TINY_MODELS)


def kv_table() -> list[list[int]]:
    """The README's KV table rows: context, then held and peak per model."""
    section = README[README.index("| context | gpt-oss-20b held"):]
    rows = []
    for line in section.splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([int(cell.strip().replace(",", "")) for cell in line.strip("|").split("|")])
    return rows


def test_the_readme_kv_table_is_what_the_kv_command_prints():
    rows = kv_table()
    assert len(rows) >= 6
    contexts = [str(row[0]) for row in rows]
    for column, model in ((1, "gpt-oss-20b"), (3, "gemma-4-26b")):
        printed = CliRunner().invoke(app, ["kv", model, *[arg for c in contexts for arg in ("-c", c)], "--json"])
        assert printed.exit_code == 0, printed.output
        report = json.loads(printed.output)
        assert [row[column] for row in rows] == [report["kv_bytes_at"][c] for c in contexts]
        assert [row[column + 1] for row in rows] == [report["kv_peak_bytes_at"][c] for c in contexts]
