"""Go's ``encoding/json.Marshal`` output for template values (what Ollama's ``json`` template function
and its ``String()`` methods print).

Differences from Python's ``json.dumps`` that matter for prompts: no spaces after ``:`` and ``,``; map
keys sorted; ``<``, ``>``, ``&``, U+2028 and U+2029 escaped as ``\\u003c``-style sequences; floats
printed like Go (``1`` not ``1.0``, ``1e+21``, ``1e-7``); NaN and infinities are an error.
"""

from __future__ import annotations

import math
from typing import Any

from .gofmt import format_float
from .values import is_list, is_map, is_struct, sorted_items, struct_fields


class OrderedMap(dict[str, Any]):
    """A JSON object that keeps insertion order when encoded (Go's ordered maps, structs)."""

    GO_TYPE = "*orderedmap.Map[string,interface {}]"


class JSONError(ValueError):
    """A value Go's encoder refuses (NaN, Inf)."""


_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def encode_string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif ch in _HTML:
            out.append(_HTML[ch])
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        elif "\ud800" <= ch <= "\udfff":
            out.append("\\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def encode_float(f: float) -> str:
    if math.isnan(f) or math.isinf(f):
        raise JSONError(f"json: unsupported value: {format_float(f)}")
    a = abs(f)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        s = format_float(f, "e")
        # Go trims one leading zero of a negative exponent: 1e-07 -> 1e-7.
        if len(s) >= 4 and s[-4] == "e" and s[-3] == "-" and s[-2] == "0":
            s = s[:-2] + s[-1]
        return s
    return format_float(f, "f")


def marshal(v: Any) -> str:
    """json.Marshal(v) as a string; raises JSONError where Go returns an error."""
    hook = getattr(v, "go_json", None)
    if callable(hook):
        return marshal(hook())
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return encode_float(v)
    if isinstance(v, str):
        return encode_string(v)
    if isinstance(v, OrderedMap):
        return "{" + ",".join(f"{encode_string(str(k))}:{marshal(x)}" for k, x in v.items()) + "}"
    if is_map(v):
        return "{" + ",".join(f"{encode_string(str(k))}:{marshal(x)}" for k, x in sorted_items(v)) + "}"
    if is_list(v):
        return "[" + ",".join(marshal(x) for x in v) + "]"
    if is_struct(v):
        return "{" + ",".join(f"{encode_string(k)}:{marshal(x)}" for k, x in struct_fields(v)) + "}"
    raise JSONError(f"json: unsupported type: {type(v).__name__}")


def to_json(v: Any) -> str:
    """Ollama's ``json`` template function: Go ignores the error, so a failure prints nothing."""
    try:
        return marshal(v)
    except JSONError:
        return ""
