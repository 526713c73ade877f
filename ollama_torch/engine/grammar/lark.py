"""One llguidance Lark grammar per request: free text, thinking blocks and JSON, composed.

``format`` alone compiles straight from its JSON schema (``grammar/compiler.py``). Everything that mixes free text
with constrained JSON is written here as Lark text (llguidance's dialect, ``docs/syntax.md`` in its repo):

* ``format`` on a thinking model (Ollama's "structured outputs restart": the grammar applies only after the
  reasoning): an optional reasoning block, or the rest of one when the prompt already opened it, then the
  JSON value (:func:`think_then_json`);
* tool calls (``grammar/tools.py``): free text, and once the model writes the tool-call marker, JSON limited
  to the offered tools' names and parameter schemas.

Markers (``<tool_call>``, ``</think>``, ``[TOOL_CALLS]``) are either plain text or one token of the model's
vocabulary. llguidance never lets a text terminal match an added/special token, so a marker that is one
token is written as that token (``<[id]>``), and free text is text *or* any special token the model may
emit unconstrained (all but the end-of-sequence ids and the markers the grammar handles itself). A text
marker ends the free text lazily: the first time it appears, the lexeme closes and what follows is
constrained.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .format import JsonStyle

if TYPE_CHECKING:
    from llguidance import LLTokenizer

# Bounded whitespace around markers and between calls: a generation can never loop on it.
WS = r"/[ \n]{0,2}/"
AFTER_THINK_WS = r"/[ \t\r\n]{0,4}/"


@dataclass(frozen=True)
class Vocab:
    """What the Lark writer needs to know about a tokenizer: which strings are single special tokens,
    and the ids free text may contain besides text (special tokens other than end-of-sequence)."""

    single_tokens: dict[str, int]
    special_ids: tuple[int, ...]
    eos_ids: tuple[int, ...]

    @classmethod
    def of(cls, ll_tokenizer: LLTokenizer, eos_ids: Sequence[int], markers: Iterable[str] = (),
           special_ids: Sequence[int] | None = None) -> Vocab:
        """``special_ids``: all special token ids when known (scanning the vocabulary takes a while)."""
        specials = tuple(special_ids) if special_ids is not None else tuple(
            i for i in range(ll_tokenizer.vocab_size) if ll_tokenizer.is_special_token(i))
        singles: dict[str, int] = {}
        for marker in markers:
            ids = ll_tokenizer.tokenize_str(marker) if marker else []
            if len(ids) == 1 and ll_tokenizer.is_special_token(ids[0]):
                singles[marker] = ids[0]
        return cls(singles, specials, tuple(eos_ids))

    def is_token(self, marker: str) -> bool:
        return marker in self.single_tokens

    def literal(self, marker: str) -> str:
        """The Lark for a marker: its token (``<[id]>``) when it is one special token, else the text."""
        if marker in self.single_tokens:
            return f"<[{self.single_tokens[marker]}]>"
        return json.dumps(marker, ensure_ascii=False)

    def free_specials(self, exclude: Iterable[str] = ()) -> str | None:
        """``<[..]>`` matching every special token free text may hold, ``None`` if there are none."""
        banned = set(self.eos_ids) | {self.single_tokens[m] for m in exclude if m in self.single_tokens}
        return token_set([i for i in self.special_ids if i not in banned])


def token_set(ids: Sequence[int]) -> str | None:
    """``<[1,4-7]>`` for a set of token ids (ranges compressed), ``None`` when empty."""
    if not ids:
        return None
    parts: list[str] = []
    ordered = sorted(set(ids))
    start = prev = ordered[0]
    for i in [*ordered[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return "<[" + ",".join(parts) + "]>"


def json_rule(schema: dict[str, Any], style: JsonStyle) -> str:
    """``%json {...}`` for a schema, with the server's JSON options (strict, bounded whitespace)."""
    body = {"x-guidance": dict(style.options()), **{k: v for k, v in schema.items() if k != "x-guidance"}}
    return "%json " + json.dumps(body, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class FreeText:
    """Unconstrained text as Lark: any text and any special token but the end-of-sequence ids and the
    markers in ``exclude``. ``name`` keeps the rules of several free-text kinds in one grammar apart."""

    vocab: Vocab
    exclude: tuple[str, ...] = ()
    name: str = "free"

    def rules(self) -> list[str]:
        special = self.vocab.free_specials(self.exclude)
        out = ["TEXT: /(?s:.+)/"]
        if special is not None:
            out.append(f"{self.name}_special: {special}")
        return out

    @property
    def _special(self) -> str | None:
        return f"{self.name}_special" if self.vocab.free_specials(self.exclude) is not None else None

    def anything(self) -> str:
        """An expression for free text (possibly empty)."""
        sp = self._special
        return f"TEXT? ({sp} TEXT?)*" if sp else "TEXT?"

    def upto(self, rule: str, marker: str) -> list[str]:
        """Rules for ``rule``: free text ending with ``marker`` (included) at its first occurrence."""
        sp = self._special
        lead = f"({sp} | TEXT {sp})* " if sp else ""
        if self.vocab.is_token(marker):
            return [*self.rules(), f"{rule}: {lead}TEXT? {self.vocab.literal(marker)}"]
        text = json.dumps(marker, ensure_ascii=False)
        return [*self.rules(), f"{rule}: {lead}{rule}_text", f"{rule}_text[lazy]: /(?s:.*)/ {text}"]


def think_prefix(vocab: Vocab, tags: tuple[str, str], *, in_thinking: bool) -> list[str]:
    """Rules for ``think``: the reasoning block (optional unless the prompt opened it) and the whitespace
    after it. Inside the block everything is free; the block ends at the first closing tag."""
    open_tag, close_tag = tags
    rules = FreeText(vocab, exclude=(close_tag,), name="think").upto("think_body", close_tag)
    if in_thinking:
        rules.append(f"think: think_body {AFTER_THINK_WS}")
    else:
        rules.append(f"think: ({WS} {vocab.literal(open_tag)} think_body {AFTER_THINK_WS})?")
    return rules


def assemble(start: str, rules: Iterable[str]) -> str:
    """A complete grammar: ``start`` rule, the given rules, duplicates removed (first kept)."""
    seen: set[str] = set()
    body: list[str] = []
    for rule in rules:
        if rule not in seen:
            seen.add(rule)
            body.append(rule)
    return "%llguidance {}\n" + f"start: {start}\n" + "\n".join(body) + "\n"


def think_then_json(vocab: Vocab, tags: tuple[str, str], schema: dict[str, Any], style: JsonStyle,
                    *, in_thinking: bool) -> str:
    """``format`` for a thinking model: the reasoning block (free), then exactly one JSON value."""
    rules = [*think_prefix(vocab, tags, in_thinking=in_thinking), f"value: {json_rule(schema, style)}"]
    return assemble("think value", rules)
