"""Schema policy in front of llguidance: drop keywords that provably assert nothing, refuse what it would loosen.

llguidance (strict mode) already refuses the keywords it does not implement (``not``, ``if``/``then``,
``uniqueItems``, ``contains``, ``propertyNames``, ``dependencies``, ``unevaluated*``, overlapping ``oneOf``,
unknown ``format``s, remote ``$ref``s...). Four adjustments live here, all torch-free:

1. *No-op keywords are removed* so that schemas using them are not refused for nothing. Each removal is a
   rule of JSON Schema itself: ``uniqueItems: false``; ``minContains``/``maxContains`` without ``contains``;
   ``if`` without ``then``/``else`` and ``then``/``else`` without ``if``; ``propertyNames`` /
   ``unevaluatedItems`` / ``unevaluatedProperties`` that are ``true`` or ``{}``; ``dependentRequired`` /
   ``dependentSchemas`` / ``dependencies`` entries that require nothing. llguidance's private ``x-guidance``
   options block is removed from the root: the server owns those options (whitespace, strictness).

2. *Patterns and formats made exact*: every ``pattern`` (and ``patternProperties`` key) is rewritten to a
   form llguidance's Rust regex reading cannot loosen, and ``date``/``time``/``date-time``/``hostname``
   formats become exact patterns (see ``grammar/regex.py``).

3. *Refused although llguidance accepts it*: ``minProperties`` larger than the number of ``required``
   properties + 1. llguidance counts the keys it lets the model emit, but it cannot make additional keys
   distinct, and a JSON parser keeps only the last of duplicate keys: ``{"x":1,"x":2}`` passes
   ``minProperties: 2`` in the grammar yet parses to one property. With at most one forced extra key the
   count after parsing is still right, so those schemas are kept. Also refused: an object with more
   optional properties before its first required one than llguidance's parser can start on
   (``grammar/limits``).

4. *Objects closed by default*: an object schema listing ``properties`` with no word on
   ``additionalProperties`` gets ``additionalProperties: false``, as llama.cpp (Ollama's engine) reads it;
   which ones, and why not those combined with other schemas, is ``grammar/closed``'s.

Walking is conservative: the values of unknown keywords are treated as schemas too (they may be ``$ref``
targets, e.g. OpenAPI's ``components``), and only ``enum``/``const``/``default``/``examples`` are data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

from ollama_torch.engine.grammar.closed import closed_objects
from ollama_torch.engine.grammar.limits import check_leading_optional
from ollama_torch.engine.grammar.regex import FORMAT_PATTERNS, portable_pattern
from ollama_torch.errors import BadRequest

_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})
# keyword -> value is a map from names to schemas (never apply keyword rules to its keys)
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas",
                          "dependencies"})


def _is_true_schema(value: object) -> bool:
    return value is True or value == {}


def normalise_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema the grammar enforces: a copy with no-op keywords dropped and patterns/formats made exact;
    :class:`BadRequest` for what llguidance would loosen."""
    root = {k: v for k, v in schema.items() if k != "x-guidance"}
    return cast(dict[str, Any], _normalise(root, "#", closed_objects(root)))


