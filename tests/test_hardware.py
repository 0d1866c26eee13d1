from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import psutil
import pytest

from agent.hardware import BANDWIDTH_GBPS, memory_bandwidth_gbps, probe_hardware, run_command
from agent.wire.frames import Hardware, Register
from agent.wire.protocol import Direction, encode, parse_message

FIXTURES = Path(__file__).parent / "fixtures" / "hardware"
GIB = 1024**3


class RecordedMachine:
    """Answers commands and file reads from one fixture directory, and remembers what was asked."""

    def __init__(self, name: str) -> None:
        self.root = FIXTURES / name
        self.commands: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str]) -> str:
        self.commands.append(tuple(argv))
        path = self.root / ("_".join(argv) + ".txt")
        if not path.is_file():
            raise subprocess.CalledProcessError(1, list(argv), stderr=f"{argv[0]}: unknown oid")
        return path.read_text()

    def read(self, path: str) -> str:
        return (self.root / (path.strip("/").replace("/", "_") + ".txt")).read_text()


def probe_mac(name: str, **kwargs) -> object:
    machine = RecordedMachine(name)
    return probe_hardware(system="Darwin", run=machine.run, read=machine.read, **kwargs)


def test_an_m2_pro_is_read_completely_from_sysctl_sw_vers_and_system_profiler():
    info = probe_mac("m2-pro")
    assert info.system == "darwin"
    assert info.chip == "Apple M2 Pro"
    assert info.machine_model == "Mac14,9"
    assert info.memory_bytes == 32 * GIB
    assert info.gpu_cores == 19
    assert (info.cpu_cores, info.cpu_performance_cores, info.cpu_efficiency_cores) == (12, 8, 4)
    assert info.memory_bandwidth_gbps == 200
    assert info.os_version == "macOS 14.6.1"
    assert info.metal_working_set_bytes is None
    assert not any("Error" in note for note in info.notes)


def test_an_m4_max_with_40_gpu_cores_gets_the_upper_bandwidth_bin_and_its_raised_wired_limit():
    info = probe_mac("m4-max")
    assert (info.chip, info.memory_bytes, info.gpu_cores) == ("Apple M4 Max", 128 * GIB, 40)
    assert (info.cpu_performance_cores, info.cpu_efficiency_cores) == (12, 4)
    assert info.memory_bandwidth_gbps == 546
    assert info.metal_working_set_bytes == 120_000 * 1024**2
    assert any("iogpu.wired_limit_mb" in note for note in info.notes)


def test_the_engines_metal_probe_wins_over_the_wired_limit():
    info = probe_mac("m4-max", metal_probe=lambda: 100 * GIB)
    assert info.metal_working_set_bytes == 100 * GIB


def test_a_failing_metal_probe_leaves_the_working_set_unknown_with_a_note():
    def broken() -> int:
        raise RuntimeError("no Metal device")

    info = probe_mac("m2-pro", metal_probe=broken)
    assert info.metal_working_set_bytes is None
    assert any("no Metal device" in note for note in info.notes)


def test_a_mac_whose_system_profiler_fails_keeps_what_sysctl_knows_and_notes_the_rest():
    info = probe_mac("m3-max-partial")
    assert (info.chip, info.memory_bytes, info.machine_model) == ("Apple M3 Max", 36 * GIB, "Mac15,8")
    assert info.gpu_cores is None
    assert info.cpu_performance_cores is None and info.cpu_efficiency_cores is None
    assert info.memory_bandwidth_gbps == 300  # the lower M3 Max bin, since the GPU cores are unknown
    notes = " | ".join(info.notes)
    assert "system_profiler" in notes and "hw.perflevel0.physicalcpu" in notes and "lower bandwidth bin" in notes


def test_a_mac_where_every_command_is_missing_still_reports_memory_from_psutil():
    def nothing(argv: Sequence[str]) -> str:
        raise FileNotFoundError(argv[0])

    info = probe_hardware(system="darwin", run=nothing)
    assert info.memory_bytes == psutil.virtual_memory().total
    assert info.chip is None and info.gpu_cores is None and info.os_version is None
    assert info.memory_bandwidth_gbps is None
    assert len(info.notes) >= 5


def test_system_profiler_output_that_is_json_but_not_the_expected_shape_degrades_to_none():
    def odd(argv: Sequence[str]) -> str:
        if argv[0] == "system_profiler":
            return '{"SPDisplaysDataType": [{"sppci_cores": "many"}, 7], "SPHardwareDataType": []}'
        raise subprocess.CalledProcessError(1, list(argv))

    info = probe_hardware(system="darwin", run=odd)
    assert info.gpu_cores is None and info.chip is None


