"""`coordinator serve`'s options from flags, DARKBLOOM_COORDINATOR_* variables and a coordinator.toml, and a
real run that uses the operator token and the open-mode rate limit they set."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from agent.cli.coordinator_config import load_coordinator_config
from agent.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
START_WITHIN_S = 30.0


def test_flags_win_over_the_environment_which_wins_over_the_file(tmp_path):
    config = tmp_path / "coordinator.toml"
    config.write_text('port = 9001\noperator_token = "from-file"\nopen_requests_per_minute_per_ip = 60\n'
                      'requests_per_minute = 10\n')
    env = {"DARKBLOOM_COORDINATOR_OPERATOR_TOKEN": "from-env", "DARKBLOOM_COORDINATOR_REQUESTS_PER_MINUTE": "20"}
    options = load_coordinator_config(config, env, {"requests_per_minute": 30, "host": None})
    assert (options.port, options.operator_token, options.open_requests_per_minute_per_ip) == (9001, "from-env", 60)
    assert options.requests_per_minute == 30 and options.host == "127.0.0.1"


def test_the_config_file_can_be_named_by_the_environment(tmp_path):
    config = tmp_path / "elsewhere.toml"
    config.write_text('operator_token = "t0ken"\n')
    options = load_coordinator_config(None, {"DARKBLOOM_COORDINATOR_CONFIG": str(config)}, {})
    assert options.operator_token == "t0ken"


def test_an_unknown_key_in_the_file_is_one_error_naming_the_file_and_the_key(tmp_path):
    config = tmp_path / "coordinator.toml"
    config.write_text("operator_tokn = 'typo'\n")
    with pytest.raises(ConfigError, match=r"operator_tokn in .*coordinator.toml"):
        load_coordinator_config(config, {}, {})


def test_a_bad_environment_value_is_one_error_naming_the_variable():
    with pytest.raises(ConfigError, match="DARKBLOOM_COORDINATOR_OPEN_REQUESTS_PER_MINUTE_PER_IP in the environment"):
        load_coordinator_config(None, {"DARKBLOOM_COORDINATOR_OPEN_REQUESTS_PER_MINUTE_PER_IP": "lots"}, {})


def test_an_empty_operator_token_is_refused_rather_than_matching_an_empty_header():
    with pytest.raises(ConfigError, match="operator_token in the command line"):
        load_coordinator_config(None, {}, {"operator_token": ""})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(base_url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_WITHIN_S
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)  # the process is still importing; its socket is not open yet
    raise AssertionError(f"the coordinator did not serve within {START_WITHIN_S} s")


def test_a_real_run_takes_its_operator_token_from_the_flag_and_its_open_rate_limit_from_the_file(tmp_path):
    port = free_port()
    config = tmp_path / "coordinator.toml"
    config.write_text(f"port = {port}\nopen_requests_per_minute_per_ip = 3\nlog_level = 'warning'\n")
    command = [sys.executable, "-m", "agent.cli.main", "coordinator", "--config", str(config),
               "--operator-token", "s3cret"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base_url, process)
        proxied = {"x-forwarded-for": "203.0.113.9"}  # not the loopback operator: only the token says so
        operator = httpx.get(f"{base_url}/metrics", headers={**proxied, "x-darkbloom-operator": "s3cret"})
        stranger = httpx.get(f"{base_url}/metrics", headers={**proxied, "x-darkbloom-operator": "guess"})
        per_provider = "darkbloom_provider_usage_claims_clamped"  # an operator-only series
        assert per_provider in operator.text and per_provider not in stranger.text
        answers = [httpx.post(f"{base_url}/v1/chat/completions", json={}).status_code for _ in range(4)]
        assert answers == [400, 400, 400, 429]
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)


def test_any_coordinator_setting_is_set_by_name_from_the_file_and_set_flags_win(tmp_path):
    from agent.cli.coordinator_config import coordinator_settings, parse_set_flags

    config = tmp_path / "coordinator.toml"
    config.write_text("port = 9001\n[settings]\nfirst_token_base_s = 45\nstall_timeout_s = 20\n")
    flags = {"settings": parse_set_flags(["stall_timeout_s=15", "reasoning_field = both"])}
    settings = coordinator_settings(load_coordinator_config(config, {}, flags).settings)
    assert (settings.first_token_base_s, settings.stall_timeout_s, settings.reasoning_field) == (45.0, 15.0, "both")
    assert settings.max_request_s == 3600.0  # the rest keep their defaults


@pytest.mark.parametrize(("pairs", "message"), [
    (["first_token_bsae_s=60"], r"unknown coordinator setting 'first_token_bsae_s' \(did you mean first_token_base_s"),
    (["stall_timeout_s=soon"], r"'stall_timeout_s': Input should be a valid number"),
    (["stall_timeout_s=-1"], r"'stall_timeout_s': must be >= 0"),
    (["reasoning_field=everywhere"], r"'reasoning_field'"),
    (["no_equals_sign"], r"give NAME=VALUE"),
])
def test_an_unusable_set_flag_is_one_error_naming_the_setting(pairs, message):
    from agent.cli.coordinator_config import parse_set_flags

    with pytest.raises(ConfigError, match=message):
        load_coordinator_config(None, {}, {"settings": parse_set_flags(pairs)})
