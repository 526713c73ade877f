"""Ollama's ``format`` field: parse it, and refuse up front any schema the grammar engine cannot enforce.

This module owns the boundary between a request's ``format`` value and the grammar engine
(llguidance, see ``grammar/compiler.py``). It imports neither torch nor transformers, so the HTTP layer can call
:func:`parse_format` while validating a request, before anything is queued:

* absent / ``null`` / ``""`` -> ``None`` (unconstrained);
* ``"json"`` -> any JSON *object* at the root (Ollama's fixed ``json`` grammar is root-object only);
* an object -> a JSON Schema (draft 2020-12 semantics);
* anything else -> 400 with Ollama's text ``invalid format: "<raw>"; expected "json" or a valid JSON Schema
  object`` (``<raw>`` quoted as Go's ``%q`` quotes the raw JSON).

Fail closed: a schema the engine cannot enforce is refused with a 400 naming the keyword, never silently
dropped or loosened. llguidance runs in strict mode (``lenient``/``coerce_one_of`` off, forced through its
``overrides`` so a schema's own ``x-guidance`` block cannot switch them on), and ``grammar/schema.py`` adds
the checks for what llguidance accepts but cannot fully enforce.

Whitespace is bounded so that whitespace cannot keep a constrained generation going (the classic failure is
a model emitting whitespace forever where the grammar allows any amount); a schema whose values are
unbounded (``"json"``, recursion, strings or arrays without a maximum) still ends only at ``num_predict``.
The default :data:`COMPACT` style allows no whitespace at all: ``{"a":1,"b":[2,3]}``. :data:`SPACED`
reproduces Python's ``json.dumps`` default (``{"a": 1, "b": [2, 3]}``), which models see more often in
training; :func:`bounded_whitespace` allows up to N whitespace characters at each place JSON permits them.
All three are finite per position.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llguidance import LLMatcher

from ollama_torch.engine.grammar.limits import start_error
from ollama_torch.engine.grammar.schema import find_keyword, normalise_schema, original_pattern
from ollama_torch.errors import BadRequest

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

# String formats llguidance enforces (checked by tests/unit/test_grammar.py); any other is refused.
SUPPORTED_FORMATS = ("date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid", "uri")

_SEPARATOR = {"item": re.compile(r"[ \t\n\r]*,[ \t\n\r]*"), "key": re.compile(r"[ \t\n\r]*:[ \t\n\r]*")}


@dataclass(frozen=True)
class JsonStyle:
    """How much whitespace the grammar lets the model put between JSON tokens.

    ``item_separator`` / ``key_separator`` are emitted verbatim; ``whitespace_pattern`` (a regex matched
    at most once at each place JSON allows whitespace) is ``None`` for none at all. Keep it bounded
    (``{0,N}``): an unbounded pattern lets a generation run to ``num_predict``.
    """

    item_separator: str = ","
    key_separator: str = ":"
    whitespace_pattern: str | None = None

    def __post_init__(self) -> None:
        for kind, sep in (("item", self.item_separator), ("key", self.key_separator)):
            if not _SEPARATOR[kind].fullmatch(sep):
                raise ValueError(f"`{kind}_separator` must be {'a comma' if kind == 'item' else 'a colon'} "
                                 f"with optional whitespace, got {sep!r}")
        if self.whitespace_pattern is not None and re.search(r"[+*]|\{\d*,\}", self.whitespace_pattern):
            raise ValueError(f"`whitespace_pattern` must be bounded, got {self.whitespace_pattern!r}")

    def options(self) -> JsonCompileOptions:
        """llguidance's JSON options for this style, strict mode included (applied as overrides)."""
        opts: JsonCompileOptions = {
            "item_separator": self.item_separator,
            "key_separator": self.key_separator,
            "whitespace_flexible": False,
            "lenient": False,
            "coerce_one_of": False,
        }
        if self.whitespace_pattern is not None:
            opts["whitespace_pattern"] = self.whitespace_pattern
        return opts


