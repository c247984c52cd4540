"""The CPU a training epoch ran on, as the epoch's record names it.

Training speed depends first on the CPU's matrix units: bf16 autocast is about twice
as fast with AMX tiles as with AVX512-BF16 instructions alone, and emulated (about a
hundred times slower than fp32) with AVX2 alone.  Each epoch's record names the
units, so that seconds per epoch are compared between like machines.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

__all__ = ["MATRIX_UNITS", "cpu_description", "timing_key"]

#: The matrix units a CPU is classed by, fastest first: (cpuinfo flag, name).
MATRIX_UNITS: tuple[tuple[str, str], ...] = (("amx_bf16", "amx"), ("avx512_bf16", "avx512_bf16"),
                                             ("avx512f", "avx512"), ("avx2", "avx2"))


def cpu_description(cpuinfo: str | None = None) -> dict[str, str]:
    """The CPU's model name and its best matrix unit.

    Parameters
    ----------
    cpuinfo : str, optional
        Text of ``/proc/cpuinfo`` (read when not given; absent off Linux).

    Returns
    -------
    dict
        ``cpu`` (model name, or ``platform.processor()`` without cpuinfo) and
        ``matrix_units`` (``amx``, ``avx512_bf16``, ``avx512`` (AVX-512 without
        bf16), ``avx2``, ``other``, or ``unknown`` without cpuinfo).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {"cpu": platform.processor() or "unknown", "matrix_units": "unknown"}
    name, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not name:
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    units = next((unit for flag, unit in MATRIX_UNITS if flag in flags), "other" if flags else "unknown")
    return {"cpu": name or platform.processor() or "unknown", "matrix_units": units}


def timing_key(epoch: dict[str, Any]) -> str:
    """How an epoch ran, for grouping seconds per epoch: ``"bf16 on amx"``, or ``"bf16"`` unrecorded.

    Parameters
    ----------
    epoch : dict
        An entry of a member record's ``history`` (it names its ``precision``).
    """
    precision = epoch["precision"]
    units = epoch.get("matrix_units")
    return f"{precision} on {units}" if units else precision