def _normalise(node: object, path: str, closed: set[str]) -> object:
    if isinstance(node, list):
        return [_normalise(item, f"{path}/{i}", closed) for i, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        sub = f"{path}/{_escape(key)}"
        if key in _DATA_KEYWORDS:
            out[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            rename = portable_pattern if key == "patternProperties" else _same
            out[key] = {rename(name): _normalise(v, f"{sub}/{_escape(name)}", closed) for name, v in value.items()}
        else:
            out[key] = _normalise(value, sub, closed)
    if path in closed:
        out["additionalProperties"] = False
    if isinstance(out.get("pattern"), str):
        out["pattern"] = portable_pattern(out["pattern"])
    _exact_format(out)
    _drop_noops(out)
    _check_min_properties(out, path)
    check_leading_optional(out, path)  # before llguidance spends a quadratic compile on it
    return out


def _same(name: str) -> str:
    return name


def _exact_format(node: dict[str, Any]) -> None:
    """Replace a format llguidance checks loosely by its exact pattern (see ``grammar/regex``)."""
    fmt = node.get("format")
    if not isinstance(fmt, str) or fmt not in FORMAT_PATTERNS:
        return
    pattern, max_length = FORMAT_PATTERNS[fmt]
    del node["format"]
    if "pattern" not in node:
        node["pattern"] = pattern
    elif "allOf" not in node:
        node["allOf"] = [{"pattern": pattern}]
    elif isinstance(node["allOf"], list):
        node["allOf"] = [*node["allOf"], {"pattern": pattern}]
    else:
        raise BadRequest('invalid JSON schema in format: "allOf" must be an array')
    if max_length is not None:
        current = node.get("maxLength")
        if isinstance(current, int) and not isinstance(current, bool):
            node["maxLength"] = min(current, max_length)
        elif current is None:
            node["maxLength"] = max_length


def _drop_noops(node: dict[str, Any]) -> None:
    if node.get("uniqueItems") is False:
        del node["uniqueItems"]
    if "contains" not in node:
        node.pop("minContains", None)
        node.pop("maxContains", None)
    if "if" in node and "then" not in node and "else" not in node:
        del node["if"]
    if "if" not in node:
        node.pop("then", None)
        node.pop("else", None)
    for key in ("propertyNames", "unevaluatedItems", "unevaluatedProperties"):
        if key in node and _is_true_schema(node[key]):
            del node[key]
    for key in ("dependentRequired", "dependentSchemas", "dependencies"):
        entries = node.get(key)
        if isinstance(entries, dict):
            kept = {k: v for k, v in entries.items() if not (v == [] or _is_true_schema(v))}
            if kept:
                node[key] = kept
            else:
                del node[key]


def _check_min_properties(node: dict[str, Any], path: str) -> None:
    minimum = node.get("minProperties")
    if not isinstance(minimum, int) or isinstance(minimum, bool):
        return
    required = node.get("required")
    n_required = len({r for r in required if isinstance(r, str)}) if isinstance(required, list) else 0
    if minimum >= n_required + 2:
        raise BadRequest(
            f'unsupported JSON schema in format: keyword "minProperties" ({minimum}) needs more distinct '
            f"optional keys than the grammar can guarantee (at {path}); it is supported up to the number of "
            f'"required" properties + 1 ({n_required + 1})'
        )


def find_keyword(schema: object, keyword: str) -> str | None:
    """JSON pointer (``#/...``) of the first schema object that uses ``keyword``, for error messages."""
    for path, node in _schema_objects(schema, "#"):
        if keyword in node:
            return path
    return None


def original_pattern(schema: object, rewritten: str) -> str:
    """The client's regex that :func:`portable_pattern` turned into ``rewritten`` (else ``rewritten``)."""
    for _, node in _schema_objects(schema, "#"):
        candidates = [node.get("pattern")]
        if isinstance(node.get("patternProperties"), dict):
            candidates += list(node["patternProperties"])
        for candidate in candidates:
            if isinstance(candidate, str) and _portable_or_none(candidate) == rewritten:
                return candidate
    return rewritten


def _portable_or_none(pattern: str) -> str | None:
    try:
        return portable_pattern(pattern)
    except BadRequest:
        return None


def _schema_objects(node: object, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _schema_objects(item, f"{path}/{i}")
        return
    if not isinstance(node, dict):
        return
    yield path, node
    for key, value in node.items():
        sub = f"{path}/{_escape(key)}"
        if key in _DATA_KEYWORDS:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            for name, v in value.items():
                yield from _schema_objects(v, f"{sub}/{_escape(name)}")
        else:
            yield from _schema_objects(value, sub)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
