"""Which tool-call markup a model writes, derived from its chat template.

A :class:`ToolFormat` is a *kind* of grammar plus its markers:

========  ===============================================================  =========================
kind      what the model writes                                            e.g.
========  ===============================================================  =========================
tagged    ``TAG`` + JSON object(s)/array(s) + optional ``END``             Hermes, Qwen2.5/3
          (``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``)  (``<tool_call>``), Granite
                                                                           (``<|tool_call|>[...]``)
mistral   ``[TOOL_CALLS][{"name": ..., "arguments": ...}, ...]`` or the    Mistral 7B v0.3, Nemo,
          newer ``[TOOL_CALLS]name[ARGS]{...}`` (``[CALL_ID]id`` allowed); Small 3.x, Devstral
          also the bare list at the start (the tag decoded away)
llama3    bare ``{"name": ..., "parameters": {...}}`` at the start of the  Llama 3.1 / 3.2 / 3.3
          output, or JSON after ``<|python_tag|>``
json      bare JSON object/array at the very start of the output           Ollama's default ``{`` tag
generic   ``TAG`` then Ollama's name-and-object search (``generic.py``)    DeepSeek, Command-R,
                                                                           Firefunction, anything else
========  ===============================================================  =========================

:func:`detect_tool_format` reads the tag out of the template: for an Ollama Go template exactly as
Ollama's ``parseTag`` does (:mod:`ollama_torch.tools.gotag`); for a Hugging Face Jinja chat template by
looking for well-known markers, then for the first literal the template writes inside its
``tool_calls`` loop / condition (the Jinja analogue of ``parseTag``).  Without a tag, ``{``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from .gotag import go_template_tag

__all__ = [
    "BARE_JSON",
    "HERMES",
    "LLAMA3",
    "MISTRAL",
    "FormatKind",
    "ToolFormat",
    "detect_tool_format",
]


class FormatKind(str, Enum):
    TAGGED = "tagged"
    MISTRAL = "mistral"
    LLAMA3 = "llama3"
    JSON = "json"
    GENERIC = "generic"


_XML_TAG = re.compile(r"<([A-Za-z_][\w.\-]*)>")


@dataclass(frozen=True)
class ToolFormat:
    kind: FormatKind
    tag: str  # the opening marker; "{" or "[" for bare JSON
    end_tag: str = ""  # the closing marker of a tagged block, dropped after its calls

    @classmethod
    def for_tag(cls, tag: str) -> ToolFormat:
        """The format a tool-call tag implies: JSON for ``{``/``[``, a known grammar, else generic."""
        tag = tag.strip()
        if tag in ("", "{", "["):
            return cls(FormatKind.JSON, tag or "{")
        if tag.startswith("[TOOL_CALLS]"):
            return MISTRAL
        if tag == LLAMA3.tag:
            return LLAMA3
        if tag == "<|tool_call|>":  # Granite: a JSON list after the tag, no closing tag
            return cls(FormatKind.TAGGED, tag)
        m = _XML_TAG.fullmatch(tag)
        if m:
            return cls(FormatKind.TAGGED, tag, f"</{m.group(1)}>")
        return cls(FormatKind.GENERIC, tag)

    @property
    def json_at_start(self) -> bool:
        """Whether a bare ``{``/``[`` as the first non-whitespace output opens a tool-call block.

        Mistral too: decoded with special tokens skipped, ``[TOOL_CALLS][{...}]`` arrives as ``[{...}]``.
        """
        return self.kind in (FormatKind.JSON, FormatKind.LLAMA3, FormatKind.MISTRAL)

    @property
    def search_tag(self) -> str:
        """The marker searched for anywhere in the output ("" when only bare JSON at the start counts)."""
        return "" if self.kind is FormatKind.JSON else self.tag


HERMES = ToolFormat(FormatKind.TAGGED, "<tool_call>", "</tool_call>")
MISTRAL = ToolFormat(FormatKind.MISTRAL, "[TOOL_CALLS]", "[/TOOL_CALLS]")
LLAMA3 = ToolFormat(FormatKind.LLAMA3, "<|python_tag|>")
BARE_JSON = ToolFormat(FormatKind.JSON, "{")

# Markers that identify a format wherever they appear in a Jinja template, most specific first.
_JINJA_MARKERS: tuple[tuple[str, str], ...] = (
    ("[TOOL_CALLS]", "[TOOL_CALLS]"),
    ("<tool_call>", "<tool_call>"),
    ("<|python_tag|>", "<|python_tag|>"),
    ("<|tool_call|>", "<|tool_call|>"),
    ("<TOOLCALL>", "<TOOLCALL>"),
    ("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁begin｜>"),
    ("<|tool▁calls▁begin|>", "<|tool▁calls▁begin|>"),
    ("functools[", "functools["),
)


def detect_tool_format(template: str, *, go_template: bool) -> ToolFormat:
    """The tool-call format of a model, from its Ollama Go template or its Hugging Face Jinja template."""
    if go_template:
        return ToolFormat.for_tag(go_template_tag(template))
    for marker, tag in _JINJA_MARKERS:
        if marker in template:
            return ToolFormat.for_tag(tag)
    if "<|start_header_id|>" in template and "tool_call" in template:
        return LLAMA3  # Llama 3.x without builtin tools: bare {"name": ..., "parameters": ...}
    return ToolFormat.for_tag(jinja_template_tag(template) or "{")


# Jinja lexing: statements, expressions and comments, with their optional "-" whitespace control.
_JINJA_TOKEN = re.compile(r"\{%-?(.*?)-?%\}|\{\{-?(.*?)-?\}\}|\{#.*?#\}", re.S)
_OPENS_TOOL_CALLS = re.compile(r"(?:for\s.+\sin\s|(?:el)?if\s).*\btool_calls\b", re.S)
_NEGATED_TOOL_CALLS = re.compile(
    r"^(?:el)?if\s+not\b|\bnot\s+[\w.\[\]'\"]*tool_calls\b"
    r"|tool_calls['\"\]]*\s+is\s+(?:not\s+defined|none|undefined)\b"
)
_STRING_LITERAL = re.compile(r"""\s*(?:'((?:\\.|[^'\\])*)'|"((?:\\.|[^"\\])*)")""", re.S)
_ESCAPE = re.compile(r"\\(.)", re.S)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def jinja_template_tag(template: str) -> str | None:
    """The first literal a Jinja template writes inside its first ``tool_calls`` loop or condition.

    Like ``parseTag``: whitespace-only output is skipped, the first non-literal expression or the end
    of the block ends the search, and the text is cut at its first ``{``. ``None`` when nothing usable
    (a cut that leaves nothing, or text with quotes in it, which is JSON rather than a marker).
    """
    depth = -1  # -1: not inside the tool-calls block yet
    pos = 0
    for m in _JINJA_TOKEN.finditer(template):
        text = template[pos : m.start()]
        pos = m.end()
        if depth >= 0 and text.strip():
            return _marker(text)
        statement, expression = m.group(1), m.group(2)
        if statement is not None:
            words = statement.split()
            word = words[0] if words else ""
            if depth < 0:
                stripped = statement.strip()
                if _OPENS_TOOL_CALLS.match(stripped) and not _NEGATED_TOOL_CALLS.search(stripped):
                    depth = 0
                continue
            if word in ("if", "for"):
                depth += 1
            elif word in ("endif", "endfor"):
                if depth == 0:
                    return None
                depth -= 1
            elif word in ("elif", "else") and depth == 0:
                return None
        elif expression is not None and depth >= 0:
            lit = _STRING_LITERAL.match(expression)
            if lit is None:
                return None
            value = _unescape(lit.group(1) if lit.group(1) is not None else lit.group(2))
            if value.strip():
                return _marker(value)
    return None


def _unescape(s: str) -> str:
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), s)


def _marker(text: str) -> str | None:
    tag = text.replace("\r\n", "\n").split("{", 1)[0].strip()
    if not tag or '"' in tag or "'" in tag:
        return None
    return tag
