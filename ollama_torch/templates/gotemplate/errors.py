"""The errors of the Go template engine. They carry Go's message text verbatim (``template: :1: ...``)
so a caller can show what Ollama would; mapping them to HTTP statuses is the server's business."""

from __future__ import annotations


class TemplateError(Exception):
    """Base of every template failure; ``str()`` is Go's message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ParseError(TemplateError):
    """The template text is not a valid Go template (Go's ``Parse`` error)."""


class ExecError(TemplateError):
    """Executing a parsed template failed (Go's ``ExecError``)."""
