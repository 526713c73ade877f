"""Schemas for the random-walk tests: each exercises one family of keywords (properties and enums, arrays,
``$defs``/``$ref`` with recursion, ``anyOf``, anchored patterns and formats, numeric bounds, root values)."""

from __future__ import annotations

from typing import Any

WALK_SCHEMAS: dict[str, dict[str, Any]] = {
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "email": {"type": "string", "format": "email", "maxLength": 30},
            "role": {"enum": ["admin", "user", None, 3]},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "arrays": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "minItems": 1, "maxItems": 3},
            "scores": {"type": "array", "items": {"type": "number", "minimum": -1, "exclusiveMaximum": 1},
                       "maxItems": 4},
            "pair": {"type": "array", "prefixItems": [{"type": "boolean"}, {"type": "null"}], "items": False,
                     "minItems": 2},
        },
        "required": ["tags", "pair"],
    },
    "refs": {
        "$defs": {
            "address": {"type": "object", "additionalProperties": False, "required": ["city", "zip"],
                        "properties": {"city": {"type": "string", "maxLength": 8},
                                       "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}},
            "node": {"type": "object", "additionalProperties": False, "required": ["value"],
                     "properties": {"value": {"type": "integer"},
                                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"},
                                                 "maxItems": 2}}},
        },
        "type": "object",
        "properties": {"home": {"$ref": "#/$defs/address"}, "tree": {"$ref": "#/$defs/node"}},
        "required": ["home", "tree"],
        "additionalProperties": False,
    },
    "any_of": {
        "type": "array",
        "maxItems": 5,
        "items": {"anyOf": [
            {"type": "string", "maxLength": 4},
            {"type": "integer", "minimum": 10, "maximum": 20},
            {"type": "null"},
            {"type": "object", "properties": {"k": {"const": "v"}}, "required": ["k"], "additionalProperties": False},
        ]},
    },
    "patterns": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"},
            "day": {"type": "string", "format": "date"},
            "at": {"type": "string", "format": "time"},
            "id": {"type": "string", "format": "uuid"},
            "ip": {"type": "string", "format": "ipv4"},
            "host": {"type": "string", "format": "hostname", "maxLength": 20},
            "word": {"type": "string", "pattern": "^\\S+$", "maxLength": 6},
        },
        "required": ["code", "day", "at", "id", "ip", "host", "word"],
        "additionalProperties": False,
    },
    "numbers": {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": -5, "maximum": 5},
            "x": {"type": "number", "multipleOf": 0.25, "minimum": 0, "maximum": 10},
            "big": {"type": "integer", "exclusiveMinimum": 1000},
        },
        "required": ["n", "x", "big"],
        "additionalProperties": False,
    },
    "root_integer": {"type": "integer", "minimum": 0, "maximum": 99999},
    "root_enum": {"enum": ["red", "green", "blue", 7, [1, 2]]},
    "counted": {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 1, "maxProperties": 3},
}
