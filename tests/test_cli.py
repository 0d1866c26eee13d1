from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.catalog import load_catalog
from agent.cli.main import app
from agent.kvcost import kv_bytes_at, kv_peak_bytes_at

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_kv_json_has_the_documented_keys_and_exact_numbers():
    result = run("kv", "gemma-4-26b", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    spec = load_catalog()["gemma-4-26b"]
    assert report["model"] == "gemma-4-26b"
    assert report["kv_bytes_per_token"] == 20_480
    assert report["kv_fixed_bytes_per_sequence"] == 200 * 1024**2
    assert list(report["kv_bytes_at"]) == ["4096", "8192", "32768", "131072"]
    assert report["kv_bytes_at"]["8192"] == kv_bytes_at(spec, 8192)
    assert report["kv_peak_bytes_at"]["8192"] == kv_peak_bytes_at(spec, 8192)


def test_kv_takes_custom_contexts_and_prints_a_readable_table():
    result = run("kv", "gpt-oss-20b", "--context", "100", "--context", "1000")
    assert result.exit_code == 0, result.output
    assert "24,576 B per token" in result.output and "3.00 MiB per sequence" in result.output
    assert "1,000" in result.output and "4,096" not in result.output


def test_kv_of_an_unknown_model_is_one_clear_error_line():
    result = run("kv", "llama-70b")
    assert result.exit_code == 2
    assert "unknown model 'llama-70b'" in result.output and "Traceback" not in result.output


def test_kv_rejects_a_nonpositive_context():
    result = run("kv", "gpt-oss-20b", "--context", "0")
    assert result.exit_code == 2 and "at least 1 token" in result.output


@pytest.mark.parametrize("memory_gb", [16, 24, 32, 36, 48, 64, 128])
def test_doctor_reports_every_model_for_each_mac_size(memory_gb):
    result = run("doctor", "--memory-gb", str(memory_gb), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [m["model"] for m in report["models"]] == ["gpt-oss-20b", "gemma-4-26b"]
    for model in report["models"]:
        assert model["fits"] == (model["kv_budget_bytes"] > 0)
        assert model["reason"]


def test_doctor_says_gpt_oss_fits_24_gb_and_gemma_needs_32():
    fits = {m: {x["model"]: x["fits"] for x in json.loads(run("doctor", "--memory-gb", m, "--json").output)["models"]}
            for m in ("16", "24", "32")}
    assert fits == {
        "16": {"gpt-oss-20b": False, "gemma-4-26b": False},
        "24": {"gpt-oss-20b": True, "gemma-4-26b": False},
        "32": {"gpt-oss-20b": True, "gemma-4-26b": True},
    }


def test_doctor_without_a_size_uses_this_machine():
    result = run("doctor")
    assert result.exit_code == 0 and "cap" in result.output


def test_the_installed_console_script_runs():
    script = Path(sys.executable).parent / "darkbloom-agent"
    out = subprocess.run([str(script), "kv", "gpt-oss-20b", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["kv_bytes_per_token"] == 24_576


def test_protocol_schema_prints_both_directions_of_the_wire():
    result = run("protocol", "--schema")
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    text = json.dumps(schema)
    for message_type in ("register", "heartbeat", "inference_request", "inference_response_chunk", "cancel"):
        assert f'"{message_type}"' in text


def test_service_render_prints_a_valid_launch_agent_plist_on_any_os():
    import plistlib

    result = run("service", "render", "--config", "/tmp/agent.toml", "--program", "/opt/bin/darkbloom-agent")
    assert result.exit_code == 0, result.output
    plist = plistlib.loads(result.output.encode())
    assert plist["ProgramArguments"] == ["/opt/bin/darkbloom-agent", "start", "--config", "/tmp/agent.toml"]


def test_service_install_on_linux_says_it_is_macos_only():
    if sys.platform == "darwin":
        return
    result = run("service", "install")
    assert result.exit_code == 2 and "macOS" in result.output


def test_models_list_shows_every_catalog_model_in_an_empty_cache(tmp_path):
    result = run("models", "list", "--cache-dir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    assert {(m["model"], m["state"]) for m in json.loads(result.output)} == {("gpt-oss-20b", "missing"),
                                                                              ("gemma-4-26b", "missing")}


def test_models_verify_of_a_model_not_in_the_cache_is_a_clear_error(tmp_path):
    result = run("models", "verify", "gpt-oss-20b", "--cache-dir", str(tmp_path), "--offline")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "is not in the cache" in result.output and "pull it first" in result.output


def test_status_reads_the_file_the_daemon_keeps(tmp_path, monkeypatch):
    from agent.daemon.status_file import write_status

    path = tmp_path / "status.json"
    write_status(path, {"pid": os.getpid(), "state": "running", "uptime_s": 12.0, "link": "ready",
                        "coordinator_url": "ws://127.0.0.1:1/ws/provider", "num_served": 3, "num_in_flight": 1,
                        "slots": [{"model": "gpt-oss-20b", "state": "running", "num_running": 1, "num_waiting": 0,
                                   "kv_budget_bytes": 2**30, "kv_reserved_bytes": 2**20, "kv_used_bytes": 2**19,
                                   "reason": ""}]})
    monkeypatch.setenv("DARKBLOOM_STATUS_PATH", str(path))
    result = run("status")
    assert result.exit_code == 0, result.output
    assert "running" in result.output and "gpt-oss-20b" in result.output and "1.00 GiB" in result.output


def test_status_without_a_daemon_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("DARKBLOOM_STATUS_PATH", str(tmp_path / "none.json"))
    result = run("status")
    assert result.exit_code == 2 and "has not run here" in result.output


def test_stop_without_a_running_agent_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("DARKBLOOM_STATUS_PATH", str(tmp_path / "none.json"))
    result = run("stop")
    assert result.exit_code == 0 and "not running" in result.output


def test_start_without_a_coordinator_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    result = run("start", "--model", "gpt-oss-20b")
    assert result.exit_code == 2 and "no coordinator" in result.output


def test_logs_prints_the_last_lines_of_the_agent_log(tmp_path):
    (tmp_path / "agent.log").write_text("".join(f"line {i}\n" for i in range(100)))
    result = run("logs", "--log-dir", str(tmp_path), "-n", "3")
    assert result.exit_code == 0, result.output
    assert "line 97\nline 98\nline 99\n" in result.output and "line 96" not in result.output


def test_logs_without_a_log_file_explains_where_logs_go(tmp_path):
    result = run("logs", "--log-dir", str(tmp_path))
    assert result.exit_code == 2 and "service install" in result.output


def test_a_second_agent_with_the_same_home_is_refused_naming_the_running_pid(tmp_path, monkeypatch):
    from agent.daemon.instance_lock import instance_lock, lock_path_for

    status = tmp_path / "status.json"
    monkeypatch.setenv("DARKBLOOM_STATUS_PATH", str(status))
    with instance_lock(lock_path_for(status)):
        result = run("start", "--coordinator", "ws://127.0.0.1:9", "--token", "t", "--model", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert f"already running with this HOME (pid {os.getpid()}" in result.output


def test_the_agent_lock_is_free_again_once_its_holder_exits(tmp_path):
    from agent.daemon.instance_lock import AgentAlreadyRunning, instance_lock

    lock = tmp_path / "agent.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from agent.daemon.instance_lock import instance_lock\n"
        f"with instance_lock(Path({str(lock)!r})):\n    print('held', flush=True); sys.stdin.readline()")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(AgentAlreadyRunning, match=f"pid {holder.pid}"):
        with instance_lock(lock):
            pass
    holder.kill()  # as a crash: the kernel releases the lock, nothing stale is left
    holder.wait()
    with instance_lock(lock):
        assert lock.read_text() == str(os.getpid())


def test_version_prints_the_package_and_protocol_versions():
    from agent import __version__

    result = run("--version")
    assert result.exit_code == 0 and result.output.startswith(f"darkbloom-agent {__version__} (protocol ")


def test_help_labels_options_without_python_type_names():
    result = runner.invoke(app, ["kv", "--help"], terminal_width=100)
    assert result.exit_code == 0 and "--json" in result.output
    assert "<bool>" not in result.output and "<list[int]>" not in result.output


@pytest.mark.skipif(sys.platform == "darwin", reason="launchd keeps the log on macOS")
def test_logs_off_macos_says_where_a_foreground_agent_logs(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    result = run("logs")
    assert result.exit_code == 2 and "no launchd here" in result.output and "Library" not in result.output


def test_status_of_an_agent_that_died_does_not_claim_its_link_is_up(tmp_path, monkeypatch):
    from agent.daemon.status_file import write_status

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    status = tmp_path / "status.json"
    write_status(status, {"pid": int(finished.stdout), "state": "running", "uptime_s": 5.0, "link": "ready",
                          "coordinator_url": "ws://127.0.0.1:8000/ws/provider", "num_served": 3, "num_in_flight": 1,
                          "slots": []})
    monkeypatch.setenv("DARKBLOOM_STATUS_PATH", str(status))
    result = run("status")
    assert result.exit_code == 0 and "not running" in result.output
    assert "link down" in result.output and "link ready" not in result.output


def test_kv_beyond_the_models_context_warns():
    result = runner.invoke(app, ["kv", "gpt-oss-20b", "-c", "1000000"])
    assert result.exit_code == 0
    assert "beyond gpt-oss-20b's context of 131,072" in result.output


@pytest.mark.parametrize("command", [["doctor"], ["models", "pull", "gpt-oss-20b"]])
def test_a_negative_reserve_is_refused_rather_than_growing_the_cap(command):
    result = run(*command, "--reserve-gb", "-3")
    assert result.exit_code == 2 and "-3.0 is not in the range x>=0" in result.output
