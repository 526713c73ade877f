"""Small helpers shared by the converters: Ollama's human-readable parameter counts, and the lock of one
output directory."""

from __future__ import annotations

import threading
from pathlib import Path

THOUSAND = 1000
MILLION = THOUSAND * 1000
BILLION = MILLION * 1000


def _whole(x: float) -> bool:
    return x == int(x)


def human_number(n: int) -> str:
    """``n`` the way Ollama's ``format.HumanNumber`` prints it: ``"135M"``, ``"134.52M"``, ``"8.0B"``...

    Billions get one decimal and millions two, unless the value is whole; thousands are rounded to a whole
    number. Python's float formatting rounds the binary value exactly, as Go's ``fmt`` does, so ties agree.
    """
    if n < 0:
        raise ValueError(f"`n` must be a non-negative int, got {n}")
    if n >= BILLION:
        b = float(n) / BILLION  # Go converts to float64 first, then divides
        return f"{b:.0f}B" if _whole(b) else f"{b:.1f}B"
    if n >= MILLION:
        m = float(n) / MILLION
        return f"{m:.0f}M" if _whole(m) else f"{m:.2f}M"
    if n >= THOUSAND:
        return f"{float(n) / THOUSAND:.0f}K"
    return str(n)


_directory_locks: dict[Path, threading.Lock] = {}
_directory_locks_guard = threading.Lock()


def directory_lock(out_dir: Path) -> threading.Lock:
    """The one lock of a conversion's output directory: concurrent callers converting into it wait for a
    single conversion, while conversions into other directories run in parallel. Kept for the process's
    life (one small entry per directory)."""
    with _directory_locks_guard:
        return _directory_locks.setdefault(Path(out_dir).resolve(), threading.Lock())
