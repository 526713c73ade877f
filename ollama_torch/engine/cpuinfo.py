"""What Linux's ``/proc/cpuinfo`` says about this CPU, read once: the vendor decides whose packed sgemm runs
(``packed.py``), the flags whether our kernels are built (``native.py``)."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def cpuinfo() -> str | None:
    """The text of ``/proc/cpuinfo``, or ``None`` where it cannot be read (not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return None


def cpu_field(key: str) -> str:
    """The first processor's value for ``key`` ("model name", "cpu family", "flags", ...); "" where there is none."""
    for line in (cpuinfo() or "").splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip() == key:
            return value.strip()
    return ""


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags the first processor lists (empty where ``/proc/cpuinfo`` cannot be read)."""
    return frozenset(cpu_field("flags").split())
