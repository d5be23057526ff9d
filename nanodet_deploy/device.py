"""Describe the machine a benchmark runs on: CPU model, cores, architecture, OS, emulation.

Pure standard library (reads ``/proc`` and ``/sys`` where they exist); imports no runtime and
never torch, so it works on a bare Raspberry Pi and inside an emulated arm64 root.

Emulation (qemu-user running an arm64 Python on an x86 host) is detected from, in order:

1. ``NANODET_EMULATED`` set by the caller (``1``/``true``: emulated, with an optional
   ``NANODET_EMULATOR`` naming it; ``0``/``false``: not emulated);
2. an architecture mismatch: Python runs on ``aarch64``/``arm*`` but ``/proc/cpuinfo``
   describes an x86 CPU (qemu-user passes the host's ``/proc/cpuinfo`` through), or the
   other way round.

Figures from an emulated device are never device speed; records carry ``emulated: true``.
There ``/proc/cpuinfo`` is the host's: ``cpu_model`` says ``host: ...`` and ``cpu_flags`` are
the host's flags.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

EMULATED_ENV = "NANODET_EMULATED"
EMULATOR_ENV = "NANODET_EMULATOR"
DEVICE_NAME_ENV = "NANODET_DEVICE_NAME"

# Versions recorded with every benchmark (read from package metadata: nothing is imported).
VERSION_PACKAGES = (
    "nanodet-deploy",
    "numpy",
    "opencv-python-headless",
    "opencv-python",
    "onnxruntime",
    "ncnn",
    "torch",
)

# CPU flags that decide which kernels ncnn / onnxruntime pick (fp16, bf16, int8 dot products).
_X86_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_fp16", "avx_vnni")
_ARM_FLAGS = ("asimd", "asimdhp", "asimddp", "fphp", "i8mm", "bf16", "sve")

# ARM "CPU part" codes (implementer 0x41) seen on Raspberry Pis and phones.
_ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0d": "Cortex-A77",
    "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710",
    "0xd48": "Cortex-X2",
    "0xd4d": "Cortex-A715",
    "0xd4e": "Cortex-X3",
}


def describe_device() -> dict:
    """The ``device`` part of a benchmark record (see module doc for emulation).

    ``name``: ``NANODET_DEVICE_NAME``, else the board (device tree, e.g. "Raspberry Pi 5 Model
    B Rev 1.0"), else ``"<CPU model> x<logical cores>"``.
    """
    cpuinfo = read_cpuinfo()
    arch = platform.machine() or "unknown"
    emulated, emulator = detect_emulation(arch, cpuinfo)
    cpu_model = cpu_model_name(cpuinfo, arch)
    if emulated:  # /proc/cpuinfo (and its flags) describe the host, not the emulated CPU
        cpu_model = f"host: {cpu_model}"
    logical = os.cpu_count() or 1
    desc = {
        "name": os.environ.get(DEVICE_NAME_ENV) or board_model() or f"{cpu_model} x{logical}",
        "cpu_model": cpu_model,
        "arch": arch,
        "cores_logical": logical,
        "cores_physical": physical_core_count(cpuinfo) or logical,
        "cpu_flags": cpu_flags(cpuinfo),
        "os": os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "virtualized": "hypervisor" in cpuinfo.get("flags", "").split(),
        "emulated": emulated,
        "emulator": emulator,
    }
    return desc


def library_versions(packages: tuple[str, ...] = VERSION_PACKAGES) -> dict[str, str | None]:
    """Installed versions from package metadata; None for packages that are not installed."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def read_cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """First value of each ``key: value`` line of /proc/cpuinfo (empty when unreadable).

    ``processors`` holds the number of ``processor`` entries, ``core_ids`` the distinct
    (physical id, core id) pairs as text (for the physical core count).
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    return parse_cpuinfo(text)


def parse_cpuinfo(text: str) -> dict[str, str]:
    info: dict[str, str] = {}
    processors = 0
    cores: set[tuple[str, str]] = set()
    physical_id = "0"
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            processors += 1
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            cores.add((physical_id, value))
        info.setdefault(key, value)
    info["processors"] = str(processors)
    info["core_ids"] = str(len(cores))
    return info


def cpu_model_name(cpuinfo: dict[str, str], arch: str) -> str:
    """x86: ``model name``; ARM: the core names from ``CPU part`` (e.g. Cortex-A76)."""
    if cpuinfo.get("model name"):
        return cpuinfo["model name"]
    part = cpuinfo.get("CPU part", "").lower()
    if part:
        return _ARM_PARTS.get(part, f"ARM CPU part {part}")
    for key in ("Hardware", "cpu model", "uarch", "cpu"):
        if cpuinfo.get(key):
            return cpuinfo[key]
    return platform.processor() or arch


def physical_core_count(cpuinfo: dict[str, str]) -> int | None:
    cores = int(cpuinfo.get("core_ids", "0"))
    return cores or None


def cpu_flags(cpuinfo: dict[str, str]) -> list[str]:
    """The flags among those that matter for inference kernels (x86 ``flags``, ARM ``Features``)."""
    present = set(cpuinfo.get("flags", "").split()) | set(cpuinfo.get("Features", "").split())
    return [f for f in (*_X86_FLAGS, *_ARM_FLAGS) if f in present]


def board_model() -> str | None:
    """Single-board computers name themselves in the device tree (e.g. Raspberry Pi 5)."""
    try:
        text = Path("/proc/device-tree/model").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text.strip("\x00 \n") or None


def os_name() -> str:
    """PRETTY_NAME of /etc/os-release (Linux), else platform's description."""
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}".strip() or sys.platform


