"""Which object schemas are closed by default: unlisted keys not allowed, as llama.cpp (Ollama's engine) does.

JSON Schema lets an object schema that lists ``properties`` but says nothing about ``additionalProperties``
accept any other key too, and a grammar that follows it lets the model add keys of its own (a pydantic
``Country{name, capital, languages}`` came back with extra ``country`` and ``capital_city`` keys, and small
models then looped until ``length``). llama.cpp's ``json-schema-to-grammar`` (Ollama's) and XGrammar do
not: an absent ``additionalProperties`` there means no other key. We do the same, by adding
``additionalProperties: false`` to such schemas before the grammar is built; every output still validates
against the schema as sent. ``additionalProperties: true`` or a schema keeps other keys allowed, a schema
without ``properties`` (``{"type": "object"}``) stays any object, and one with ``patternProperties`` is left
as written (its patterns say which other keys are welcome).

Closing is only safe where the object schema is the one description of its instance's keys. Where it is
applied together with other schemas to the same value (an ``allOf`` member, a schema with ``$ref``,
``anyOf``, ``if``... beside its ``properties``, the target of a ``$ref`` that has such siblings), closing it
would forbid keys the others list or require, so those are left open, as JSON Schema reads them. A ``$ref``
target is closed only if every reference to it is used alone. A schema whose references cannot be followed
as pointers into the document (``#anchor``, a relative URI, ``$dynamicRef``, or an ``$id`` below the root,
which moves what ``#/...`` means) is left entirely as written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

# keywords that apply subschemas to the same instance
_APPLICATORS = frozenset({"allOf", "anyOf", "oneOf", "$ref", "$dynamicRef", "if", "then", "else", "not",
                          "dependentSchemas", "dependencies"})
# keywords that list, require or count an object's keys
_OBJECT_KEYWORDS = frozenset({"properties", "patternProperties", "additionalProperties", "unevaluatedProperties",
                              "required", "dependentRequired", "dependentSchemas", "dependencies", "minProperties",
                              "maxProperties", "propertyNames"})
# keyword -> its subschemas describe other values (members, items), so they start a fresh context
_INSTANCE_KEYWORDS = frozenset({"properties", "patternProperties", "additionalProperties", "unevaluatedProperties",
                                "propertyNames", "items", "prefixItems", "additionalItems", "unevaluatedItems",
                                "contains", "contentSchema", "$defs", "definitions"})
_SAME_VALUE_ONLY = frozenset({"if", "then", "else", "not", "dependentSchemas", "dependencies"})
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas",
                          "dependencies"})


@dataclass(frozen=True)
class _Context:
    """How a schema is applied: ``alone`` unless something beside it (found on the way down) describes the
    same value's keys; ``roots`` are the ``$ref`` targets on that way, whose own use decides too."""

    alone: bool = True
    roots: tuple[str, ...] = ()


def closed_objects(schema: object) -> set[str]:
    """JSON pointers (``#/...``, as ``grammar/schema`` writes them) of the object schemas to close."""
    targets, opaque = _ref_targets(schema)
    if opaque:
        return set()
    candidates: list[tuple[str, _Context]] = []
    combined: set[str] = set()  # targets used beside other schemas
    follows: dict[str, set[str]] = {}  # root -> targets whose use is combined when that root is
    for path, node, ctx in _walk(schema, "#", _Context(), targets):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            target = unquote(ref)
            if not ctx.alone or (node.keys() & (_OBJECT_KEYWORDS | _APPLICATORS)) - {"$ref"}:
                combined.add(target)
            for root in ctx.roots:
                follows.setdefault(root, set()).add(target)
        if ctx.alone and _closable(node):
            candidates.append((path, ctx))
    work = list(combined)
    while work:
        for target in follows.get(work.pop(), ()):
            if target not in combined:
                combined.add(target)
                work.append(target)
    return {path for path, ctx in candidates if path not in combined and not set(ctx.roots) & combined}


def _closable(node: dict[str, Any]) -> bool:
    """Lists ``properties``, says nothing of other keys, applies nothing else to the value, and does not
    itself ask for keys beyond its ``properties`` (``required`` or ``minProperties`` past them)."""
    properties = node.get("properties")
    if not isinstance(properties, dict) or "additionalProperties" in node or "patternProperties" in node:
        return False
    if node.keys() & _APPLICATORS:
        return False
    required = node.get("required")
    if isinstance(required, list) and any(name not in properties for name in required):
        return False
    minimum = node.get("minProperties")
    return not (isinstance(minimum, int) and minimum > len(properties))


def _ref_targets(schema: object) -> tuple[set[str], bool]:
    """The JSON pointers ``$ref``\\ s name, and whether some reference may mean something else (see above)."""
    targets: set[str] = set()
    opaque = False
    stack: list[tuple[object, bool]] = [(schema, True)]
    while stack:
        node, root = stack.pop()
        if isinstance(node, list):
            stack.extend((item, False) for item in node)
        elif isinstance(node, dict):
            opaque = opaque or (not root and "$id" in node) or "$dynamicRef" in node
            ref = node.get("$ref")
            if isinstance(ref, str):
                if ref == "#" or ref.startswith("#/"):
                    targets.add(unquote(ref))
                else:
                    opaque = True
            stack.extend((v, False) for k, v in node.items() if k not in _DATA_KEYWORDS)
    return targets, opaque


def _walk(node: object, path: str, ctx: _Context, targets: set[str]) -> Iterator[tuple[str, dict[str, Any], _Context]]:
    """Every schema object with its pointer and context (iterative: schemas may nest deeply)."""
    stack: list[tuple[object, str, _Context]] = [(node, path, ctx)]
    while stack:
        node, path, ctx = stack.pop()
        if path in targets:
            ctx = _Context(ctx.alone, (*ctx.roots, path))
        if isinstance(node, list):
            stack.extend((item, f"{path}/{i}", ctx) for i, item in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        yield path, node, ctx
        for key, value in node.items():
            if key in _DATA_KEYWORDS:
                continue
            sub = f"{path}/{_escape(key)}"
            child = _child_context(node, key, ctx)
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                stack.extend((v, f"{sub}/{_escape(name)}", child) for name, v in value.items())
            else:
                stack.append((value, sub, child))


def _child_context(node: dict[str, Any], key: str, ctx: _Context) -> _Context:
    if key in _INSTANCE_KEYWORDS or key not in _APPLICATORS:
        return _Context()  # another value, or an unknown keyword's schema (a $ref target if anything)
    if key in _SAME_VALUE_ONLY:
        return _Context(False, ctx.roots)
    others = (node.keys() & (_OBJECT_KEYWORDS | _APPLICATORS)) - {key}
    members = node.get(key)
    alone = ctx.alone and not others and (key != "allOf" or (isinstance(members, list) and len(members) == 1))
    return _Context(alone, ctx.roots)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
