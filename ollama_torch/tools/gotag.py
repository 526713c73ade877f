"""The tool-call tag of an Ollama (Go ``text/template``) TEMPLATE, as Ollama's ``parseTag`` finds it.

Ollama (``tools/template.go``) walks the parsed template for the first ``{{if ...}}`` whose pipeline
mentions a ``.ToolCalls`` field, takes the first non-whitespace text node inside it (depth first,
giving up at the first ``{{ action }}`` or after the first nested control structure), cuts it at the
first ``{`` and trims it: ``<tool_call>``, ``[TOOL_CALLS] [``, or ``{`` when nothing is left.

This module needs only the *shape* of a template, so it carries a small lexer for Go's template
syntax (text, ``{{ }}`` actions with ``{{-``/``-}}`` whitespace trimming, comments, quoted strings) and
builds the if / range / with / else tree; it does not evaluate anything.  One extension: a
``{{range .ToolCalls}}`` outside any ``{{if .ToolCalls}}`` also counts, where Ollama would find no tag.
A template it cannot make sense of gives ``{``, the default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["go_template_tag"]

_SPACE = " \t\r\n"
_TOOL_CALLS_FIELD = re.compile(r"(?:^|[\s(|])\$?\w*(?:\.\w+)*\.ToolCalls\b")
_CONTROL = ("if", "range", "with")


@dataclass
class _Node:
    kind: str  # "text", "action", "other", or one of _CONTROL
    text: str = ""  # text nodes: the text; control nodes: the pipeline
    body: list[_Node] = field(default_factory=list)
    else_body: list[_Node] = field(default_factory=list)


@dataclass
class _Token:
    kind: str  # "text" or "action"
    text: str


class _TemplateSyntaxError(ValueError):
    pass


def go_template_tag(template: str) -> str:
    """The tool-call tag of a Go template, or ``"{"`` when it has none."""
    try:
        nodes = _Parser(_lex(template)).parse_root()
    except _TemplateSyntaxError:
        return "{"
    node = _find_tool_call_node(nodes)
    if node is None:
        return "{"
    text = _find_text(node.body)
    if text is None:
        return "{"
    tag = text.replace("\r\n", "\n").split("{", 1)[0].strip(_SPACE)
    return tag or "{"


def _lex(src: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, trim_next = 0, False
    while True:
        j = src.find("{{", i)
        text = src[i:] if j == -1 else src[i:j]
        if trim_next:
            text = text.lstrip(_SPACE)
        if j == -1:
            if text:
                tokens.append(_Token("text", text))
            return tokens
        k = j + 2
        if src.startswith("-", k) and src[k + 1 : k + 2] in tuple(_SPACE):
            text = text.rstrip(_SPACE)
            k += 2
        if text:
            tokens.append(_Token("text", text))
        body, i, trim_next = _action_body(src, k)
        if not body.startswith("/*"):  # comments leave no node
            tokens.append(_Token("action", body.strip(_SPACE)))


def _action_body(src: str, k: int) -> tuple[str, int, bool]:
    """The action text from offset ``k``, the offset after its ``}}``, and whether it ends in ``-}}``."""
    i = k
    while i < len(src) and src[i] in _SPACE:
        i += 1
    if src.startswith("/*", i):
        end = src.find("*/", i + 2)
        if end == -1:
            raise _TemplateSyntaxError("unclosed comment")
        i = end + 2
    while i < len(src):
        c = src[i]
        if c in "\"'`":
            i = _skip_quoted(src, i)
            continue
        if src.startswith("}}", i):
            body = src[k:i]
            trim = len(body) >= 2 and body[-1] == "-" and body[-2] in _SPACE
            return (body[:-2] if trim else body), i + 2, trim
        i += 1
    raise _TemplateSyntaxError("unclosed action")


def _skip_quoted(src: str, i: int) -> int:
    quote = src[i]
    i += 1
    while i < len(src):
        if src[i] == "\\" and quote != "`":
            i += 2
            continue
        if src[i] == quote:
            return i + 1
        i += 1
    raise _TemplateSyntaxError("unclosed quote")


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._i = 0

    def parse_root(self) -> list[_Node]:
        nodes, stop = self._parse_list()
        if stop is not None:
            raise _TemplateSyntaxError(f"unexpected {{{{{stop}}}}}")
        return nodes

    def _parse_list(self) -> tuple[list[_Node], str | None]:
        """Nodes up to an ``end`` or ``else`` action (returned, consumed) or the end of input (None)."""
        nodes: list[_Node] = []
        while self._i < len(self._tokens):
            tok = self._tokens[self._i]
            self._i += 1
            if tok.kind == "text":
                nodes.append(_Node("text", tok.text))
                continue
            word, rest = _split_word(tok.text)
            if word in ("end", "else"):
                return nodes, tok.text
            if word in _CONTROL:
                nodes.append(self._parse_control(word, rest))
            elif word in ("define", "block"):
                self._parse_control(word, rest)  # a separate template, not part of this tree
                if word == "block":
                    nodes.append(_Node("other"))
            elif word in ("template", "break", "continue"):
                nodes.append(_Node("other"))
            else:
                nodes.append(_Node("action", tok.text))
        return nodes, None

    def _parse_control(self, kind: str, pipe: str) -> _Node:
        node = _Node(kind, pipe.strip(_SPACE))
        node.body, stop = self._parse_list()
        if stop is None:
            raise _TemplateSyntaxError(f"missing {{{{end}}}} for {kind}")
        if stop.startswith("else"):
            chained, chained_pipe = _split_word(stop[4:])
            if chained in ("if", "with"):
                # {{else if x}} is an if nested in the else branch that shares the final {{end}}.
                node.else_body = [self._parse_control(chained, chained_pipe)]
            else:
                node.else_body, stop = self._parse_list()
                if stop is None or not stop.startswith("end"):
                    raise _TemplateSyntaxError(f"missing {{{{end}}}} for {kind}")
        return node


def _split_word(action: str) -> tuple[str, str]:
    parts = action.strip(_SPACE).split(None, 1)
    if not parts:
        return "", ""
    return parts[0], parts[1] if len(parts) > 1 else ""


def _mentions_tool_calls(pipe: str) -> bool:
    return _TOOL_CALLS_FIELD.search(pipe) is not None


def _find_tool_call_node(nodes: list[_Node]) -> _Node | None:
    for node in nodes:
        if node.kind not in _CONTROL:
            continue
        if node.kind in ("if", "range") and _mentions_tool_calls(node.text):
            return node
        for branch in (node.body, node.else_body):
            found = _find_tool_call_node(branch)
            if found is not None:
                return found
    return None


def _find_text(nodes: list[_Node]) -> str | None:
    """Ollama's ``findTextNode``: first non-blank text, stopping at an action or after a control node."""
    for node in nodes:
        if node.kind == "text":
            if node.text.strip(_SPACE):
                return node.text
        elif node.kind == "action":
            return None
        elif node.kind in _CONTROL:
            return _find_text(node.body) or _find_text(node.else_body) or None
    return None