COMPACT = JsonStyle()
SPACED = JsonStyle(item_separator=", ", key_separator=": ")


def bounded_whitespace(max_chars: int) -> JsonStyle:
    """Compact separators plus up to ``max_chars`` JSON whitespace characters wherever JSON allows them."""
    if not 1 <= max_chars <= 64:
        raise ValueError(f"`max_chars` must be an int in 1..64, got {max_chars!r}")
    return JsonStyle(whitespace_pattern=rf"[\x20\x0A\x0D\x09]{{0,{max_chars}}}")


@dataclass(frozen=True)
class FormatSpec:
    """A validated ``format``. ``schema_text`` is the client's schema as compact JSON (key order kept:
    the grammar emits properties in ``properties`` order); ``enforced_text`` is the equivalent schema the
    grammar is built from (no-op keywords dropped, patterns and formats made exact; see ``grammar/schema``)
    and the grammar cache key."""

    kind: Literal["json", "schema"]
    schema_text: str = field(repr=False)
    enforced_text: str = field(repr=False)

    def schema(self) -> dict[str, Any]:
        """A fresh copy of the schema, e.g. to validate a finished output with ``jsonschema``."""
        value: dict[str, Any] = json.loads(self.schema_text)
        return value


JSON_OBJECT = FormatSpec(kind="json", schema_text='{"type":"object"}', enforced_text='{"type":"object"}')


def parse_format(value: object) -> FormatSpec | None:
    """Ollama's ``format`` value -> a validated spec, ``None`` when unconstrained; 400 when invalid or
    not enforceable. Cheap for a schema seen before (validation results are cached by schema text)."""
    if value is None or (isinstance(value, str) and value == ""):
        return None
    if isinstance(value, str) and value == "json":
        return JSON_OBJECT
    if not isinstance(value, dict):
        raw = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        raise BadRequest(f'invalid format: {go_quote(raw)}; expected "json" or a valid JSON Schema object')
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:  # 1e400 reads as inf: not a number JSON (or a schema) can hold
        raise BadRequest("invalid JSON schema in format: a number in it is out of range") from None
    return _validated_spec(text)


@functools.lru_cache(maxsize=256)
def _validated_spec(text: str) -> FormatSpec:
    schema = normalise_schema(json.loads(text))  # raises BadRequest for what llguidance would loosen
    enforced = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    build_grammar(enforced, COMPACT, validate=True, client_text=text)
    return FormatSpec(kind="schema", schema_text=text, enforced_text=enforced)


def build_grammar(schema_text: str, style: JsonStyle, *, validate: bool, client_text: str | None = None) -> str:
    """llguidance's grammar for an enforced schema (no tokenizer needed); with ``validate``, 400 if it
    refuses it or cannot start it (``grammar/limits.start_error``). Without ``validate`` the caller must
    check the ``LLMatcher`` it builds (``is_error``). ``client_text`` (the schema as sent) lets error
    messages quote the client's own regexes.
    """
    try:
        grammar = LLMatcher.grammar_from_json_schema(schema_text, overrides=style.options())
        if not validate:
            return grammar
        error = start_error(grammar)
    except ValueError as exc:  # llguidance's own argument checks
        if _TOO_DEEP.search(str(exc)):
            raise BadRequest(translate_error(str(exc), schema_text, client_text)) from None
        raise BadRequest(f"invalid JSON schema in format: {exc}") from exc
    if error is not None:
        raise BadRequest(translate_error(error or "unknown error", schema_text, client_text))
    return grammar


