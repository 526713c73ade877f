"""The create request as a value, validated before any work starts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import BadRequest
from ..names import ModelName
from ..store import ModelStore
from ..store.blobs import parse_digest

Emit = Callable[[dict[str, Any]], None]  # one status line of the create's stream
Pull = Callable[[ModelName, Emit], None]  # fetches a model ``FROM`` names that is not stored yet


class CreateModel(Protocol):
    """``create.service.create_model``, for those that are handed it rather than importing it: the HTTP
    layer and the registry never import the converters (torch, Transformers) a create runs."""

    def __call__(self, store: ModelStore, req: CreateRequest, emit: Emit, *, noprune: bool = False, pull: Pull | None = None) -> None: ...


@dataclass(frozen=True)
class ExportRequest:
    """``POST /api/x/export``: write a stored model as one GGUF file (ollama-torch extension)."""

    name: ModelName
    quantize: str = ""  # a GGUF type (F16, Q8_0, Q4_K_M, ...); empty: the model's own type


class ExportModel(Protocol):
    """``create.export.export_model``, handed to the HTTP layer as ``CreateModel`` is: it streams the export's
    statuses through ``emit`` and ends with ``{"status": "success", "blob": <digest>, "size": <bytes>,
    "quantization_level": <type>}``; the file is a blob the client downloads from ``/api/x/blobs/<digest>``."""

    def __call__(self, store: ModelStore, req: ExportRequest, emit: Emit) -> None: ...


def validate_file_path(path: str) -> str:
    """Go's ``fs.ValidPath`` (slash-separated, no empty, ``.`` or ``..`` element, no leading or trailing
    slash), plus no backslash or NUL: a ``files`` key can never escape the model directory."""
    if not path or path.startswith("/") or path.endswith("/") or "\\" in path or "\x00" in path:
        raise BadRequest("file path must be relative")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise BadRequest("file path must be relative")
    return path


@dataclass
class CreateRequest:
    name: ModelName
    from_: str = ""
    files: dict[str, str] = field(default_factory=dict)  # relative path -> "sha256:<hex>"
    adapters: dict[str, str] = field(default_factory=dict)
    template: str = ""
    system: str = ""
    license: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    quantize: str = ""
    gguf: bool = False  # store the weights as one GGUF layer, as Ollama does (ollama-torch extension)

    def validate(self) -> None:
        """The checks Ollama's handler makes before streaming, in its order."""
        for path, digest in self.files.items():
            validate_file_path(path)
            if not digest:
                raise BadRequest("invalid digest format")
        self.files = {path: parse_digest(digest) for path, digest in self.files.items()}
        for path, digest in self.adapters.items():
            validate_file_path(path)
            if not digest:
                raise BadRequest("invalid digest format")
        self.adapters = {path: parse_digest(digest) for path, digest in self.adapters.items()}
        if not self.name.is_valid:
            raise BadRequest("invalid model name")
        if not self.from_ and not self.files:
            raise BadRequest("neither 'from' or 'files' was specified")
