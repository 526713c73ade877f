"""Request bodies decoded the way Ollama's Gin handlers decode them (``encoding/json``).

Unknown fields are ignored; a value of the wrong JSON type is a 400 with Go's message
(``json: cannot unmarshal number into Go struct field GenerateRequest.prompt of type string``);
an empty body is ``missing request body``; ``null`` means "not given".

Arrays and objects may nest at most :data:`MAX_DEPTH` levels. Go's decoder allows 10000 (its stacks grow);
Python's decoder, and everything after it that walks a value (the lone-surrogate pass here, schema
handling, templates, the ``/v1`` re-encoding), recurses with a default limit of 1000 frames, so a deeper
body was a ``RecursionError`` (500). :func:`check_depth` measures the nesting with a linear scan that does
not recurse, before anything else runs, and answers a deeper body with Go's 400 text for it.
"""

from __future__ import annotations

import builtins
import json
import re
from itertools import accumulate
from typing import Any

from aiohttp import web

from ..errors import BadRequest

_MISSING = object()

# 256 levels: far more than real requests use (a pydantic schema nests a few levels per model, OpenAI caps
# structured-output schemas at 10 object levels), twice the 128 that llguidance's reader (serde_json) takes
# in a schema, and well under Python's 1000 frames even where later code spends 2-3 frames per level
# (measured: the templates and the surrogate pass first failed at about 400 levels). Go allows 10000.
MAX_DEPTH = 256
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_CHUNK = 1 << 16  # brackets scanned per step, so a deep body is refused after its first chunk


def json_kind(value: Any) -> str:
    """The JSON kind ``encoding/json`` names in an ``UnmarshalTypeError``."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


async def read_json(request: web.Request, struct: str) -> Fields:
    body = await request.read()
    return parse_body(body, struct)


def parse_body(body: bytes, struct: str) -> Fields:
    if not body.strip():
        raise BadRequest("missing request body")
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")  # as json.loads decodes bytes
    except UnicodeDecodeError:
        raise BadRequest("invalid character in request body") from None
    check_depth(text)
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(_json_syntax_message(body, exc)) from None
    except _NotJSON as exc:
        raise BadRequest(f"invalid character '{exc.args[0][0]}' looking for beginning of value") from None
    data = _replace_lone_surrogates(data)
    if not isinstance(data, dict):
        raise BadRequest(f"json: cannot unmarshal {json_kind(data)} into Go value of type api.{struct}")
    return Fields(data, struct)


def check_depth(text: str) -> None:
    """400 when arrays and objects in ``text`` nest deeper than :data:`MAX_DEPTH`, with Go's message for it.

    Linear, without recursion, and in C-speed string operations for all but the brackets: text with no
    more openers than the limit is done after two counts; otherwise the strings are cut out (escaped
    backslashes, then escaped quotes removed, then every other piece between quotes kept) and the
    brackets left are counted. Only the depth is checked here; whether the text is JSON is the decoder's
    business.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    outside = "".join(text.replace("\\\\", "").replace('\\"', "").split('"')[::2])
    brackets = _NOT_BRACKET.sub("", outside)
    depth = 0
    for start in range(0, len(brackets), _CHUNK):
        chunk = brackets[start : start + _CHUNK]
        levels = list(accumulate(map(_STEP.__getitem__, chunk), initial=depth))
        if max(levels) > MAX_DEPTH:
            ch = chunk[next(i for i, level in enumerate(levels[1:]) if level > MAX_DEPTH)]
            raise BadRequest(f"invalid character {ch!r} exceeded max depth (arrays and objects nest at most "
                             f"{MAX_DEPTH} levels here)")
        depth = levels[-1]


