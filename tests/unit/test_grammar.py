"""Structured outputs: ``parse_format`` (table-driven, exact messages) and the llguidance-backed masks with
SmolLM2's real tokenizer, where random walks under the mask must always produce schema-valid JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from jsonschema import Draft202012Validator

from ollama_torch.engine.grammar import compiler as grammar_mod
from ollama_torch.engine.grammar.compiler import (
    COMPACT,
    JSON_OBJECT,
    SPACED,
    FormatSpec,
    GrammarCompiler,
    GrammarViolation,
    JsonStyle,
    apply_grammar_masks,
    bounded_whitespace,
    parse_format,
)
from ollama_torch.engine.grammar.format import SUPPORTED_FORMATS
from ollama_torch.engine.grammar.regex import FORMAT_PATTERNS
from ollama_torch.errors import BadRequest
from tests.unit.grammar_support import (
    PADDED_VOCAB,
    SMOLLM2_EOS,
    feed_text,
    load_tokenizer,
    make_compiler,
    mask_bits,
    random_walks,
)
from tests.unit.grammar_walk_schemas import WALK_SCHEMAS

INVALID = '; expected "json" or a valid JSON Schema object'
UNSUPPORTED = "unsupported JSON schema in format: "


def nested_schema(levels: int) -> dict[str, Any]:
    """``levels`` object schemas, each the ``a`` property of the one above (2 JSON levels each)."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.fixture(scope="module")
def compiler(smollm2_gguf: Path) -> GrammarCompiler:
    return make_compiler(smollm2_gguf)


# ---------------------------------------------------------------------------------------------- parse_format


@pytest.mark.parametrize("value", [None, ""])
def test_unconstrained(value: object) -> None:
    assert parse_format(value) is None


