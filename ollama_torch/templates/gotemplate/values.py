"""How Python values stand in for Go values inside a template.

Go's text/template works through reflection; here a small, explicit mapping plays that part:

==========================  =========================================================
Python                      Go
==========================  =========================================================
``None``                    nil (an empty interface)
``bool`` / ``int``          bool / int
``float`` / ``complex``     float64 / complex128
``str``                     string
``list`` / ``tuple``        slice
``dict``                    map (ranged, printed and JSON-encoded in sorted key order)
dataclass instance          struct (fields by their Python names: use Go's ``Name``)
callable                    func (usable with ``call``)
==========================  =========================================================

A class may also declare:

* ``go_string(self) -> str``: it is a ``fmt.Stringer``; printing uses it.
* ``go_json(self) -> Any``: the value ``json`` encodes instead of the object (a ``json.Marshaler``).
* ``GO_TYPE``: the Go type name used in error messages and ``%T``.
* ``GO_METHODS``: ``{"GoName": "python_method"}``, methods a template may call as ``.GoName``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any


def is_struct(v: object) -> bool:
    return dataclasses.is_dataclass(v) and not isinstance(v, type)


def struct_fields(v: object) -> list[tuple[str, Any]]:
    assert dataclasses.is_dataclass(v) and not isinstance(v, type)
    return [(f.name, getattr(v, f.name)) for f in dataclasses.fields(v)]


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_list(v: object) -> bool:
    return isinstance(v, (list, tuple))


def is_map(v: object) -> bool:
    return isinstance(v, Mapping)


def stringer(v: object) -> Callable[[], str] | None:
    """The value's ``String()`` method when it is a ``fmt.Stringer``."""
    fn = getattr(v, "go_string", None)
    return fn if callable(fn) else None


def go_method(v: object, name: str) -> Callable[..., Any] | None:
    methods: Mapping[str, str] = getattr(type(v), "GO_METHODS", {})
    if name in methods:
        fn = getattr(v, methods[name], None)
        if callable(fn):
            return fn
    return None


def sorted_items(m: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    """A map's entries in Go's order (internal/fmtsort): keys compared by value, nil first."""

    def key(k: Any) -> tuple[int, Any]:
        if k is None:
            return (0, 0)
        if isinstance(k, bool):
            return (1, k)
        if isinstance(k, (int, float)):
            return (2, k)
        if isinstance(k, str):
            return (3, k.encode("utf-8", "surrogatepass"))
        return (4, str(k))

    return sorted(m.items(), key=lambda kv: key(kv[0]))


def go_type(v: object) -> str:
    """The Go type name Go would report for a value, for messages and ``%T``."""
    declared = getattr(type(v), "GO_TYPE", None)
    if isinstance(declared, str):
        return declared
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, complex):
        return "complex128"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (bytes, bytearray)):
        return "[]uint8"
    if is_list(v):
        return "[]interface {}"
    if is_map(v):
        return "map[string]interface {}"
    if is_struct(v):
        return type(v).__name__
    if callable(v):
        return "func(...interface {}) interface {}"
    return type(v).__name__


def is_true(v: object) -> bool:
    """Go's template truth: false, 0, nil and empty strings, slices and maps are false."""
    if v is None:
        return False
    if isinstance(v, (bool, int, float, complex)):
        return v != 0
    if isinstance(v, (str, bytes, bytearray, list, tuple)) or is_map(v):
        return len(v) > 0  # type: ignore[arg-type]
    return True
