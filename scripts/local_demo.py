"""A real local inference, end to end, with no network and no Mac.

Writes the tiny models (once, into .cache/tiny-models), starts the bundled coordinator and one agent
serving the tiny gpt-oss and gemma-4 models through MLX, waits until both are loaded, then streams a
chat completion from each through the official `openai` SDK and prints it (reasoning dimmed), with
its usage. Everything is stopped again at the end, the agent by SIGTERM (it drains).

    python scripts/local_demo.py [--keep-running]

The tiny models have random weights: the text is gibberish, the machinery is real.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "darkbloom-agent")
MODELS = ("gpt-oss-tiny", "gemma-4-tiny")
DIM, RESET = ("\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_models() -> Path:
    from agent.testing.tiny_models import is_up_to_date, write_all

    root = ROOT / ".cache" / "tiny-models"
    stale = [name for name in MODELS if not is_up_to_date(root / name, name)]
    if stale:
        print(f"writing tiny models {', '.join(stale)} to {root}")
        write_all(root, stale)
    return root


def wait_until_loaded(base_url: str, processes: list[subprocess.Popen], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise SystemExit(f"{process.args[1]} exited with {process.returncode}; see its log above")
        try:
            with urllib.request.urlopen(f"{base_url}/v1/models/capacity", timeout=2) as response:
                report = json.load(response)
            warm = {row["model"] for row in report["data"] if row["providers"]["idle"] + row["providers"]["running"]}
            if warm >= set(MODELS):
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the models did not load within {timeout:.0f} s")


def chat(base_url: str, model: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key="local")
    print(f"\n== {model} ==")
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello to the network."}], max_tokens=40,
        temperature=0.7, seed=7, stream=True, stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            reasoning = getattr(delta, "reasoning", None) or (delta.model_extra or {}).get("reasoning")
            if reasoning:
                print(f"{DIM}{reasoning}{RESET}", end="", flush=True)
            if delta.content:
                print(delta.content, end="", flush=True)
            if chunk.choices[0].finish_reason:
                print(f"\n[finish_reason: {chunk.choices[0].finish_reason}]")
        if chunk.usage:
            print(f"[usage: {chunk.usage.prompt_tokens} prompt + {chunk.usage.completion_tokens} completion tokens]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-running", action="store_true", help="leave the coordinator and agent up")
    args = parser.parse_args()
    models_dir = tiny_models()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DARKBLOOM_STATUS_PATH": str(ROOT / ".cache" / "demo-status.json")}
    coordinator = subprocess.Popen([CLI, "coordinator", "--port", str(port), "--log-level", "warning"], env=env)
    agent_args = [CLI, "start", "--coordinator", f"ws://127.0.0.1:{port}/ws/provider", "--token", "local"]
    for name in MODELS:
        agent_args += ["--model", str(models_dir / name)]
    agent = subprocess.Popen(agent_args, env={**env, "DARKBLOOM_LOG_LEVEL": "warning"})
    try:
        print(f"coordinator on {base_url}, agent pid {agent.pid}: loading {', '.join(MODELS)} …")
        wait_until_loaded(base_url, [coordinator, agent])
        for model in MODELS:
            chat(base_url, model)
        if args.keep_running:
            print(f"\nserving on {base_url}/v1 — Ctrl-C to stop")
            coordinator.wait()
    except KeyboardInterrupt:
        pass
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
        coordinator.send_signal(signal.SIGTERM)
        coordinator.wait(30)
        print(f"\nstopped (agent {_ended(agent.returncode)}, coordinator {_ended(coordinator.returncode)})")


def _ended(returncode: int | None) -> str:
    """uvicorn re-raises the SIGTERM it handled after a graceful shutdown: -15 is a clean stop, not a failure."""
    return "stopped cleanly" if returncode in (0, -signal.SIGTERM) else f"exit {returncode}"


if __name__ == "__main__":
    main()
