"""The one error hierarchy. Every class carries its HTTP status; one middleware maps it to
``{"error": "..."}`` (see ``server/app.py``), and a stream that already started ends with an error line."""

from __future__ import annotations


class OllamaError(Exception):
    """An error a client should see, with the status Ollama answers it with."""

    status: int = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message


class BadRequest(OllamaError):
    status = 400


class Forbidden(OllamaError):
    status = 403


class NotFound(OllamaError):
    status = 404


class ModelNotFound(NotFound):
    """``model 'x' not found``: the text Ollama uses on generate/chat/show/delete."""

    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' not found")


class ModelFileNotFound(NotFound):
    """The scheduler's variant: ``model "x" not found, try pulling it first``."""

    def __init__(self, name: str) -> None:
        super().__init__(f'model "{name}" not found, try pulling it first')


class Canceled(OllamaError):
    status = 499

    def __init__(self, message: str = "request canceled") -> None:
        super().__init__(message)


class ServerBusy(OllamaError):
    status = 503

    def __init__(self) -> None:
        # Two spaces after "again." are Ollama's, verbatim.
        super().__init__("server busy, please try again.  maximum pending requests exceeded")


class NotImplementedYet(OllamaError):
    """A feature whose issue has not landed: an honest 400 rather than a silent no-op."""

    status = 400


class InternalError(OllamaError):
    status = 500