def test_system_profiler_alone_gives_chip_memory_and_core_counts_when_sysctl_is_missing():
    machine = RecordedMachine("m2-pro")

    def profiler_only(argv: Sequence[str]) -> str:
        if argv[0] != "system_profiler":
            raise FileNotFoundError(argv[0])
        return machine.run(argv)

    info = probe_hardware(system="darwin", run=profiler_only)
    assert (info.chip, info.memory_bytes, info.machine_model) == ("Apple M2 Pro", 32 * GIB, "Mac14,9")
    assert (info.cpu_cores, info.cpu_performance_cores, info.cpu_efficiency_cores) == (12, 8, 4)


def test_four_field_processor_counts_of_newer_macos_are_trusted_only_for_the_total():
    def profiler(argv: Sequence[str]) -> str:
        if argv[0] != "system_profiler":
            raise FileNotFoundError(argv[0])
        return '{"SPHardwareDataType": [{"number_processors": "proc 12:0:8:4"}]}'

    info = probe_hardware(system="darwin", run=profiler)
    assert (info.cpu_cores, info.cpu_performance_cores, info.cpu_efficiency_cores) == (12, None, None)


def test_linux_reads_the_cpu_name_and_os_from_files_and_the_rest_from_psutil():
    machine = RecordedMachine("linux-x86")
    info = probe_hardware(system="Linux", run=machine.run, read=machine.read)
    assert info.chip == "AMD EPYC 7B13"
    assert info.os_version == "Debian GNU/Linux 12 (bookworm)"
    assert info.memory_bytes == psutil.virtual_memory().total
    assert info.cpu_cores == psutil.cpu_count(logical=False)
    assert info.gpu_cores is None and info.memory_bandwidth_gbps is None
    assert machine.commands == []


def test_linux_without_readable_files_still_probes():
    def unreadable(path: str) -> str:
        raise PermissionError(path)

    info = probe_hardware(system="linux", read=unreadable)
    assert info.chip is None and info.os_version  # platform.platform() stands in
    assert any("/proc/cpuinfo" in note for note in info.notes)


@pytest.mark.parametrize(
    ("chip", "gpu_cores", "gbps"),
    [
        ("Apple M1", 8, 68), ("Apple M1 Pro", 16, 200), ("Apple M1 Max", 24, 400), ("Apple M1 Ultra", 64, 800),
        ("Apple M2", 10, 100), ("Apple M2 Pro", 19, 200), ("Apple M2 Max", 38, 400),
        ("Apple M3", 10, 100), ("Apple M3 Pro", 18, 150), ("Apple M3 Max", 30, 300), ("Apple M3 Max", 40, 400),
        ("Apple M4", 10, 120), ("Apple M4 Pro", 20, 273), ("Apple M4 Max", 32, 410), ("Apple M4 Max", 40, 546),
        ("Apple M4 Max", None, 410), ("Apple M1 (Virtual)", None, 68),
    ],
)
def test_memory_bandwidth_follows_apples_published_numbers_per_chip_and_bin(chip, gpu_cores, gbps):
    assert memory_bandwidth_gbps(chip, gpu_cores)[0] == gbps


def test_an_unknown_chip_has_no_bandwidth_and_says_so():
    assert memory_bandwidth_gbps("Intel(R) Core(TM) i9-9980HK CPU @ 2.40GHz", None) == (
        None, "memory bandwidth of 'Intel(R) Core(TM) i9-9980HK CPU @ 2.40GHz' is not in the table")
    assert memory_bandwidth_gbps(None)[0] is None
    assert all(bins[0][0] == 0 for bins in BANDWIDTH_GBPS.values())


def test_to_wire_is_the_register_frames_hardware_and_survives_the_wire():
    hardware = probe_mac("m4-max").to_wire()
    assert isinstance(hardware, Hardware)
    assert (hardware.chip, hardware.memory_bytes, hardware.gpu_cores) == ("Apple M4 Max", 128 * GIB, 40)
    frame = Register(protocol_version=1, agent_version="0.1.0", hardware=hardware, models=())
    assert parse_message(encode(frame), direction=Direction.TO_COORDINATOR) == frame


def test_the_default_runner_returns_stdout_and_raises_on_failure():
    assert run_command(["echo", "hi"]) == "hi\n"
    with pytest.raises(subprocess.CalledProcessError):
        run_command(["false"])
