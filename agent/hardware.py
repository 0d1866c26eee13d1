"""What machine this is: chip, memory, GPU cores, CPU core levels, memory bandwidth, OS, Metal's limit.

On macOS from `sysctl -n KEY`, `sw_vers` and `system_profiler SPHardwareDataType SPDisplaysDataType
-json`; elsewhere from psutil, /proc/cpuinfo and /etc/os-release. Commands go through an injected
runner (argv -> stdout) and files through an injected reader, so tests feed recorded outputs. A
command that is missing, fails or prints something unexpected leaves its fields None and adds a
note: probing never raises.

Metal's recommended working set is known to Metal alone (mlx.core.metal.device_info), and only the
engine may import MLX, so the engine passes it in as `metal_probe`; without it, a raised
`iogpu.wired_limit_mb` is the best stand-in.

Public names: HardwareInfo, probe_hardware, run_command, memory_bandwidth_gbps, BANDWIDTH_GBPS,
Runner, Reader.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from agent.wire.frames import Hardware

Runner = Callable[[Sequence[str]], str]
Reader = Callable[[str], str]
GIB = 1024**3
MIB = 1024**2

# Apple's published unified-memory bandwidth (GB/s) per chip. Where bins of one chip differ, the
# entry lists (minimum GPU cores, GB/s) and a machine whose GPU cores are unknown gets the lower bin.
BANDWIDTH_GBPS: dict[str, tuple[tuple[int, int], ...]] = {
    "M1": ((0, 68),), "M1 Pro": ((0, 200),), "M1 Max": ((0, 400),), "M1 Ultra": ((0, 800),),
    "M2": ((0, 100),), "M2 Pro": ((0, 200),), "M2 Max": ((0, 400),), "M2 Ultra": ((0, 800),),
    "M3": ((0, 100),), "M3 Pro": ((0, 150),), "M3 Max": ((0, 300), (40, 400)), "M3 Ultra": ((0, 819),),
    "M4": ((0, 120),), "M4 Pro": ((0, 273),), "M4 Max": ((0, 410), (40, 546)),
    "M5": ((0, 153),),
}
_CHIP_FAMILY = re.compile(r"\b(M\d+)(?: (Pro|Max|Ultra))?\b")


@dataclass(slots=True)
class HardwareInfo:
    system: str  # platform.system().lower(): "darwin", "linux", ...
    memory_bytes: int
    chip: str | None = None
    machine_model: str | None = None
    gpu_cores: int | None = None
    cpu_cores: int | None = None
    # sysctl hw.perflevel0 / hw.perflevel1: the fastest core level and the next (M5 Pro/Max: super / performance)
    cpu_performance_cores: int | None = None
    cpu_efficiency_cores: int | None = None
    memory_bandwidth_gbps: float | None = None
    os_version: str | None = None
    metal_working_set_bytes: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_wire(self) -> Hardware:
        return Hardware(
            chip=self.chip, memory_bytes=self.memory_bytes, gpu_cores=self.gpu_cores, cpu_cores=self.cpu_cores,
            cpu_performance_cores=self.cpu_performance_cores, cpu_efficiency_cores=self.cpu_efficiency_cores,
            memory_bandwidth_gbps=self.memory_bandwidth_gbps, metal_working_set_bytes=self.metal_working_set_bytes,
            machine_model=self.machine_model, os_version=self.os_version,
        )


def run_command(argv: Sequence[str]) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=True).stdout


def _read_text(path: str) -> str:
    return Path(path).read_text()


def probe_hardware(
    *,
    system: str | None = None,
    run: Runner = run_command,
    read: Reader = _read_text,
    metal_probe: Callable[[], int | None] | None = None,
) -> HardwareInfo:
    system = (system or platform.system()).lower()
    probe = _MacProbe(run) if system == "darwin" else _OtherProbe(read)
    info = probe.info(system)
    if system == "darwin":
        info.metal_working_set_bytes = _metal_limit(metal_probe, probe, info.notes)
    return info


def memory_bandwidth_gbps(chip: str | None, gpu_cores: int | None = None) -> tuple[float | None, str]:
    """Apple's published bandwidth for `chip` (e.g. "Apple M4 Max"), and how it was chosen."""
    match = _CHIP_FAMILY.search(chip or "")
    family = " ".join(part for part in match.groups() if part) if match else None
    bins = BANDWIDTH_GBPS.get(family or "")
    if bins is None:
        return None, f"memory bandwidth of {chip!r} is not in the table"
    if len(bins) > 1 and gpu_cores is None:
        return float(bins[0][1]), f"{family}: GPU cores unknown, assumed the lower bandwidth bin"
    chosen = [gbps for min_cores, gbps in bins if (gpu_cores or 0) >= min_cores][-1]
    return float(chosen), f"{family}: Apple's published {chosen} GB/s"