def detect_emulation(arch: str, cpuinfo: dict[str, str]) -> tuple[bool, str | None]:
    """(emulated, how it was detected / which emulator). See the module doc."""
    env = os.environ.get(EMULATED_ENV, "").strip().lower()
    if env in ("1", "true", "yes"):
        return True, os.environ.get(EMULATOR_ENV) or f"{EMULATED_ENV}=1"
    if env in ("0", "false", "no"):
        return False, None
    x86_cpu = "vendor_id" in cpuinfo or "flags" in cpuinfo
    arm_cpu = "CPU implementer" in cpuinfo or "Features" in cpuinfo
    is_arm = arch.lower().startswith(("aarch64", "arm"))
    is_x86 = arch.lower() in ("x86_64", "amd64", "i386", "i686")
    if is_arm and x86_cpu and not arm_cpu:
        host = cpuinfo.get("model name", "x86 host")
        return True, f"qemu-user? {arch} Python on an x86 CPU ({host}) per /proc/cpuinfo"
    if is_x86 and arm_cpu and not x86_cpu:
        return True, f"{arch} Python on an ARM CPU per /proc/cpuinfo (e.g. Rosetta/box64)"
    return False, None


def pick_cpus(num_threads: int) -> list[int]:
    """The CPUs to pin ``num_threads`` worker threads to: the biggest cores, one per core.

    Ranks the CPUs this process may use by ``cpu_capacity`` / ``cpuinfo_max_freq`` (big cores
    of big.LITTLE first), then spreads over physical cores before using SMT siblings.
    """
    allowed = sorted(_allowed_cpus())
    if num_threads >= len(allowed):
        return allowed
    seen_cores: set[str] = set()
    ranked = sorted(allowed, key=lambda c: (-_cpu_speed_rank(c), c))
    first, siblings = [], []
    for cpu in ranked:
        core = _sysfs(cpu, "topology/thread_siblings_list") or str(cpu)
        (siblings if core in seen_cores else first).append(cpu)
        seen_cores.add(core)
    return sorted((first + siblings)[:num_threads])


def pin_to_cpus(cpus: list[int]) -> bool:
    """Pin this process (and the threads it starts later) to ``cpus``; False where unsupported."""
    if not hasattr(os, "sched_setaffinity") or not cpus:
        return False
    try:
        os.sched_setaffinity(0, set(cpus))
    except OSError:
        return False
    return True


def _allowed_cpus() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def _cpu_speed_rank(cpu: int) -> int:
    for name in ("cpu_capacity", "cpufreq/cpuinfo_max_freq"):
        value = _sysfs(cpu, name)
        if value and value.isdigit():
            return int(value)
    return 0


def _sysfs(cpu: int, name: str) -> str | None:
    try:
        return Path(f"/sys/devices/system/cpu/cpu{cpu}/{name}").read_text().strip()
    except OSError:
        return None


def cpu_busy_seconds(path: str = "/proc/stat") -> float | None:
    """CPU-seconds all CPUs spent busy since boot (everything but idle and iowait; steal
    counts as busy), from /proc/stat; None where unavailable."""
    try:
        with open(path, encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")
