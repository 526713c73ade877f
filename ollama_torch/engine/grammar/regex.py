"""Regular expressions for the grammar: JSON Schema's ECMA-262 patterns in llguidance's Rust dialect, and
exact patterns for the string formats llguidance checks only loosely.

JSON Schema patterns are ECMA-262; llguidance parses them as Rust ``regex`` syntax. Where the two read
the same text differently, the Rust reading can accept strings the schema rejects, so each pattern is
rewritten to what both ECMA-262 and Python's ``re`` (what ``jsonschema`` validates with) agree on, or
refused when there is no such reading:

* ``\\s`` -> the characters all three call whitespace; ``\\S`` -> those none of them do (Rust's ``\\S``
  matches U+FEFF, ECMA's does not; Rust's ``\\s`` matches U+0085, ECMA's does not);
* ``.`` -> ``[^\\n\\r\\u2028\\u2029]`` (ECMA excludes all line terminators, Rust only ``\\n``);
* a ``[`` inside a class is escaped (a literal in ECMA, a nested class in Rust);
* ``&&`` / ``--`` / ``~~`` inside a class (Rust set operations, literals in ECMA) and the ECMA-only empty
  classes ``[]`` / ``[^]`` are refused.

llguidance's ``format`` checks miss a few rules: ``date`` accepts Feb 29 of any year, ``time`` and
``date-time`` accept second 60 at any minute, ``hostname`` does not bound the total length and accepts any
``xn--`` label. Those four formats are replaced by exact patterns below (leap seconds only as
``23:59:60`` in UTC, and no ``--`` in a label's third and fourth characters: stricter than RFC 3339 /
IDNA, never looser).
"""

from __future__ import annotations

from ollama_torch.errors import BadRequest

_WS_ALL = r"\t\n\x0B\x0C\r \xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000"  # whitespace to all
_WS_ANY = _WS_ALL + r"\x1C-\x1F\x85\uFEFF"  # whitespace to at least one of ECMA, Python, Rust
_NOT_LINE_END = r"[^\n\r\u2028\u2029]"

_YEAR = r"(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"  # 0001-9999 (Python has no year 0)
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = (r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
              r"|02-(?:0[1-9]|1[0-9]|2[0-8]))")
_DATE = rf"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
_OFFSET = r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_TIME = (rf"(?:(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?{_OFFSET}"
         r"|23:59:60(?:\.[0-9]+)?(?:[Zz]|[+-]00:00))")
_LABEL = (r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,2}[A-Za-z0-9])?"
          r"|[A-Za-z0-9][A-Za-z0-9-](?:[A-Za-z0-9][A-Za-z0-9-]|-[A-Za-z0-9])[A-Za-z0-9-]{0,58}[A-Za-z0-9])")

# format -> (pattern, maxLength or None)
FORMAT_PATTERNS: dict[str, tuple[str, int | None]] = {
    "date": (rf"^{_DATE}$", None),
    "time": (rf"^{_TIME}$", None),
    "date-time": (rf"^{_DATE}[Tt]{_TIME}$", None),
    "hostname": (rf"^{_LABEL}(?:\.{_LABEL})*$", 253),
}


def portable_pattern(pattern: str) -> str:
    """An ECMA-262 pattern rewritten so llguidance's Rust reading accepts nothing ECMA (or Python) rejects."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt == "s":
                out.append(f"[{_WS_ALL}]")
            elif nxt == "S":
                out.append(f"[^{_WS_ANY}]")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            pair = pattern[i : i + 2]
            if pair in ("&&", "--", "~~"):
                _refuse(pattern, f"{pair!r} inside a character class reads differently in ECMA-262 and Rust")
            if ch == "]":
                in_class = False
                out.append(ch)
            elif ch == "[":
                out.append(r"\[")
            else:
                out.append(ch)
            i += 1
            continue
        if ch == "[":
            start = i + 2 if pattern.startswith("[^", i) else i + 1
            if start < n and pattern[start] == "]":
                _refuse(pattern, "an empty class [] or [^] is not supported")
            in_class = True
            out.append(pattern[i:start])
            i = start
            continue
        out.append(_NOT_LINE_END if ch == "." else ch)
        i += 1
    return "".join(out)


def _refuse(pattern: str, why: str) -> None:
    raise BadRequest(f"unsupported JSON schema in format: regular expression /{pattern}/: {why}")