class _Probe:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def attempt(self, what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except Exception as exc:  # an injected runner may fail in any way; a probe must not
            self.notes.append(f"{what}: {type(exc).__name__}: {str(exc).strip()[:200]}")
            return None


class _MacProbe(_Probe):
    def __init__(self, run: Runner) -> None:
        super().__init__()
        self.run = run

    def sysctl(self, key: str, convert: Callable[[str], Any] = str) -> Any:
        return self.attempt(f"sysctl {key}", lambda: convert(self.run(["sysctl", "-n", key]).strip()))

    def info(self, system: str) -> HardwareInfo:
        profile = self.attempt("system_profiler", self._profile) or {}
        hardware = (profile.get("SPHardwareDataType") or [{}])[0]
        total, perf, eff = _processor_counts(hardware.get("number_processors"))
        memory = self.sysctl("hw.memsize", int) or _gb_text(hardware.get("physical_memory"))
        if memory is None:
            self.notes.append("memory from psutil: sysctl and system_profiler gave none")
            memory = psutil.virtual_memory().total
        chip = self.sysctl("machdep.cpu.brand_string") or hardware.get("chip_type")
        gpu_cores = _apple_gpu_cores(profile.get("SPDisplaysDataType") or [])
        bandwidth, basis = memory_bandwidth_gbps(chip, gpu_cores)
        self.notes.append(basis)
        version = self.attempt("sw_vers", lambda: self.run(["sw_vers", "-productVersion"]).strip())
        return HardwareInfo(
            system=system, memory_bytes=memory, chip=chip,
            machine_model=self.sysctl("hw.model") or hardware.get("machine_model"),
            gpu_cores=gpu_cores,
            cpu_cores=self.sysctl("hw.physicalcpu", int) or total,
            cpu_performance_cores=self.sysctl("hw.perflevel0.physicalcpu", int) or perf,
            cpu_efficiency_cores=self.sysctl("hw.perflevel1.physicalcpu", int) or eff,
            memory_bandwidth_gbps=bandwidth, os_version=f"macOS {version}" if version else None, notes=self.notes,
        )

    def _profile(self) -> dict[str, Any]:
        data = json.loads(self.run(["system_profiler", "SPHardwareDataType", "SPDisplaysDataType", "-json"]))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data


class _OtherProbe(_Probe):
    def __init__(self, read: Reader) -> None:
        super().__init__()
        self.read = read

    def info(self, system: str) -> HardwareInfo:
        cpuinfo = self.attempt("/proc/cpuinfo", lambda: self.read("/proc/cpuinfo")) or ""
        os_release = self.attempt("/etc/os-release", lambda: self.read("/etc/os-release")) or ""
        return HardwareInfo(
            system=system, memory_bytes=psutil.virtual_memory().total,
            chip=_first_value(cpuinfo, ("model name", "Hardware", "Processor")),
            cpu_cores=psutil.cpu_count(logical=False),
            os_version=_os_release_name(os_release) or platform.platform(),
            notes=self.notes + ["no GPU core count or memory bandwidth off macOS"],
        )


def _metal_limit(metal_probe: Callable[[], int | None] | None, probe: _MacProbe, notes: list[str]) -> int | None:
    if metal_probe is not None:
        return probe.attempt("Metal working set", metal_probe)
    wired_mb = probe.sysctl("iogpu.wired_limit_mb", int)
    if wired_mb:
        notes.append("Metal working set from iogpu.wired_limit_mb (raised by the operator)")
        return wired_mb * MIB
    notes.append("Metal working set unknown until the engine reports it")
    return None


def _processor_counts(text: Any) -> tuple[int | None, int | None, int | None]:
    """system_profiler's "proc TOTAL:PERF:EFF". Newer macOS prints four fields in an undocumented
    order, so only the total is trusted there."""
    fields = re.fullmatch(r"proc ([\d:]+)", str(text or "").strip())
    counts = [int(n) for n in fields.group(1).split(":") if n] if fields else []
    if len(counts) == 3:
        return counts[0], counts[1], counts[2]
    return (counts[0] if counts else None), None, None


def _apple_gpu_cores(displays: list[Any]) -> int | None:
    for gpu in displays:
        if isinstance(gpu, dict) and str(gpu.get("sppci_cores", "")).isdigit():
            return int(gpu["sppci_cores"])
    return None


def _gb_text(text: Any) -> int | None:
    match = re.fullmatch(r"(\d+) GB", str(text or "").strip())  # Apple's GB here are GiB
    return int(match.group(1)) * GIB if match else None


def _first_value(text: str, keys: Sequence[str]) -> str | None:
    for key in keys:
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return None


def _os_release_name(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.removeprefix("PRETTY_NAME=").strip().strip('"') or None
    return None
