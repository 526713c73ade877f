"""Objects closed by default (``grammar/closed``): which object schemas get ``additionalProperties: false``
(table-driven, through ``parse_format``), and what the grammar then lets the model write (SmolLM2's
tokenizer: token-by-token feeding and random walks under the mask)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ollama_torch.engine.grammar.closed import closed_objects
from ollama_torch.engine.grammar.compiler import GrammarCompiler, parse_format
from tests.unit.grammar_support import feed_text, make_compiler, random_walks

# what pydantic writes for Country(name: str, capital: str, languages: list[str]) (ollama-python's example)
COUNTRY = {
    "properties": {
        "name": {"title": "Name", "type": "string"},
        "capital": {"title": "Capital", "type": "string"},
        "languages": {"items": {"type": "string"}, "title": "Languages", "type": "array"},
    },
    "required": ["name", "capital", "languages"],
    "title": "Country",
    "type": "object",
}
A = {"type": "integer"}
CLOSED = {"additionalProperties": False}


@pytest.fixture(scope="module")
def compiler(smollm2_gguf: Path) -> GrammarCompiler:
    return make_compiler(smollm2_gguf)


def enforced(schema: dict[str, Any]) -> dict[str, Any]:
    spec = parse_format(schema)
    assert spec is not None
    value: dict[str, Any] = json.loads(spec.enforced_text)
    return value


@pytest.mark.parametrize(("schema", "expected"), [
    (COUNTRY, {**COUNTRY, **CLOSED}),
    # nested objects, array items and $defs targets used alone are closed too
    ({"properties": {"o": {"properties": {"a": A}}, "l": {"items": {"properties": {"a": A}}}}},
     {"properties": {"o": {"properties": {"a": A}, **CLOSED}, "l": {"items": {"properties": {"a": A}, **CLOSED}}},
      **CLOSED}),
    ({"$ref": "#/$defs/N", "$defs": {"N": {"properties": {"next": {"$ref": "#/$defs/N"}}}}},
     {"$ref": "#/$defs/N", "$defs": {"N": {"properties": {"next": {"$ref": "#/$defs/N"}}, **CLOSED}}}),
    # pydantic v1's allOf wrapper around one $ref is the reference used alone
    ({"allOf": [{"$ref": "#/definitions/C"}], "definitions": {"C": {"properties": {"a": A}}}},
     {"allOf": [{"$ref": "#/definitions/C"}], "definitions": {"C": {"properties": {"a": A}, **CLOSED}}}),
    # union branches each describe the whole value
    ({"anyOf": [{"properties": {"a": A}}, {"type": "null"}]},
     {"anyOf": [{"properties": {"a": A}, **CLOSED}, {"type": "null"}]}),
    # kept open: said so, a schema for other keys, no properties, patternProperties
    ({"properties": {"a": A}, "additionalProperties": True}, None),
    ({"properties": {"a": A}, "additionalProperties": {"type": "string"}}, None),
    ({"type": "object"}, None),
    ({"properties": {"a": A}, "patternProperties": {"^x": A}}, None),
    # kept open: combined with other schemas that describe the same value's keys
    ({"allOf": [{"properties": {"a": A}}, {"properties": {"b": A}}]}, None),
    ({"properties": {"a": A}, "anyOf": [{"properties": {"b": A}}, {"required": ["a"]}]}, None),
    ({"$ref": "#/$defs/B", "properties": {"a": A}, "$defs": {"B": {"properties": {"b": A}}}}, None),
    # a reference used beside other keywords keeps its target open, wherever else it is used alone
    ({"properties": {"x": {"$ref": "#/$defs/B"}, "y": {"$ref": "#/$defs/B", "required": ["c"]}},
      "$defs": {"B": {"properties": {"b": A}}}},
     {"properties": {"x": {"$ref": "#/$defs/B"}, "y": {"$ref": "#/$defs/B", "required": ["c"]}},
      "$defs": {"B": {"properties": {"b": A}}}, **CLOSED}),
    # kept open: the schema itself asks for keys it does not list
    ({"properties": {"a": A}, "required": ["a", "b"]}, None),
    ({"properties": {"a": A}, "minProperties": 2, "required": ["a"]}, None),
    # references that are not pointers into this document: nothing is closed
    ({"properties": {"a": {"$ref": "#n"}}, "$defs": {"n": {"$anchor": "n", "properties": {"b": A}}}}, None),
    ({"properties": {"a": {"$id": "inner.json", "properties": {"b": A}}}}, None),
])
def test_which_objects_are_closed(schema: dict[str, Any], expected: dict[str, Any] | None) -> None:
    assert enforced(schema) == (schema if expected is None else expected)
    assert parse_format(schema).schema() == schema  # type: ignore[union-attr]  # the client's schema as sent


@pytest.mark.parametrize("schema", [
    {"properties": {"a": A}, "if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}},
    {"properties": {"a": A}, "dependentSchemas": {"a": {"properties": {"b": A}}}},
    {"not": {"properties": {"a": A}}},
])
def test_schemas_applied_with_keywords_llguidance_refuses_stay_open(schema: dict[str, Any]) -> None:
    """Not reachable through ``format`` today (llguidance refuses these keywords), kept right regardless."""
    assert closed_objects(schema) == set()


def test_deep_schemas_are_walked_without_recursion() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(2000):
        schema = {"properties": {"a": schema}}
    assert len(closed_objects(schema)) == 2000


@pytest.mark.parametrize(("schema", "text", "accepted"), [
    (COUNTRY, '{"name":"Canada","capital":"Ottawa","languages":["English","French"]}', True),
    (COUNTRY, '{"name":"Canada","capital":"Ottawa","languages":[],"country":"Canada"}', False),
    ({**COUNTRY, "additionalProperties": True}, '{"name":"C","capital":"O","languages":[],"capital_city":"O"}', True),
    ({**COUNTRY, "additionalProperties": {"type": "integer"}}, '{"name":"C","capital":"O","languages":[],"x":1}', True),
    ({"type": "object"}, '{"anything":{"goes":[1]}}', True),
])
def test_unlisted_keys(compiler: GrammarCompiler, schema: dict[str, Any], text: str, accepted: bool) -> None:
    spec = parse_format(schema)
    assert spec is not None
    assert feed_text(compiler.compile(spec).new_state(), text) is accepted


def test_random_walks_write_exactly_the_listed_keys(compiler: GrammarCompiler) -> None:
    """Whatever the sampler picks, a pydantic model's output has its fields and nothing else (random
    walks wrote extra keys before: JSON Schema allows them when ``additionalProperties`` is absent)."""
    spec = parse_format(COUNTRY)
    assert spec is not None
    compiled = compiler.compile(spec)
    states = [compiled.new_state() for _ in range(16)]
    for walk in random_walks(states, seed=8, max_steps=400):
        assert walk.ended
        value = json.loads(compiler.ll_tokenizer.decode_bytes(walk.tokens).decode("utf-8"))
        assert list(value) == ["name", "capital", "languages"]
