"""Go literal syntax inside actions: ``strconv.Unquote`` for strings and character constants, and the
number rules of ``parse.newNumber`` (ints with 0x/0o/0b prefixes and underscores, floats, hex floats,
imaginary and complex constants)."""

from __future__ import annotations

import re

from .nodes import Number


class LiteralError(ValueError):
    pass


_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def unquote_char(s: str, i: int, quote: str) -> tuple[str, int]:
    """strconv.UnquoteChar: one (possibly escaped) character of s at i, and the next index."""
    if i >= len(s):
        raise LiteralError("invalid syntax")
    c = s[i]
    if c == quote and quote in "'\"":
        raise LiteralError("invalid syntax")
    if c != "\\":
        return c, i + 1
    if i + 1 >= len(s):
        raise LiteralError("invalid syntax")
    e = s[i + 1]
    if e in _SIMPLE:
        return _SIMPLE[e], i + 2
    if e in "'\"":
        if e != quote:
            raise LiteralError("invalid syntax")
        return e, i + 2
    width = {"x": 2, "u": 4, "U": 8}.get(e)
    if width is not None:
        digits = s[i + 2 : i + 2 + width]
        if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
            raise LiteralError("invalid syntax")
        cp = int(digits, 16)
        if e != "x" and (cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF):
            raise LiteralError("invalid syntax")
        # \xHH is a byte; for the ASCII range that is the character itself.
        return (chr(cp) if e != "x" or cp < 0x80 else chr(0xFFFD)), i + 2 + width
    if e in "01234567":
        digits = s[i + 1 : i + 4]
        if len(digits) != 3 or not all(d in "01234567" for d in digits) or int(digits, 8) > 255:
            raise LiteralError("invalid syntax")
        cp = int(digits, 8)
        return (chr(cp) if cp < 0x80 else chr(0xFFFD)), i + 4
    raise LiteralError("invalid syntax")


def unquote(lit: str) -> str:
    """strconv.Unquote of a "quoted" or `raw` Go string literal."""
    if len(lit) < 2 or lit[0] != lit[-1] or lit[0] not in "\"`'":
        raise LiteralError("invalid syntax")
    body = lit[1:-1]
    if lit[0] == "`":
        if "`" in body:
            raise LiteralError("invalid syntax")
        return body.replace("\r", "")
    if "\n" in body:
        raise LiteralError("invalid syntax")
    out: list[str] = []
    i = 0
    while i < len(body):
        c, i = unquote_char(body, i, lit[0])
        out.append(c)
    if lit[0] == "'" and len(out) != 1:
        raise LiteralError("invalid syntax")
    return "".join(out)


_DEC = r"[0-9](?:_?[0-9])*"
_INT_RE = re.compile(
    r"[+-]?(?:0[xX](?:_?[0-9a-fA-F])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+|0(?:_?[0-7])*|[1-9](?:_?[0-9])*)"
)
_FLOAT_RE = re.compile(
    rf"[+-]?(?:(?:{_DEC}(?:\.(?:{_DEC})?)?|\.{_DEC})(?:[eE][+-]?{_DEC})?"
    r"|0[xX](?:_?[0-9a-fA-F])*(?:\.(?:[0-9a-fA-F](?:_?[0-9a-fA-F])*)?)?[pP][+-]?[0-9](?:_?[0-9])*)"
)


def _parse_int(text: str) -> int | None:
    if not _INT_RE.fullmatch(text):
        return None
    t = text.replace("_", "")
    sign = -1 if t[0] == "-" else 1
    t = t.lstrip("+-")
    if len(t) > 1 and t[0] == "0" and t[1] in "xXoObB":
        return sign * int(t[2:], {"x": 16, "o": 8, "b": 2}[t[1].lower()])
    if len(t) > 1 and t[0] == "0":
        return sign * int(t, 8)
    return sign * int(t)


def _parse_float(text: str) -> float | None:
    if not _FLOAT_RE.fullmatch(text):
        return None
    t = text.replace("_", "")
    body = t.lstrip("+-")
    if body[:2].lower() == "0x":
        v = float.fromhex(body)
        return -v if t.startswith("-") else v
    return float(t)


INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


def parse_number(text: str, kind: str) -> tuple[Number, bool]:
    """A number token's ideal-constant value and whether it is usable as an int.

    ``kind`` is ``"char"``, ``"complex"`` or ``"number"``. The value is what Go's ``idealConstant``
    evaluates to: an int for integer syntax (a char constant gives its code point), a float when the
    text has ``.``, ``e`` or ``p``, a complex for imaginary literals.
    """
    if kind == "char":
        c, i = unquote_char(text, 1, "'")
        if text[i:] != "'":
            raise LiteralError(f"malformed character constant: {text}")
        return ord(c), True
    if kind == "complex":
        m = re.fullmatch(r"(.+?)([+-][^+-]*)i", text)
        re_part = _parse_float(m.group(1)) if m else None
        im_part = _parse_float(m.group(2)) if m else None
        if re_part is None or im_part is None:
            raise LiteralError(f"illegal number syntax: {text}")
        return _simplify(complex(re_part, im_part))
    if text.endswith("i"):
        f = _parse_float(text[:-1])
        if f is not None:
            return _simplify(complex(0, f))
    n = _parse_int(text)
    if n is not None and INT64_MIN <= n <= UINT64_MAX:
        return n, INT64_MIN <= n <= INT64_MAX
    f = _parse_float(text)
    if f is not None:
        if not any(c in text for c in ".eEpP"):
            raise LiteralError(f"integer overflow: {_q(text)}")
        is_int = f == int(f) if f == f and abs(f) != float("inf") else False
        return f, is_int
    raise LiteralError(f"illegal number syntax: {_q(text)}")


def _simplify(c: complex) -> tuple[Number, bool]:
    if c.imag == 0:
        return c.real, c.real == int(c.real)
    return c, False


def _q(s: str) -> str:
    from .gofmt import go_quote

    return go_quote(s)
