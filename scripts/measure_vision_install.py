"""What installing gemma-4 vision costs: mlx-vlm with its own requirements, and as scripts/setup.sh installs it
(--no-deps beside this project's requirements).

    python scripts/measure_vision_install.py [--mlx-vlm 0.7.10] [--work /tmp/vision-install]

On this platform: a fresh venv with this project (editable), its size, then mlx-vlm --no-deps (size, seconds);
a second fresh venv with this project, then mlx-vlm with its requirements (size, seconds, `pip check`, the
mlx-lm version left installed). For macOS arm64: the wheels `pip download` picks for Python 3.11 there, in MB,
for both ways (nothing is installed). Sizes are `du` of the venv; times are wall seconds of `pip install`
(the machine's pip cache warm or not, as it is). Writes scripts/results/vision_install.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "results" / "vision_install.json"
# The --no-deps way adds mlx-vlm alone: Pillow and requests, the two its gemma-4 path needs, are this project's
# own requirements. Its own requirements add what `pip freeze` shows after that it did not before.
NO_DEPS_WHEELS = ("mlx-vlm",)


def run(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def venv_mb(path: Path) -> int:
    return int(subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True).stdout.split()[0])


def fresh_venv(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    run(sys.executable, "-m", "venv", str(path))
    run(str(path / "bin" / "pip"), "install", "-q", "-e", str(ROOT))
    return path / "bin" / "pip"


def timed_install(pip: Path, *args: str) -> float:
    started = time.perf_counter()
    run(str(pip), "install", "-q", *args)
    return round(time.perf_counter() - started, 1)


def freeze(pip: Path) -> set[str]:
    out = subprocess.run([str(pip), "freeze"], capture_output=True, text=True).stdout
    return {line.split("==")[0].lower() for line in out.splitlines() if "==" in line}


def linux(work: Path, version: str) -> dict:
    pip = fresh_venv(work / "no-deps")
    base_mb = venv_mb(work / "no-deps")
    no_deps_s = timed_install(pip, "--no-deps", f"mlx-vlm=={version}")
    no_deps_mb = venv_mb(work / "no-deps")
    pip = fresh_venv(work / "full")
    before = freeze(pip)
    full_s = timed_install(pip, f"mlx-vlm=={version}")
    check = subprocess.run([str(pip), "check"], capture_output=True, text=True).stdout.strip()
    versions = subprocess.run([str(pip), "freeze"], capture_output=True, text=True).stdout
    mlx_lm = next((line for line in versions.splitlines() if line.lower().startswith("mlx-lm==")), "")
    return {"base_mb": base_mb, "no_deps_mb": no_deps_mb, "no_deps_s": no_deps_s,
            "full_mb": venv_mb(work / "full"), "full_s": full_s, "pip_check": check, "mlx_lm_after": mlx_lm,
            "added_by_requirements": sorted(freeze(pip) - before)}


def macos_wheels(work: Path, version: str, added: list[str]) -> dict:
    target = work / "macos-wheels"
    shutil.rmtree(target, ignore_errors=True)
    run(sys.executable, "-m", "pip", "download", "-q", "--platform", "macosx_14_0_arm64", "--python-version", "3.11",
        "--only-binary=:all:", f"mlx-vlm=={version}", "-d", str(target))

    def normal(name: str) -> str:
        return name.lower().replace("-", "_").replace(".", "_")

    sizes = {normal(path.name.split("-")[0]): path.stat().st_size for path in target.glob("*.whl")}

    def total(names) -> float:
        return round(sum(sizes.get(normal(name), 0) for name in names) / 1e6, 1)

    return {"full_wheels_mb": total(added), "no_deps_wheels_mb": total(NO_DEPS_WHEELS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mlx-vlm", default="0.7.10")
    parser.add_argument("--work", type=Path, default=Path("/tmp/vision-install"))
    args = parser.parse_args()
    here = linux(args.work, args.mlx_vlm)
    result = {"command": "python scripts/measure_vision_install.py", "mlx_vlm": args.mlx_vlm,
              "platform": sys.platform, "linux": here,
              "macos_arm64": macos_wheels(args.work, args.mlx_vlm, here["added_by_requirements"]),
              "measured_at": round(time.time())}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
