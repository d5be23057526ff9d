"""Device description: CPU model, cores, flags, OS and emulation detection."""

from __future__ import annotations

import os

import pytest

from nanodet_deploy import device

X86 = """\
processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Processor
physical id	: 0
core id		: 0
flags		: fpu sse avx avx2 fma f16c avx512f hypervisor

processor	: 1
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Processor
physical id	: 0
core id		: 0
flags		: fpu sse avx avx2 fma f16c avx512f hypervisor
"""

PI5 = """\
processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU part	: 0xd0b

processor	: 1
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU part	: 0xd0b
"""


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    for var in (device.EMULATED_ENV, device.EMULATOR_ENV, device.DEVICE_NAME_ENV):
        monkeypatch.delenv(var, raising=False)


def test_x86_cpuinfo():
    info = device.parse_cpuinfo(X86)
    assert device.cpu_model_name(info, "x86_64") == "Intel(R) Xeon(R) Processor"
    assert info["processors"] == "2"
    assert device.physical_core_count(info) == 1  # two SMT siblings of one core
    assert device.cpu_flags(info) == ["avx", "avx2", "fma", "f16c", "avx512f"]


def test_arm_cpuinfo_names_the_core():
    info = device.parse_cpuinfo(PI5)
    assert device.cpu_model_name(info, "aarch64") == "Cortex-A76"
    assert {"asimd", "asimdhp", "asimddp", "fphp"} <= set(device.cpu_flags(info))


def test_emulation_detected_from_architecture_mismatch():
    x86 = device.parse_cpuinfo(X86)
    emulated, how = device.detect_emulation("aarch64", x86)
    assert emulated and "x86" in how
    assert device.detect_emulation("aarch64", device.parse_cpuinfo(PI5)) == (False, None)
    assert device.detect_emulation("x86_64", x86) == (False, None)


def test_emulation_env_overrides(monkeypatch):
    pi5 = device.parse_cpuinfo(PI5)
    monkeypatch.setenv(device.EMULATED_ENV, "1")
    monkeypatch.setenv(device.EMULATOR_ENV, "qemu-aarch64-static")
    assert device.detect_emulation("aarch64", pi5) == (True, "qemu-aarch64-static")
    monkeypatch.setenv(device.EMULATED_ENV, "0")
    assert device.detect_emulation("aarch64", device.parse_cpuinfo(X86)) == (False, None)


def test_describe_device_has_the_record_fields(monkeypatch):
    monkeypatch.setenv(device.DEVICE_NAME_ENV, "bench box")
    d = device.describe_device()
    for key in ("name", "cpu_model", "arch", "cores_logical", "cores_physical", "os", "emulated"):
        assert key in d
    assert d["name"] == "bench box"
    assert d["cores_logical"] == os.cpu_count()
    assert d["emulated"] is False  # this test machine runs natively


def test_library_versions_reads_metadata_only():
    versions = device.library_versions(("numpy", "surely-not-installed-pkg"))
    assert versions["numpy"] and versions["surely-not-installed-pkg"] is None
    assert versions["python"]


def test_pick_cpus_within_allowed():
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    cpus = device.pick_cpus(1)
    assert len(cpus) == 1
    if allowed:
        assert set(cpus) <= allowed
        assert set(device.pick_cpus(len(allowed) + 3)) == allowed
