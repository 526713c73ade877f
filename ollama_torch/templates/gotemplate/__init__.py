"""A Go ``text/template`` engine in Python, for Ollama ``TEMPLATE`` files.

It owns the template language only (lexing, parsing, executing, Go's printing and JSON rules); what
Ollama puts into a template and how it builds prompts lives in ``ollama_torch.templates.ollama``.

    >>> t = Template.parse('{{ range $i, $m := .Messages }}{{ if $i }}, {{ end }}{{ $m.Role }}{{ end }}')
    >>> t.execute({"Messages": [{"Role": "user"}, {"Role": "assistant"}]})
    'user, assistant'

Not supported: custom delimiters, methods on arbitrary Python objects (only those a class lists in
``GO_METHODS``), channels and iterator functions in ``range``, ``%p``/``%#v``/``%[n]`` in printf.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ExecError, ParseError, TemplateError
from .execute import MissingKey, execute
from .funcs import ANY, BUILTINS, INT, STRING, Func, FuncError
from .gojson import OrderedMap, marshal, to_json
from .nodes import ListNode
from .parser import parse as _parse

__all__ = [
    "ANY",
    "INT",
    "STRING",
    "ExecError",
    "Func",
    "FuncError",
    "OrderedMap",
    "ParseError",
    "Template",
    "TemplateError",
    "marshal",
    "to_json",
]


class Template:
    """A parsed template: the text's own tree (name ``""``) plus any ``define``/``block`` trees."""

    def __init__(
        self,
        text: str,
        trees: dict[str, ListNode],
        funcs: Mapping[str, Func],
        missingkey: MissingKey = "default",
    ) -> None:
        self.text = text
        self.trees = trees
        self.funcs = dict(funcs)
        self.missingkey: MissingKey = missingkey

    @classmethod
    def parse(
        cls, text: str, funcs: Mapping[str, Func] | None = None, missingkey: MissingKey = "default"
    ) -> Template:
        """Parse ``text``; unknown functions and syntax errors raise :class:`ParseError`."""
        funcs = dict(funcs or {})
        try:
            trees = _parse(text, lambda name: name in funcs or name in BUILTINS)
        except RecursionError:
            raise ParseError("template: nesting too deep") from None
        return cls(text, trees, funcs, missingkey)

    @property
    def root(self) -> ListNode:
        return self.trees[""]

    def execute(self, data: Any) -> str:
        """Render the template with ``data`` as dot (``.``) and ``$``."""
        return self.execute_tree(self.root, data)

    def execute_tree(
        self,
        root: ListNode,
        data: Any,
        *,
        funcs: Mapping[str, Func] | None = None,
        templates: Mapping[str, ListNode] | None = None,
        missingkey: MissingKey | None = None,
    ) -> str:
        """Render another tree parsed from this text (e.g. an edited copy of :attr:`root`), with this
        template's functions and defined templates unless others are given."""
        try:
            return execute(
                self.text,
                "",
                root,
                self.trees if templates is None else templates,
                self.funcs if funcs is None else funcs,
                data,
                self.missingkey if missingkey is None else missingkey,
            )
        except RecursionError:
            raise ExecError("template: nesting too deep") from None
