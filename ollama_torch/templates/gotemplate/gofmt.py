"""Go's ``fmt`` printing rules for template values: what ``{{ . }}``, ``print``, ``println`` and
``printf`` produce.

Covers the verbs templates use (``%v %+v %s %q %d %t %x %X %o %b %c %U %e %E %f %F %g %G %T %%``)
with width, precision and the ``+ - # 0 space`` flags, Go's error forms (``%!d(string=x)``,
``%!d(MISSING)``, ``%!(EXTRA int=1)``), Go's float formatting (shortest digits, ``1e+06``), and the
composite forms ``[a b]``, ``map[k:v]`` and ``{f1 f2}``. Not covered: ``%p``, ``%#v`` Go syntax,
argument indexes ``%[1]d``.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from .values import go_type, is_list, is_map, is_struct, sorted_items, stringer, struct_fields

_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t", "\v": r"\v"}


def _quote_char(ch: str, quote: str, ascii_only: bool = False) -> str:
    if ch == quote or ch == "\\":
        return "\\" + ch
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if ch.isprintable() and not (ascii_only and ch >= "\x80"):
        return ch
    cp = ord(ch)
    if 0xD800 <= cp <= 0xDFFF:
        return r"\ufffd"
    if cp < 0x80:
        return f"\\x{cp:02x}"
    return f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}"


def go_quote(s: str, ascii_only: bool = False) -> str:
    """strconv.Quote (or QuoteToASCII): a double-quoted Go string literal."""
    return '"' + "".join(_quote_char(c, '"', ascii_only) for c in s) + '"'


def go_quote_rune(cp: int) -> str:
    """strconv.QuoteRune: a single-quoted Go character literal."""
    if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF or cp < 0:
        cp = 0xFFFD
    return "'" + _quote_char(chr(cp), "'") + "'"


def _shortest(f: float) -> tuple[str, int]:
    """The shortest decimal digits that round-trip ``abs(f)`` and the decimal point position."""
    t = Decimal(repr(abs(f))).as_tuple()
    digits = "".join(map(str, t.digits)).lstrip("0")
    exp = int(t.exponent)
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    if not stripped:
        return "0", 1
    return stripped, len(stripped) + exp


def format_float(f: float, fmt: str = "g", prec: int = -1) -> str:
    """strconv.FormatFloat(f, fmt, prec, 64) for fmt in e E f F g G; prec -1 means shortest."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if fmt in "xX":
        return _hex_float(f, fmt, prec)
    if prec >= 0:
        # Python's printf rounding and %g trimming match Go's for an explicit precision.
        return f"%.{prec}{fmt}" % f
    sign = "-" if math.copysign(1.0, f) < 0 else ""
    digits, dp = _shortest(f)
    if fmt in "gG":
        # Shortest %g switches to an exponent below 1e-4 and from 1e+06 on (eprec = 6 in strconv).
        exp = dp - 1
        fmt = ("e" if fmt == "g" else "E") if (exp < -4 or exp >= 6) else "f"
    if fmt in "eE":
        exp = 0 if digits == "0" else dp - 1
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mant}{fmt}{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if dp <= 0:
        body = "0." + "0" * -dp + digits
    elif dp >= len(digits):
        body = digits + "0" * (dp - len(digits))
    else:
        body = digits[:dp] + "." + digits[dp:]
    return sign + body


def _hex_float(f: float, fmt: str, prec: int) -> str:
    """%x of a float: ``0x1.cp+01`` (Go prints at least two exponent digits)."""
    h = f.hex()  # '-0x1.c000000000000p+1'
    sign = "-" if h.startswith("-") else ""
    mant, exp = h.lstrip("-")[2:].split("p")
    head, _, frac = mant.partition(".")
    frac = frac.rstrip("0") if prec < 0 else (frac + "0" * prec)[:prec]
    if f == 0:
        head, exp = "0", "+0"
    e = int(exp)
    out = f"{sign}0x{head}{'.' + frac if frac else ''}p{'-' if e < 0 else '+'}{abs(e):02d}"
    return out.upper() if fmt == "X" else out


class _Spec:
    """One parsed conversion: flags, width and precision."""

    def __init__(self) -> None:
        self.plus = self.minus = self.sharp = self.space = self.zero = self.plus_v = False
        self.width: int | None = None
        self.prec: int | None = None

    def pad(self, s: str) -> str:
        if self.width is None or len(s) >= self.width:
            return s
        fill = self.width - len(s)
        if self.minus:
            return s + " " * fill
        if self.zero:
            return "0" * fill + s
        return " " * fill + s


def _bad(verb: str, v: Any, spec: _Spec) -> str:
    """``%!d(string=x)``: the value is printed with %v under the same width and flags, as Go does."""
    if v is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({go_type(v)}={_fmt(v, 'v', spec, 0, methods=False)})"


def _fmt_int(n: int, verb: str, spec: _Spec) -> str:
    if verb == "c":
        return spec.pad(chr(n) if 0 <= n <= 0x10FFFF else "\ufffd")
    if verb == "q":
        return spec.pad(go_quote_rune(n))
    if verb == "U":
        s = f"U+{n:04X}"
        return spec.pad(s)
    base = {"v": 10, "d": 10, "b": 2, "o": 8, "O": 8, "x": 16, "X": 16}[verb]
    digits = format(abs(n), {2: "b", 8: "o", 10: "d", 16: "x" if verb == "x" else "X"}[base])
    if spec.prec is not None:
        digits = digits.zfill(spec.prec) if spec.prec else ("" if n == 0 else digits)
    prefix = ""
    if verb == "O" or (spec.sharp and base == 8 and not digits.startswith("0")):
        prefix = "0o" if verb == "O" else "0"
    elif spec.sharp and base == 16:
        prefix = "0x" if verb == "x" else "0X"
    elif spec.sharp and base == 2:
        prefix = "0b"
    sign = "-" if n < 0 else ("+" if spec.plus else (" " if spec.space else ""))
    body = prefix + digits
    if spec.zero and not spec.minus and spec.prec is None and spec.width is not None:
        body = body.zfill(spec.width - len(sign))
    return spec.pad(sign + body)


def _fmt_float(f: float, verb: str, spec: _Spec) -> str:
    if verb == "v":
        verb, prec = "g", -1
    elif verb in "gGxX":
        prec = -1
    else:
        prec = 6
    if spec.prec is not None:
        prec = spec.prec
    num = format_float(f, verb.lower() if verb == "F" else verb, prec)
    if num[0] not in "+-":
        num = "+" + num
    if spec.space and num[0] == "+" and not spec.plus:
        num = " " + num[1:]
    if num[1] in "IN":
        if num[1] == "N" and not spec.space and not spec.plus:
            num = num[1:]
        zero, spec.zero = spec.zero, False
        out = spec.pad(num)
        spec.zero = zero
        return out
    if spec.plus or num[0] != "+":
        if spec.zero and not spec.minus and spec.width is not None and spec.width > len(num):
            return num[0] + "0" * (spec.width - len(num)) + num[1:]
        return spec.pad(num)
    return spec.pad(num[1:])


def _fmt_str(s: str, verb: str, spec: _Spec) -> str:
    if spec.prec is not None and verb in "vsq":
        s = s[: spec.prec]
    if verb in "vs":
        return spec.pad(s)
    if verb == "q":
        if spec.sharp and "`" not in s and all(c.isprintable() or c == "\t" for c in s):
            return spec.pad("`" + s + "`")
        return spec.pad(go_quote(s, ascii_only=spec.plus))
    data = s.encode("utf-8", "surrogatepass")
    sep = " " if spec.space else ""
    h = sep.join(f"{b:02x}" if verb == "x" else f"{b:02X}" for b in data)
    return spec.pad(h)


_INT_VERBS = "vdboOxXcqU"
_FLOAT_VERBS = "vgGfFeExX"


def _fmt(v: Any, verb: str, spec: _Spec, depth: int, methods: bool = True) -> str:
    if verb == "T":
        return spec.pad(go_type(v))
    if v is None:
        if verb == "v" or depth > 0:
            return spec.pad("<nil>")
        return _bad(verb, v, spec)
    fn = stringer(v) if methods else None
    if fn is not None and verb in "vsxXq":
        return _fmt_str(fn(), verb, spec)
    if isinstance(v, bool):
        return spec.pad("true" if v else "false") if verb in "tv" else _bad(verb, v, spec)
    if isinstance(v, int):
        return _fmt_int(v, verb, spec) if verb in _INT_VERBS else _bad(verb, v, spec)
    if isinstance(v, float):
        return _fmt_float(v, verb, spec) if verb in _FLOAT_VERBS else _bad(verb, v, spec)
    if isinstance(v, complex):
        if verb not in _FLOAT_VERBS:
            return _bad(verb, v, spec)
        plus, spec.plus = spec.plus, True
        imag = _fmt_float(v.imag, verb, spec)
        spec.plus = plus
        return "(" + _fmt_float(v.real, verb, spec) + imag + "i)"
    if isinstance(v, str):
        return _fmt_str(v, verb, spec) if verb in "vsxXq" else _bad(verb, v, spec)
    if isinstance(v, (bytes, bytearray)):
        if verb in "sxXq":
            return _fmt_str(v.decode("utf-8", "replace"), verb, spec)
        v = list(v)
    if is_map(v):
        inner = " ".join(
            f"{_fmt(k, verb, spec, depth + 1)}:{_fmt(x, verb, spec, depth + 1)}" for k, x in sorted_items(v)
        )
        return "map[" + inner + "]"
    if is_list(v):
        return "[" + " ".join(_fmt(x, verb, spec, depth + 1) for x in v) + "]"
    if is_struct(v):
        parts = []
        for name, x in struct_fields(v):
            s = _fmt(x, verb, spec, depth + 1)
            parts.append(f"{name}:{s}" if spec.plus_v else s)
        return "{" + " ".join(parts) + "}"
    if callable(v):
        return spec.pad("0x1") if verb == "v" else _bad(verb, v, spec)
    return spec.pad(str(v))


def sprint_value(v: Any) -> str:
    """fmt.Sprint of one value."""
    return _fmt(v, "v", _Spec(), 0)


def sprint(*args: Any) -> str:
    """fmt.Sprint: spaces between operands when neither side is a string."""
    out: list[str] = []
    prev_string = False
    for i, a in enumerate(args):
        is_string = isinstance(a, str)
        if i > 0 and not is_string and not prev_string:
            out.append(" ")
        out.append(sprint_value(a))
        prev_string = is_string
    return "".join(out)


def sprintln(*args: Any) -> str:
    """fmt.Sprintln: operands always separated by spaces, then a newline."""
    return " ".join(sprint_value(a) for a in args) + "\n"


def _parse_num(fmt: str, i: int) -> tuple[int | None, int]:
    start = i
    while i < len(fmt) and fmt[i].isdigit():
        i += 1
    return (int(fmt[start:i]) if i > start else None), i


def sprintf(fmt: str, *args: Any) -> str:
    """fmt.Sprintf."""
    out: list[str] = []
    argn = 0
    i = 0
    n = len(fmt)
    while i < n:
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        i = j + 1
        spec = _Spec()
        while i < n and fmt[i] in "+-# 0":
            c = fmt[i]
            spec.plus |= c == "+"
            spec.minus |= c == "-"
            spec.sharp |= c == "#"
            spec.space |= c == " "
            spec.zero |= c == "0"
            i += 1
        if i < n and fmt[i] == "*":
            i += 1
            if argn < len(args) and isinstance(args[argn], int) and not isinstance(args[argn], bool):
                w = args[argn]
                spec.width, spec.minus = abs(w), spec.minus or w < 0
            else:
                out.append("%!(BADWIDTH)")
            argn += 1
        else:
            spec.width, i = _parse_num(fmt, i)
        if i < n and fmt[i] == ".":
            i += 1
            if i < n and fmt[i] == "*":
                i += 1
                if argn < len(args) and isinstance(args[argn], int) and not isinstance(args[argn], bool):
                    spec.prec = args[argn] if args[argn] >= 0 else None
                else:
                    out.append("%!(BADPREC)")
                argn += 1
            else:
                p, i = _parse_num(fmt, i)
                spec.prec = p or 0
        if spec.minus:
            spec.zero = False
        if i >= n:
            out.append("%!(NOVERB)")
            break
        verb = fmt[i]
        i += 1
        if verb == "%":
            out.append("%")
            continue
        if argn >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[argn]
        argn += 1
        if verb == "v":
            # %+v means field names, %#v Go syntax (not supported): neither is a flag of the value
            spec.plus_v, spec.plus, spec.sharp = spec.plus, False, False
        out.append(_fmt(arg, verb, spec, 0))
    if argn < len(args):
        extra = ", ".join("<nil>" if a is None else f"{go_type(a)}={sprint_value(a)}" for a in args[argn:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)
