"""Go's predefined template functions (``and or not eq ne lt le gt ge len index slice print printf
println html js urlquery call``) and the way any function declares its Go signature.

A function raises :class:`FuncError` where Go's returns an error; the executor reports it as
``error calling <name>: <message>``. ``and``, ``or`` and ``call`` are evaluated by the executor itself
(they short-circuit or need the callee's name), so they appear here only as signatures.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .gofmt import sprint, sprintf, sprintln
from .values import go_type, is_int, is_list, is_map, is_struct, is_true

ANY, STRING, INT = "interface {}", "string", "int"


class FuncError(Exception):
    """What a template function returns as its error value."""


@dataclass(frozen=True)
class Func:
    """A template function and its Go parameter types (``ANY``, ``STRING`` or ``INT``).

    With ``variadic`` the last parameter type repeats (Go's ``...T``).
    """

    fn: Callable[..., Any]
    params: tuple[str, ...] = (ANY,)
    variadic: bool = False


def _unreachable(*args: Any) -> Any:
    raise AssertionError("evaluated by the executor")


# --- comparison -----------------------------------------------------------------------------------

_BAD_TYPE = "invalid type for comparison"


def _kind(v: Any) -> str | None:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, complex):
        return "complex"
    if isinstance(v, str):
        return "string"
    return None


def _reflect_kind(v: Any) -> str:
    if is_list(v):
        return "slice"
    if is_map(v):
        return "map"
    if callable(v) and not is_struct(v):
        return "func"
    return "struct"


def eq(arg1: Any, *arg2: Any) -> bool:
    if not arg2:
        raise FuncError("missing argument for comparison")
    k1 = _kind(arg1)
    for arg in arg2:
        k2 = _kind(arg)
        if k1 != k2:
            if arg1 is not None and arg is not None:
                raise FuncError(f"incompatible types for comparison: {go_type(arg1)} and {go_type(arg)}")
            truth = False
        elif k1 is None:  # neither is a basic kind: lists, maps, structs, nil
            if arg1 is None or arg is None:
                truth = arg1 is None and arg is None
            elif _reflect_kind(arg1) != _reflect_kind(arg):
                raise FuncError(
                    f"non-comparable types {sprintf('%s', arg1)}: {go_type(arg1)}, {go_type(arg)}: {sprintf('%v', arg)}"
                )
            elif _reflect_kind(arg) in ("slice", "map", "func"):
                raise FuncError(f"non-comparable type {sprintf('%s', arg)}: {go_type(arg)}")
            else:
                truth = arg1 == arg
        else:
            truth = arg1 == arg
        if truth:
            return True
    return False


def ne(arg1: Any, arg2: Any) -> bool:
    return not eq(arg1, arg2)


def lt(arg1: Any, arg2: Any) -> bool:
    k1, k2 = _kind(arg1), _kind(arg2)
    if k1 is None or k2 is None:
        raise FuncError(_BAD_TYPE)
    if k1 != k2:
        raise FuncError(f"incompatible types for comparison: {go_type(arg1)} and {go_type(arg2)}")
    if k1 in ("bool", "complex"):
        raise FuncError(_BAD_TYPE)
    if k1 == "string":
        return bool(arg1.encode("utf-8", "surrogatepass") < arg2.encode("utf-8", "surrogatepass"))
    return bool(arg1 < arg2)


def le(arg1: Any, arg2: Any) -> bool:
    return lt(arg1, arg2) or eq(arg1, arg2)


def gt(arg1: Any, arg2: Any) -> bool:
    return not le(arg1, arg2)


def ge(arg1: Any, arg2: Any) -> bool:
    return not lt(arg1, arg2)


def not_(arg: Any) -> bool:
    return not is_true(arg)


# --- collections ----------------------------------------------------------------------------------


def _byte_len(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


def length(item: Any) -> int:
    if isinstance(item, str):
        return _byte_len(item)
    if is_list(item) or is_map(item) or isinstance(item, (bytes, bytearray)):
        return len(item)
    if item is None:
        raise FuncError("len of nil pointer")
    raise FuncError(f"len of type {go_type(item)}")


def _index_arg(index: Any, cap: int) -> int:
    if index is None:
        raise FuncError("cannot index slice/array with nil")
    if not is_int(index):
        raise FuncError(f"cannot index slice/array with type {go_type(index)}")
    if index < 0 or index > cap:
        raise FuncError(f"index out of range: {index}")
    return int(index)


def index(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise FuncError("index of untyped nil")
    for ix in indexes:
        if item is None:
            raise FuncError("index of nil pointer")
        if isinstance(item, str):
            data = item.encode("utf-8", "surrogatepass")
            x = _index_arg(ix, len(data))
            if x == len(data):
                raise FuncError("reflect: string index out of range")
            item = data[x]
        elif is_list(item):
            x = _index_arg(ix, len(item))
            if x == len(item):
                raise FuncError("reflect: slice index out of range")
            item = item[x]
        elif is_map(item):
            if ix is None:
                raise FuncError("value is nil; should be of type string")
            if not isinstance(ix, str):
                raise FuncError(f"value has type {go_type(ix)}; should be string")
            item = item.get(ix)
        else:
            raise FuncError(f"can't index item of type {go_type(item)}")
    return item


def slice_(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise FuncError("slice of untyped nil")
    if len(indexes) > 3:
        raise FuncError(f"too many slice indexes: {len(indexes)}")
    data: Any
    if isinstance(item, str):
        if len(indexes) == 3:
            raise FuncError("cannot 3-index slice a string")
        data = item.encode("utf-8", "surrogatepass")
    elif is_list(item):
        data = item
    else:
        raise FuncError(f"can't slice item of type {go_type(item)}")
    idx = [0, len(data), len(data)]
    for i, ix in enumerate(indexes):
        idx[i] = _index_arg(ix, len(data))
    if idx[0] > idx[1]:
        raise FuncError(f"invalid slice index: {idx[0]} > {idx[1]}")
    if len(indexes) == 3 and idx[1] > idx[2]:
        raise FuncError(f"invalid slice index: {idx[1]} > {idx[2]}")
    part = data[idx[0] : idx[1]]
    if isinstance(item, str):
        return part.decode("utf-8", "replace")
    return type(item)(part) if isinstance(item, (list, tuple)) else list(part)


# --- escaping -------------------------------------------------------------------------------------


def _eval_args(args: tuple[Any, ...]) -> str:
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(*("<no value>" if a is None else a for a in args))


_HTML = {"\0": "\ufffd", '"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;"}


def html_escaper(*args: Any) -> str:
    return "".join(_HTML.get(c, c) for c in _eval_args(args))


_JS = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E", "&": "\\u0026", "=": "\\u003D"}


def _js_char(c: str) -> str:
    if c in _JS:
        return _JS[c]
    if c < " ":
        return f"\\u00{ord(c):02X}"
    if c >= "\x80" and not c.isprintable():
        return f"\\u{ord(c):04X}"
    return c


def js_escaper(*args: Any) -> str:
    return "".join(_js_char(c) for c in _eval_args(args))


def urlquery_escaper(*args: Any) -> str:
    return urllib.parse.quote_plus(_eval_args(args), safe="")


def _print(*args: Any) -> str:
    return sprint(*args)


def _println(*args: Any) -> str:
    return sprintln(*args)


def _printf(fmt: str, *args: Any) -> str:
    return sprintf(fmt, *args)


BUILTINS: Mapping[str, Func] = {
    "and": Func(_unreachable, (ANY, ANY), variadic=True),
    "or": Func(_unreachable, (ANY, ANY), variadic=True),
    "call": Func(_unreachable, (ANY, ANY), variadic=True),
    "not": Func(not_),
    "eq": Func(eq, (ANY, ANY), variadic=True),
    "ne": Func(ne, (ANY, ANY)),
    "lt": Func(lt, (ANY, ANY)),
    "le": Func(le, (ANY, ANY)),
    "gt": Func(gt, (ANY, ANY)),
    "ge": Func(ge, (ANY, ANY)),
    "len": Func(length),
    "index": Func(index, (ANY, ANY), variadic=True),
    "slice": Func(slice_, (ANY, ANY), variadic=True),
    "print": Func(_print, (ANY,), variadic=True),
    "println": Func(_println, (ANY,), variadic=True),
    "printf": Func(_printf, (STRING, ANY), variadic=True),
    "html": Func(html_escaper, (ANY,), variadic=True),
    "js": Func(js_escaper, (ANY,), variadic=True),
    "urlquery": Func(urlquery_escaper, (ANY,), variadic=True),
}