def test_json_is_any_object() -> None:
    assert parse_format("json") is JSON_OBJECT
    assert JSON_OBJECT.schema() == {"type": "object"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yaml", r'invalid format: "\"yaml\""' + INVALID),
        ("JSON", r'invalid format: "\"JSON\""' + INVALID),
        (" json", r'invalid format: "\" json\""' + INVALID),
        ('{"type":"object"}', r'invalid format: "\"{\\\"type\\\":\\\"object\\\"}\""' + INVALID),
        (5, 'invalid format: "5"' + INVALID),
        (1.5, 'invalid format: "1.5"' + INVALID),
        (True, 'invalid format: "true"' + INVALID),
        (False, 'invalid format: "false"' + INVALID),
        ([], 'invalid format: "[]"' + INVALID),
        (["json"], r'invalid format: "[\"json\"]"' + INVALID),
        ("a\tb", r'invalid format: "\"a\\tb\""' + INVALID),
    ],
)
def test_invalid_format_values(value: object, message: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_format(value)
    assert err.value.status == 400
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "array", "uniqueItems": True}, UNSUPPORTED + 'keyword "uniqueItems" is not supported (at #)'),
        ({"properties": {"a": {"$ref": "#/$defs/x"}}, "$defs": {"x": {"not": {"type": "null"}}}},
         UNSUPPORTED + 'keyword "not" is not supported (at #/$defs/x)'),
        ({"if": {"type": "string"}, "then": {"maxLength": 3}},
         UNSUPPORTED + 'keywords "if", "then" are not supported (at #)'),
        ({"type": "array", "contains": {"type": "integer"}},
         UNSUPPORTED + 'keyword "contains" is not supported (at #)'),
        ({"type": "object", "dependentRequired": {"a": ["b"]}},
         UNSUPPORTED + 'keyword "dependentRequired" is not supported (at #)'),
        ({"type": "object", "propertyNames": {"maxLength": 3}},
         UNSUPPORTED + 'keyword "propertyNames" is not supported (at #)'),
        ({"type": "object", "unevaluatedProperties": False},
         UNSUPPORTED + 'keyword "unevaluatedProperties" is not supported (at #)'),
        ({"type": "string", "format": "uri-reference"},
         UNSUPPORTED + '"format": "uri-reference" is not supported (supported: ' + ", ".join(SUPPORTED_FORMATS)
         + ")"),
        ({"oneOf": [{"type": "number"}, {"type": "integer"}]},
         UNSUPPORTED + 'keyword "oneOf" is only supported when its branches cannot match the same value (at #); '
         'use "anyOf" if overlap is intended'),
        ({"$ref": "https://example.com/s.json"},
         UNSUPPORTED + 'remote "$ref" "https://example.com/s.json" is not supported (only references within the '
         "schema)"),
        ({"$ref": "#/$defs/missing"}, 'invalid JSON schema in format: "$ref" target "#/$defs/missing" does not exist'),
        ({"type": "string", "pattern": "^(?=a).$"},
         UNSUPPORTED + "regular expression /^(?=a).$/: look-around, including look-ahead and look-behind, is not "
         "supported"),
        ({"type": "string", "pattern": "^[a-z&&[^b]]$"},
         UNSUPPORTED + "regular expression /^[a-z&&[^b]]$/: '&&' inside a character class reads differently in "
         "ECMA-262 and Rust"),
        ({"type": "string", "pattern": "^[]$"},
         UNSUPPORTED + "regular expression /^[]$/: an empty class [] or [^] is not supported"),
        ({"type": "object", "minProperties": 2},
         UNSUPPORTED + 'keyword "minProperties" (2) needs more distinct optional keys than the grammar can guarantee '
         '(at #); it is supported up to the number of "required" properties + 1 (1)'),
        ({"allOf": [{"type": "string"}, {"type": "integer"}]},
         "invalid JSON schema in format: no JSON value satisfies it (incompatible types)"),
        ({"type": "strin"}, "invalid JSON schema in format: Invalid type: strin"),
        ({"type": "string", "minLength": "3"},
         "invalid JSON schema in format: Expected positive integer for 'minLength', got \"3\""),
        # deeper than llguidance's JSON reader goes (was "recursion limit exceeded at line 1 column 2236")
        (nested_schema(62), UNSUPPORTED + "it nests arrays and objects deeper than the grammar engine reads (128 levels)"),
        # llguidance's own options block cannot switch on lenient mode (it would drop "not")
        ({"x-guidance": {"lenient": True}, "not": {"type": "null"}},
         UNSUPPORTED + 'keyword "not" is not supported (at #)'),
    ],
)
def test_refused_schemas(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_format(schema)
    assert err.value.status == 400
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("schema", "enforced"),
    [
        ({}, {}),
        ({"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "string"}}},
         {"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "string"}},
          "additionalProperties": False}),
        ({"type": "array", "uniqueItems": False}, {"type": "array"}),
        ({"type": "array", "minContains": 2}, {"type": "array"}),
        ({"if": {"type": "string"}, "type": "string"}, {"type": "string"}),
        ({"else": {"type": "string"}}, {}),
        ({"type": "object", "propertyNames": True, "unevaluatedProperties": {}}, {"type": "object"}),
        ({"type": "object", "dependentRequired": {"a": []}}, {"type": "object"}),
        ({"x-guidance": {"whitespace_flexible": True}, "type": "object"}, {"type": "object"}),
        ({"type": "object", "minProperties": 2, "required": ["a"]},
         {"type": "object", "minProperties": 2, "required": ["a"]}),
        # a property *named* like a no-op keyword is a property, not a keyword
        ({"properties": {"if": {"type": "string"}, "uniqueItems": False}},
         {"properties": {"if": {"type": "string"}, "uniqueItems": False}, "additionalProperties": False}),
        ({"type": "string", "pattern": "^a.b\\s$"},
         {"type": "string", "pattern": "^a[^\\n\\r\\u2028\\u2029]b[\\t\\n\\x0B\\x0C\\r \\xA0\\u1680\\u2000-\\u200A"
                                       "\\u2028\\u2029\\u202F\\u205F\\u3000]$"}),
        ({"type": "string", "pattern": "[[a]"}, {"type": "string", "pattern": "[\\[a]"}),
        ({"type": "string", "format": "hostname", "maxLength": 300},
         {"type": "string", "maxLength": 253,
          "pattern": FORMAT_PATTERNS["hostname"][0]}),
    ],
)
def test_accepted_schemas(schema: dict[str, Any], enforced: dict[str, Any]) -> None:
    spec = parse_format(schema)
    assert spec is not None and spec.kind == "schema"
    assert spec.schema() == schema  # the client's schema is kept as sent
    assert json.loads(spec.enforced_text) == enforced


def test_format_with_pattern_goes_to_all_of() -> None:
    spec = parse_format({"type": "string", "format": "date", "pattern": "^2"})
    assert spec is not None
    enforced = json.loads(spec.enforced_text)
    assert enforced["pattern"] == "^2" and "format" not in enforced
    assert enforced["allOf"][0]["pattern"].startswith("^(?:")


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_supported_formats_compile(fmt: str) -> None:
    assert parse_format({"type": "string", "format": fmt}) is not None


def test_parse_format_imports_no_torch() -> None:
    code = ("import sys; import ollama_torch.engine.grammar.format as g; g.parse_format({'type': 'object'}); "
            "bad = [m for m in ('torch', 'transformers', 'aiohttp') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"item_separator": ";"}, "`item_separator` must be a comma with optional whitespace, got ';'"),
        ({"key_separator": " = "}, "`key_separator` must be a colon with optional whitespace, got ' = '"),
        ({"whitespace_pattern": "[ ]*"}, "`whitespace_pattern` must be bounded, got '[ ]*'"),
        ({"whitespace_pattern": "[ ]{1,}"}, "`whitespace_pattern` must be bounded, got '[ ]{1,}'"),
    ],
)
def test_json_style_validation(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as err:
        JsonStyle(**kwargs)
    assert str(err.value) == message


# ------------------------------------------------------------------------------------- compiler and states


def _spec(schema: dict[str, Any]) -> FormatSpec:
    spec = parse_format(schema)
    assert spec is not None
    return spec


def test_compiler_arguments(smollm2_gguf: Path) -> None:
    tok = load_tokenizer(smollm2_gguf)
    with pytest.raises(ValueError, match="`vocab_size` must be an int >= the tokenizer's size 49152"):
        GrammarCompiler(tok, 49000, SMOLLM2_EOS)
    with pytest.raises(ValueError, match="`eos_token_ids` must be non-empty ids below 49152"):
        GrammarCompiler(tok, 49152, [49152])
    default = GrammarCompiler(tok, 49152)
    assert default.eos_token_ids == (tok.eos_token_id,) and default.mask_words == 1536


def test_cache_reuses_compiled_grammars(compiler: GrammarCompiler) -> None:
    schema = {"type": "object", "properties": {"cache_probe": {"type": "integer"}}}
    first = compiler.compile(_spec(schema))
    hits = compiler.cache_info()[0]
    assert compiler.compile(_spec(dict(schema))) is first
    assert compiler.cache_info()[0] == hits + 1
    assert compiler.compile(_spec(schema), SPACED) is not first


def test_cache_evicts_least_recently_used(smollm2_gguf: Path) -> None:
    small = GrammarCompiler(load_tokenizer(smollm2_gguf), PADDED_VOCAB, SMOLLM2_EOS, cache_size=2)
    specs = [_spec({"type": "integer", "maximum": i}) for i in range(3)]
    a, b = (small.compile(s) for s in specs[:2])
    assert small.compile(specs[0]) is a  # a is now the most recent
    small.compile(specs[2])  # evicts b
    assert small.compile(specs[0]) is a
    assert small.compile(specs[1]) is not b


def test_eos_only_when_the_grammar_can_end(compiler: GrammarCompiler) -> None:
    state = compiler.new_state(_spec({"type": "object", "properties": {"a": {"type": "integer"}},
                                      "required": ["a"], "additionalProperties": False}))
    tokenize = compiler.ll_tokenizer.tokenize_str
    for token in tokenize('{"a":1'):
        assert not any(mask_bits(state)[e] for e in SMOLLM2_EOS)
        state.consume(token)
    assert not state.is_accepting() and not state.is_finished()
    (close,) = tokenize("}")
    state.consume(close)
    assert state.is_accepting() and state.is_finished()
    assert state.allowed_token_ids() == sorted(SMOLLM2_EOS)  # complete: only end-of-sequence
    with pytest.raises(GrammarViolation, match="is not allowed by the format grammar"):
        state.consume(tokenize("x")[0])


def test_eos_alongside_digits_for_a_root_number(compiler: GrammarCompiler) -> None:
    state = compiler.new_state(_spec({"type": "integer", "minimum": 0, "maximum": 999}))
    assert not any(mask_bits(state)[e] for e in SMOLLM2_EOS)
    state.consume(compiler.ll_tokenizer.tokenize_str("4")[0])
    allowed = mask_bits(state)
    assert state.is_accepting() and not state.is_finished()
    assert all(allowed[e] for e in SMOLLM2_EOS) and allowed[compiler.ll_tokenizer.tokenize_str("2")[0]]
    state.consume(SMOLLM2_EOS[0])
    assert state.is_finished() and state.error is None


def test_rejected_token_leaves_only_eos(compiler: GrammarCompiler) -> None:
    state = compiler.new_state(JSON_OBJECT)
    with pytest.raises(GrammarViolation):
        state.consume(SMOLLM2_EOS[0])  # nothing generated yet: cannot end
    assert state.error is not None and state.is_finished()
    logits = torch.zeros(1, PADDED_VOCAB)
    apply_grammar_masks(logits, [(0, state)])
    assert torch.isfinite(logits[0]).nonzero().flatten().tolist() == sorted(SMOLLM2_EOS)


@pytest.mark.parametrize(
    ("style", "accepted", "rejected"),
    [
        (COMPACT, ['{"a":1,"b":[1,2]}'], ['{"a": 1}', '{"a":1, "b":[]}', ' {"a":1}', '{"a":1}\n']),
        (SPACED, ['{"a": 1, "b": [1, 2]}'], ['{"a":1}', '{"a": 1,"b": []}', '{"a":  1}']),
        (bounded_whitespace(2), ['{"a":1}', '{ "a" : 1 }', '{\n "a": [1,  2]\n}'], ['{"a":   1}', '{\n  "a":1}']),
    ],
)
def test_whitespace_is_bounded(compiler: GrammarCompiler, style: JsonStyle, accepted: list[str],
                               rejected: list[str]) -> None:
    compiled = compiler.compile(JSON_OBJECT, style)
    for text in accepted:
        assert feed_text(compiled.new_state(), text), text
    for text in rejected:
        assert not feed_text(compiled.new_state(), text), text


def test_masks_only_touch_constrained_rows(compiler: GrammarCompiler) -> None:
    states = [compiler.new_state(JSON_OBJECT) for _ in range(2)]
    logits = torch.randn(4, PADDED_VOCAB)
    before = logits.clone()
    apply_grammar_masks(logits, [(1, states[0]), (3, states[1])])
    assert torch.equal(logits[0], before[0]) and torch.equal(logits[2], before[2])
    for row, state in ((1, states[0]), (3, states[1])):
        allowed = torch.isfinite(logits[row])
        assert allowed.nonzero().flatten().tolist() == state.allowed_token_ids()
        assert torch.equal(logits[row][allowed], before[row][allowed])
    with pytest.raises(ValueError, match=r"logits must be \[B, 49160\]"):
        apply_grammar_masks(torch.zeros(1, 49152), [(0, states[0])])


def test_states_from_two_compilers_are_refused(compiler: GrammarCompiler, smollm2_gguf: Path) -> None:
    other = GrammarCompiler(load_tokenizer(smollm2_gguf), PADDED_VOCAB, SMOLLM2_EOS)
    rows = [(0, compiler.new_state(JSON_OBJECT)), (1, other.new_state(JSON_OBJECT))]
    with pytest.raises(ValueError, match="same GrammarCompiler"):
        apply_grammar_masks(torch.zeros(2, PADDED_VOCAB), rows)


def test_parallel_and_serial_fill_agree(compiler: GrammarCompiler) -> None:
    spec = _spec({"type": "array", "items": {"type": "string", "maxLength": 3}})
    states = [compiler.new_state(spec) for _ in range(9)]
    for i, state in enumerate(states):
        for token in compiler.ll_tokenizer.tokenize_str('["ab", "c'[: i + 1].replace(" ", "")):
            state.consume(token)
    parallel = torch.zeros(len(states), compiler.mask_words, dtype=torch.int32)
    default, compiler.parallel_fill_min_rows = compiler.parallel_fill_min_rows, 2  # the thread pool
    try:
        compiler.fill_bitmask(states, parallel)
    finally:
        compiler.parallel_fill_min_rows = default
    serial = torch.zeros_like(parallel)
    for i, state in enumerate(states):
        state.fill_mask(serial[i])
    assert torch.equal(parallel, serial)


def test_device_unpack_matches_cpu_unpack() -> None:
    bitmask = torch.randint(-(2**31), 2**31 - 1, (3, 7), dtype=torch.int32)
    cpu = grammar_mod._unpack(bitmask, 200, torch.device("cpu"))
    assert torch.equal(grammar_mod._unpack_shifts(bitmask, 200), cpu)
    word, bit = divmod(37, 32)
    assert bool(cpu[0, 37]) == bool((int(bitmask[0, word]) >> bit) & 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_masks_match_cpu(compiler: GrammarCompiler) -> None:
    states = [compiler.new_state(JSON_OBJECT) for _ in range(2)]
    logits = torch.randn(3, PADDED_VOCAB)
    on_gpu = logits.to("cuda", torch.bfloat16)
    apply_grammar_masks(logits, [(0, states[0]), (2, states[1])])
    apply_grammar_masks(on_gpu, [(0, states[0]), (2, states[1])])
    assert torch.equal(torch.isfinite(on_gpu.float().cpu()), torch.isfinite(logits))


# ------------------------------------------------------------------------------------------- random walks

@pytest.mark.parametrize("name", [*WALK_SCHEMAS, "json"])
def test_random_walks_yield_valid_json(compiler: GrammarCompiler, name: str) -> None:
    spec = JSON_OBJECT if name == "json" else _spec(WALK_SCHEMAS[name])
    # the draft's own checker: a bare FormatChecker() also carries draft 3's "time" (no offset allowed)
    validator = Draft202012Validator(spec.schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)
    compiled = compiler.compile(spec)
    states = [compiled.new_state() for _ in range(8)]
    walks = random_walks(states, seed=sum(map(ord, name)))
    for walk, state in zip(walks, states, strict=True):
        text = compiler.ll_tokenizer.decode_bytes(walk.tokens).decode("utf-8")
        assert walk.ended, f"no end-of-sequence after {len(walk.tokens)} tokens: {text[:200]!r}"
        assert walk.eos_violations == 0 and walk.padded_allowed == 0 and state.error is None
        value = json.loads(text)
        validator.validate(value)