_UNIMPLEMENTED = re.compile(r"Unimplemented keys: \[(.*)\]")
_UNKNOWN_FORMAT = re.compile(r"Unknown format: (.*)")
_REMOTE = re.compile(r"Resource '([^']*)' is not present")
_POINTER = re.compile(r"Pointer '([^']*)' does not exist")
_INVALID_PREFIXES = ("Invalid", "Expected", "schema must be", "Unsatisfiable", "Unknown type")
# llguidance reads JSON with serde_json, which refuses more than 128 nested arrays/objects
_TOO_DEEP = re.compile(r"recursion limit exceeded")
READER_DEPTH = 128
# parser limits met while starting the grammar (grammar/limits.start_error)
_ROW = re.compile(r"Current row has (\d+) items; max is (\d+)")
_STEP = re.compile(r"Too many items \(limit (\d+); (\w+)\)")
_CANNOT_START = "the grammar engine cannot start it: "


def translate_error(message: str, schema_text: str, client_text: str | None = None) -> str:
    """llguidance's error text -> the 400 message a client sees, naming the keyword and where it is."""
    first = message.strip().splitlines()[0] if message.strip() else message
    prefix = "unsupported JSON schema in format: "
    if _TOO_DEEP.search(first):
        return f"{prefix}it nests arrays and objects deeper than the grammar engine reads ({READER_DEPTH} levels)"
    if m := _ROW.search(first):
        return (f"{prefix}{_CANNOT_START}{m.group(1)} alternatives at one point, over its limit of {m.group(2)} "
                "(the usual cause is many optional properties in one object, or a union of many objects)")
    if (m := _STEP.search(first)) and m.group(2) == "ff_tokens":
        return (f"{prefix}{_CANNOT_START}the output it forces does not end within {m.group(1)} parser items "
                "(the usual cause is a required property that refers back to its own object: no finite JSON "
                "value satisfies that)")
    if m:
        return f"{prefix}{_CANNOT_START}one step needs more than {m.group(1)} parser items"
    if m := _UNIMPLEMENTED.match(first):
        keys = json.loads(f"[{m.group(1)}]")
        names = ", ".join(f'"{k}"' for k in keys)
        where = find_keyword(json.loads(schema_text), keys[0])
        at = f" (at {where})" if where is not None else ""
        noun = "keyword" if len(keys) == 1 else "keywords"
        verb = "is" if len(keys) == 1 else "are"
        return f"{prefix}{noun} {names} {verb} not supported{at}"
    if m := _UNKNOWN_FORMAT.match(first):
        supported = ", ".join(SUPPORTED_FORMATS)
        return f'{prefix}"format": "{m.group(1)}" is not supported (supported: {supported})'
    if first.startswith("oneOf constraints are not supported"):
        where = find_keyword(json.loads(schema_text), "oneOf")
        at = f" (at {where})" if where is not None else ""
        return (f'{prefix}keyword "oneOf" is only supported when its branches cannot match the same value'
                f'{at}; use "anyOf" if overlap is intended')
    if m := _REMOTE.match(first):
        return f'{prefix}remote "$ref" "{m.group(1)}" is not supported (only references within the schema)'
    if m := _POINTER.match(first):
        return f'invalid JSON schema in format: "$ref" target "#{m.group(1)}" does not exist'
    if first.startswith("regex parse error"):
        lines = [ln.strip() for ln in message.strip().splitlines()]
        detail = next((ln[len("error:"):].strip() for ln in lines if ln.startswith("error:")), "")
        pattern = lines[1] if len(lines) > 1 else ""
        if client_text is not None:
            pattern = original_pattern(json.loads(client_text), pattern)
        return f"{prefix}regular expression /{pattern}/: {detail or first}"
    if first.startswith("Unsatisfiable schema"):
        reason = first.split(":", 1)[1].strip() if ":" in first else first
        return f"invalid JSON schema in format: no JSON value satisfies it ({reason})"
    if first.startswith(_INVALID_PREFIXES):
        return f"invalid JSON schema in format: {first}"
    return f"{prefix}{first}"


def go_quote(text: str) -> str:
    """Quote like Go's ``%q`` (``strconv.Quote``) does, as Ollama's error message quotes the raw ``format``."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                        "\v": "\\v"}[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not ch.isprintable():
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
