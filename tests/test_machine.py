"""The CPU description each training epoch records, and how epochs are grouped by it."""

from __future__ import annotations

import pytest

from train.machine import cpu_description, timing_key

XEON = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16 amx_tile\n"
EPYC = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n" \
       "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"


@pytest.mark.parametrize(("cpuinfo", "expected"), [
    (XEON, {"cpu": "Intel(R) Xeon(R) Platinum", "matrix_units": "amx"}),
    (EPYC, {"cpu": "AMD EPYC", "matrix_units": "avx512_bf16"}),
    ("model name\t: Skylake\nflags\t\t: fpu avx2 avx512f\n", {"cpu": "Skylake", "matrix_units": "avx512"}),
    ("model name\t: Old\nflags\t\t: fpu avx2\n", {"cpu": "Old", "matrix_units": "avx2"}),
    ("model name\t: Older\nflags\t\t: fpu sse4_2\n", {"cpu": "Older", "matrix_units": "other"}),
    ("processor\t: 0\nCPU implementer\t: 0x41\n", {"cpu": None, "matrix_units": "unknown"}),
])
def test_the_cpu_is_classed_by_its_best_matrix_units(cpuinfo: str, expected: dict) -> None:
    described = cpu_description(cpuinfo)
    assert described["matrix_units"] == expected["matrix_units"]
    if expected["cpu"] is not None:
        assert described["cpu"] == expected["cpu"]
    else:  # no model name: the platform's processor name, or "unknown"
        assert described["cpu"]


def test_this_machine_is_described() -> None:
    described = cpu_description()
    assert set(described) == {"cpu", "matrix_units"} and described["cpu"]
    assert described["matrix_units"] in {"amx", "avx512_bf16", "avx512", "avx2", "other", "unknown"}


def test_epochs_are_grouped_by_precision_and_matrix_units() -> None:
    assert timing_key({"precision": "bf16", "matrix_units": "amx"}) == "bf16 on amx"
    assert timing_key({"precision": "bf16"}) == "bf16"  # recorded before epochs named their CPU
