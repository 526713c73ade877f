"""Manifests and config blobs: Docker/OCI v2 JSON with Ollama's media types, read and written as Ollama does."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


class MediaType:
    CONFIG = "application/vnd.docker.container.image.v1+json"
    MODEL = "application/vnd.ollama.image.model"  # GGUF weights
    PROJECTOR = "application/vnd.ollama.image.projector"
    ADAPTER = "application/vnd.ollama.image.adapter"
    TEMPLATE = "application/vnd.ollama.image.template"
    PROMPT = "application/vnd.ollama.image.prompt"  # legacy name of TEMPLATE
    SYSTEM = "application/vnd.ollama.image.system"
    PARAMS = "application/vnd.ollama.image.params"
    MESSAGES = "application/vnd.ollama.image.messages"
    LICENSE = "application/vnd.ollama.image.license"
    TENSOR = "application/vnd.ollama.image.tensor"  # a Safetensors weight file, name = relative path
    JSON = "application/vnd.ollama.image.json"  # a JSON file of the HF directory, name = relative path
    # Our extension for the other files of a Hugging Face directory (tokenizer.model, vocab.txt,
    # merges.txt, chat_template.jinja, ...); Ollama ignores layer types it does not know.
    FILE = "application/vnd.ollama.image.file"


def go_json(value: Any) -> str:
    """``encoding/json`` output: compact, UTF-8, with Go's HTML-safe escapes."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str
    size: int
    from_: str = ""  # the model this layer was reused from (details.parent_model)
    name: str = ""  # relative file path for Safetensors-format layers

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.from_:
            out["from"] = self.from_
        if self.name:
            out["name"] = self.name
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Layer:
        return cls(
            media_type=str(data.get("mediaType", "")),
            digest=str(data.get("digest", "")),
            size=int(data.get("size", 0)),
            from_=str(data.get("from", "") or ""),
            name=str(data.get("name", "") or ""),
        )


@dataclass(frozen=True)
class Manifest:
    config: Layer
    layers: tuple[Layer, ...]
    schema_version: int = 2
    media_type: str = MANIFEST_MEDIA_TYPE

    def to_bytes(self) -> bytes:
        data = {
            "schemaVersion": self.schema_version,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }
        return (go_json(data) + "\n").encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("manifest is not a JSON object")
        return cls(
            config=Layer.from_json(data.get("config") or {}),
            layers=tuple(Layer.from_json(layer) for layer in data.get("layers") or []),
            schema_version=int(data.get("schemaVersion", 2)),
            media_type=str(data.get("mediaType", MANIFEST_MEDIA_TYPE)),
        )

    @property
    def size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)

    def digests(self) -> set[str]:
        return {layer.digest for layer in (self.config, *self.layers) if layer.digest}

    def by_type(self, media_type: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.media_type == media_type]


_CONFIG_KEYS = (
    "model_format",
    "model_family",
    "model_families",
    "model_type",
    "file_type",
    "renderer",
    "parser",
    "requires",
    "remote_host",
    "remote_model",
    "capabilities",
    "context_length",
    "embedding_length",
    "base_name",
    "architecture",
    "os",
)


@dataclass
class ConfigV2:
    """The config blob (``types/model/config.go``). Keys we do not model are kept in ``extra``.

    Our own metadata lives in ``extra`` under explicit keys, never inferred from file names:
    ``torch_dtype`` (stored weight dtype), ``quantization`` (scheme of stored quantized weights),
    ``source_format`` (``gguf`` / ``safetensors``), ``architectures`` (Transformers classes).
    """

    model_format: str = ""
    model_family: str = ""
    model_families: list[str] | None = None
    model_type: str = ""
    file_type: str = ""
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    remote_host: str = ""
    remote_model: str = ""
    capabilities: list[str] = field(default_factory=list)
    context_length: int = 0
    embedding_length: int = 0
    base_name: str = ""
    architecture: str = "amd64"
    os: str = "linux"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        data: dict[str, Any] = {
            "model_format": self.model_format,
            "model_family": self.model_family,
            "model_families": self.model_families,
            "model_type": self.model_type,
            "file_type": self.file_type,
        }
        for key in ("renderer", "parser", "requires", "remote_host", "remote_model"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self.capabilities:
            data["capabilities"] = list(self.capabilities)
        if self.context_length:
            data["context_length"] = self.context_length
        if self.embedding_length:
            data["embedding_length"] = self.embedding_length
        if self.base_name:
            data["base_name"] = self.base_name
        data.update(self.extra)
        data["architecture"] = self.architecture
        data["os"] = self.os
        return go_json(data).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> ConfigV2:
        data = json.loads(raw or b"{}")
        if not isinstance(data, dict):
            data = {}
        cfg = cls(extra={k: v for k, v in data.items() if k not in _CONFIG_KEYS})
        for key in _CONFIG_KEYS:
            if key in data and data[key] is not None:
                setattr(cfg, key, data[key])
        return cfg
