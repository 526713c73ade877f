"""Go duration strings and Ollama's ``keep_alive`` semantics, as seconds (``math.inf`` = forever)."""

from __future__ import annotations

import math
import re

from .errors import BadRequest

FOREVER = math.inf

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([a-zµμ]*)")


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.ParseDuration`` string into seconds; raise ``ValueError`` with Go's message."""
    orig = text
    if not text:
        raise ValueError(f'time: invalid duration "{orig}"')
    sign = 1.0
    if text[0] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise ValueError(f'time: invalid duration "{orig}"')
    total = 0.0
    pos = 0
    while pos < len(text):
        m = _PART.match(text, pos)
        if not m:
            raise ValueError(f'time: invalid duration "{orig}"')
        number, unit = m.group(1), m.group(2)
        if not unit:
            raise ValueError(f'time: missing unit in duration "{orig}"')
        if unit not in _UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{orig}"')
        total += float(number) * _UNITS[unit]
        pos = m.end()
    return sign * total


def parse_keep_alive(value: object) -> float | None:
    """Decode a request's ``keep_alive`` (``api.Duration``): number = seconds, string = Go duration,
    negative = forever, ``None`` = not given. Other types are a 400, as in Ollama."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadRequest("Unsupported type: 'bool'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_go_duration(value)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    else:
        raise BadRequest(f"Unsupported type: '{type(value).__name__}'")
    return FOREVER if seconds < 0 else seconds


def parse_env_keep_alive(text: str) -> float:
    """``OLLAMA_KEEP_ALIVE``: a Go duration or an integer number of seconds; negative = forever."""
    try:
        seconds = parse_go_duration(text)
    except ValueError:
        try:
            seconds = float(int(text))
        except ValueError:
            raise ValueError(f"invalid OLLAMA_KEEP_ALIVE {text!r}") from None
    return FOREVER if seconds < 0 else seconds
