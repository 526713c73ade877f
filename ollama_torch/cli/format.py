"""Human-readable numbers, sizes, times and tables, as Ollama's ``format`` package and tablewriter print them.

Ports of ``format.HumanBytes``, ``format.HumanNumber``, ``format.HumanTime`` and Go's
``time.Duration.String``, plus the borderless table layout ``ollama list`` / ``ps`` / ``show`` use
(columns padded to their widest cell, four spaces between columns, cells wrapped at a column width).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime, timezone

KB, MB, GB, TB = 1000, 1000**2, 1000**3, 1000**4


def human_bytes(b: int) -> str:
    """``format.HumanBytes``: decimal units, one decimal only under 10 (``2.0 GB`` is ``2 GB``)."""
    unit = ""
    for size, name in ((TB, "TB"), (GB, "GB"), (MB, "MB"), (KB, "KB")):
        if b >= size:
            value, unit = b / size, name
            break
    if not unit:
        return f"{b} B"
    if value >= 10 or value == math.trunc(value):
        return f"{int(value)} {unit}"
    return f"{value:.1f} {unit}"


def human_number(n: int) -> str:
    """``format.HumanNumber``: ``8B``, ``494.03M``, ``135K``."""
    if n >= 1_000_000_000:
        value = n / 1_000_000_000
        return f"{value:.0f}B" if value == math.floor(value) else f"{value:.1f}B"
    if n >= 1_000_000:
        value = n / 1_000_000
        return f"{value:.0f}M" if value == math.floor(value) else f"{value:.2f}M"
    if n >= 1000:
        return f"{n / 1000:.0f}K"
    return str(n)


def _go_round(x: float) -> int:
    """Go's ``math.Round``: halves away from zero."""
    return math.floor(abs(x) + 0.5) * (1 if x >= 0 else -1)


def human_duration(seconds: float) -> str:
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = _go_round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 timestamp from the API (nanoseconds allowed); ``None`` for Go's zero time or junk."""
    if not text:
        return None
    try:
        t = datetime.fromisoformat(_FRACTION.sub(r"\1", text).replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.year <= 1:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def human_time(t: datetime | None, zero_value: str, now: datetime | None = None) -> str:
    """``format.HumanTime``: ``2 weeks ago``, ``4 minutes from now``, ``Forever``."""
    if t is None:
        return zero_value
    now = now or datetime.now(timezone.utc)
    delta = (now - t).total_seconds()
    if int(delta / 3600) // 24 // 365 < -20:
        return "Forever"
    if delta < 0:
        return human_duration(-delta) + " from now"
    return human_duration(delta) + " ago"


def _fraction(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    digits = len(str(unit)) - 1
    tail = str(frac).rjust(digits, "0").rstrip("0")
    return f"{whole}.{tail}" if tail else str(whole)


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String`` for a count of nanoseconds: ``1.5s``, ``230.1ms``, ``2m3.25s``."""
    if ns == 0:
        return "0s"
    sign, u = ("-" if ns < 0 else ""), abs(ns)
    if u < 1_000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{_fraction(u, 1_000)}µs"
    if u < 1_000_000_000:
        return f"{sign}{_fraction(u, 1_000_000)}ms"
    hours, rest = divmod(u, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return f"{sign}{out}{_fraction(rest, 10**9)}s"


# -- tables -----------------------------------------------------------------------------------------


def display_width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def _wrap(cell: str, limit: int) -> list[str]:
    """Cells wider than ``limit`` wrap at spaces (a longer word keeps its own line), as tablewriter does."""
    lines: list[str] = []
    for paragraph in cell.split("\n"):
        if display_width(paragraph) <= limit:
            lines.append(paragraph)
            continue
        current = ""
        for word in paragraph.split():
            candidate = f"{current} {word}" if current else word
            if current and display_width(candidate) > limit:
                lines.append(current)
                current = word
            else:
                current = candidate
        lines.append(current)
    return lines


def _pad(s: str, width: int) -> str:
    return s + " " * (width - display_width(s))


def render_table(
    rows: Sequence[Sequence[str]],
    header: Sequence[str] | None = None,
    col_width: int = 30,
    padding: str = "    ",
) -> str:
    """Ollama's tablewriter settings (no border, no header line, left aligned, ``padding`` after every
    cell; the header's last cell is followed by one space). Rows may have different lengths."""
    wrapped = [[_wrap(cell, col_width) for cell in row] for row in rows]
    head = [_wrap(cell, col_width) for cell in header] if header else []
    widths: dict[int, int] = {}
    for row in ([head] if head else []) + wrapped:
        for i, lines in enumerate(row):
            widths[i] = max(widths.get(i, 0), *(display_width(line) for line in lines))
    out: list[str] = []
    if head:
        height = max(len(lines) for lines in head)
        for x in range(height):
            cells = [
                _pad(lines[x] if x < len(lines) else "", widths[i]) + (" " if i == len(head) - 1 else padding)
                for i, lines in enumerate(head)
            ]
            out.append("".join(cells))
    for row in wrapped:
        height = max((len(lines) for lines in row), default=1)
        for x in range(height):
            out.append(
                "".join(
                    _pad(lines[x] if x < len(lines) else "", widths[i]) + padding
                    for i, lines in enumerate(row)
                )
            )
    return "".join(line + "\n" for line in out)