class _NotJSON(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    """``NaN``/``Infinity`` are not JSON (Python's decoder accepts them; Go's does not)."""
    raise _NotJSON(name)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _replace_lone_surrogates(value: Any) -> Any:
    """A ``\\ud800`` escape with no partner is valid JSON that decodes to no character: Go turns it into
    U+FFFD, and so do we, so such text never reaches an encoder that would raise on it."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value
    if isinstance(value, list):
        return [_replace_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_lone_surrogates(k): _replace_lone_surrogates(v) for k, v in value.items()}
    return value


def _json_syntax_message(body: bytes, exc: json.JSONDecodeError) -> str:
    if exc.pos >= len(exc.doc.rstrip()):
        return "unexpected EOF"
    ch = exc.doc[exc.pos]
    return f"invalid character {ch!r} {_context(exc.msg)}"


def _context(msg: str) -> str:
    if msg.startswith("Expecting property name"):
        return "looking for beginning of object key string"
    if msg.startswith("Expecting ',' delimiter") or msg.startswith("Expecting ':' delimiter"):
        return "after object key:value pair"
    if msg.startswith("Extra data"):
        return "after top-level value"
    return "looking for beginning of value"


def mismatch(struct: builtins.str, key: builtins.str, value: Any, go_type: builtins.str) -> BadRequest:
    """Go's error for ``value`` found in ``struct.key`` of type ``go_type``."""
    return BadRequest(f"json: cannot unmarshal {json_kind(value)} into Go struct field {struct}.{key} of type {go_type}")


class Fields:
    """Typed access to a decoded JSON object, raising Go-style 400s on type mismatches."""

    def __init__(self, data: builtins.dict[builtins.str, Any], struct: builtins.str) -> None:
        self.data = data
        self.struct = struct

    def _get(self, key: builtins.str) -> Any:
        value = self.data.get(key, _MISSING)
        return _MISSING if value is None else value

    def _mismatch(self, key: builtins.str, value: Any, go_type: builtins.str) -> BadRequest:
        return mismatch(self.struct, key, value, go_type)

    def has(self, key: builtins.str) -> builtins.bool:
        return self._get(key) is not _MISSING

    def str(self, key: builtins.str, default: builtins.str = "") -> builtins.str:
        value = self._get(key)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise self._mismatch(key, value, "string")
        return value

    def bool(self, key: builtins.str, default: builtins.bool = False) -> builtins.bool:
        value = self.opt_bool(key)
        return default if value is None else value

    def opt_bool(self, key: builtins.str) -> builtins.bool | None:
        value = self._get(key)
        if value is _MISSING:
            return None
        if not isinstance(value, bool):
            raise self._mismatch(key, value, "bool")
        return value

    def int(self, key: builtins.str, default: builtins.int = 0) -> builtins.int:
        value = self._get(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._mismatch(key, value, "int")
        if isinstance(value, float) and not value.is_integer():
            raise BadRequest(f"json: cannot unmarshal number {value} into Go struct field {self.struct}.{key} of type int")
        return int(value)

    def list_str(self, key: builtins.str) -> builtins.list[builtins.str]:
        value = self.list(key, "[]string")
        for v in value:
            if not isinstance(v, str):
                raise self._mismatch(key, v, "string")
        return list(value)

    def list(self, key: builtins.str, go_type: builtins.str = "[]interface {}") -> builtins.list[Any]:
        value = self._get(key)
        if value is _MISSING:
            return []
        if not isinstance(value, list):
            raise self._mismatch(key, value, go_type)
        return value

    def dict(self, key: builtins.str, go_type: builtins.str = "map[string]interface {}") -> builtins.dict[builtins.str, Any]:
        value = self._get(key)
        if value is _MISSING:
            return {}
        if not isinstance(value, dict):
            raise self._mismatch(key, value, go_type)
        return value

    def dict_str(self, key: builtins.str) -> builtins.dict[builtins.str, builtins.str]:
        value = self.dict(key, "map[string]string")
        for v in value.values():
            if not isinstance(v, str):
                raise self._mismatch(key, v, "string")
        return value

    def opt_float(self, key: builtins.str, go_type: builtins.str = "float64") -> builtins.float | None:
        """A number (``None`` when absent or null); a bool or anything else is Go's mismatch."""
        value = self._get(key)
        if value is _MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._mismatch(key, value, go_type)
        return value

    def object(self, key: builtins.str, go_type: builtins.str) -> Fields | None:
        """A nested object as :class:`Fields` of ``<struct>.<key>`` (``None`` when absent or null)."""
        value = self._get(key)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            raise self._mismatch(key, value, go_type)
        return Fields(value, f"{self.struct}.{key}")

    def raw(self, key: builtins.str) -> Any:
        """The value as given (``None`` when absent or null)."""
        value = self._get(key)
        return None if value is _MISSING else value
