"""Ollama ``TEMPLATE`` support: a Go text/template engine (``gotemplate``), Ollama's prompt rules on
top of it (``ollama``: parsing, ``.Messages`` vs legacy rendering, ``Values``), the values a template
sees (``ollama_values``), chat-prompt truncation and image tags (``prompt``) and what Ollama reads off
a template's tree (``inspect``: thinking tags, tool-call tag)."""

from __future__ import annotations

from .gotemplate import ExecError, ParseError, TemplateError
from .ollama import OllamaTemplate, ThinkValue, Values, think_fields

__all__ = [
    "ExecError",
    "OllamaTemplate",
    "ParseError",
    "TemplateError",
    "ThinkValue",
    "Values",
    "think_fields",
]
