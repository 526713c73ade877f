"""Schemas llguidance compiles but cannot run: found before any token, not at the first one.

llguidance checks some of its parser limits (``ParserLimits``) only while it parses output: an Earley row
larger than ``max_items_in_row`` (2000), or more than ``step_max_items`` (50000) items in one step. Two
kinds of schema compile fine and then fail on the first token, which was a 500 after the request had run:

* many optional properties in one object: the row right after ``{`` holds the alternatives for every
  property that may come first (a 10,000-property ``format``: "Current row has 40007 items; max is 2000");
* a property that is required and refers back to its own object (``{"$ref": "#"}``): the output the
  grammar forces never ends ("Too many items (limit 50000; ff_tokens)"); no finite JSON value satisfies it.

Two checks, both torch-free and tokenizer-free, so ``parse_format`` makes them while validating a request:

* :func:`check_leading_optional` (per object, nested ones included, linear): the row after ``{`` holds
  llguidance's alternatives for the k optional properties listed before the first required one
  (``ordered_sequence`` in its JSON compiler): ``3k+1`` items when a required one follows, at least
  ``4k-1`` when none does (``4k+7`` with other keys allowed), pinned by ``tests/unit/test_grammar_limits.py``.
  Past 666 and 500 (with ``max_items_in_row`` 2000) such an object can never start. This also keeps a
  10,000-property schema a millisecond refusal instead of a quadratic compile.
* :func:`start_error`: the grammar is built over a 256-byte vocabulary (the row sizes do not depend on the
  tokenizer) and started the way generation starts it: the first mask, then every byte it allows
  consumed on a copy, then the next mask. Any llguidance error there is the reason the schema cannot run.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from llguidance import LLMatcher, LLParserLimits, LLTokenizer, TokenizerWrapper

from ollama_torch.errors import BadRequest

MAX_ITEMS_IN_ROW = LLParserLimits().max_items_in_row
MAX_LEADING_OPTIONAL = (MAX_ITEMS_IN_ROW - 1) // 3  # 3k+1 items, before a required property
MAX_OPTIONAL = (MAX_ITEMS_IN_ROW + 1) // 4  # at least 4k-1 items, in an object with no required property
_END = 256  # the byte vocabulary's end-of-sequence id


class _ByteVocabulary:
    """A tokenizer whose tokens are the 256 bytes (plus an end token), in llguidance's wrapper protocol."""

    eos_token_id = _END
    bos_token_id = None
    tokens: Sequence[bytes] = [bytes([i]) for i in range(256)] + [b"<|end|>"]
    special_token_ids: Sequence[int] = [_END]

    def __call__(self, text: bytes | str) -> list[int]:
        return list(text if isinstance(text, bytes) else text.encode())


@functools.cache
def byte_tokenizer() -> LLTokenizer:
    return LLTokenizer(TokenizerWrapper(_ByteVocabulary()))


def check_leading_optional(node: dict[str, Any], path: str) -> None:
    """400 when an object schema lists more optional properties before its first required one than
    llguidance's parser can hold as alternatives (see the module docstring)."""
    properties = node.get("properties")
    if not isinstance(properties, dict) or len(properties) <= MAX_OPTIONAL:
        return
    required = node.get("required")
    names = set(required) if isinstance(required, list) else set()
    leading = next((i for i, name in enumerate(properties) if name in names), None)
    if leading is None and len(properties) > MAX_OPTIONAL:
        where = f"{len(properties)} optional properties and no required one (at {path})"
        limit = MAX_OPTIONAL
    elif leading is not None and leading > MAX_LEADING_OPTIONAL:
        where = f"{leading} optional properties before the first required one (at {path})"
        limit = MAX_LEADING_OPTIONAL
    else:
        return
    raise BadRequest(f"unsupported JSON schema in format: {where} are more alternatives than the grammar engine "
                     f"can hold at one point (at most {limit}); make some of them required, or split the object")


def start_error(grammar: str) -> str | None:
    """llguidance's error for ``grammar`` (from ``LLMatcher.grammar_from_*``) when it is invalid or cannot
    get past its first byte of output; ``None`` when it starts."""
    matcher = LLMatcher(byte_tokenizer(), grammar, log_level=0)
    if matcher.is_error():
        return matcher.get_error()
    for byte in _allowed(matcher):
        if byte == _END:
            continue
        probe = matcher.deep_copy()
        if probe.consume_token(byte):
            probe.compute_bitmask()
        if probe.is_error():
            return probe.get_error()
    return None


def _allowed(matcher: LLMatcher) -> list[int]:
    """The ids the next mask allows (bit ``i % 8`` of byte ``i // 8``)."""
    mask = matcher.compute_bitmask()
    return [i for i in range(_END + 1) if mask[i // 8] >> (i % 8) & 1]
