"""``StoredModel``: one model as the store holds it, with its small layers read and decoded."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..names import ModelName
from .manifest import ConfigV2, Layer, Manifest, MediaType

if TYPE_CHECKING:
    from .store import ModelStore

log = logging.getLogger(__name__)

HF_FILE_TYPES = (MediaType.TENSOR, MediaType.JSON, MediaType.FILE)


@dataclass
class StoredModel:
    name: ModelName
    manifest: Manifest
    digest: str  # hex sha256 of the manifest bytes
    modified_at: float
    config: ConfigV2
    store: ModelStore = field(repr=False)
    template: str | None = None
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, store: ModelStore, name: ModelName, manifest: Manifest, digest: str, mtime: float) -> StoredModel:
        config = ConfigV2()
        if manifest.config.digest and store.blobs.exists(manifest.config.digest):
            try:
                config = ConfigV2.from_bytes(store.blobs.read_bytes(manifest.config.digest))
            except ValueError as exc:
                log.warning("unreadable config blob for %s: %s", name, exc)
        model = cls(name=name, manifest=manifest, digest=digest, modified_at=mtime, config=config, store=store)
        for layer in manifest.layers:
            if layer.media_type in (MediaType.TEMPLATE, MediaType.PROMPT):
                model.template = model._text(layer)
            elif layer.media_type == MediaType.SYSTEM:
                model.system = model._text(layer)
            elif layer.media_type == MediaType.LICENSE:
                model.licenses.append(model._text(layer))
            elif layer.media_type == MediaType.PARAMS:
                params = model._json(layer)
                model.params = params if isinstance(params, dict) else {}
            elif layer.media_type == MediaType.MESSAGES:
                messages = model._json(layer)
                model.messages = messages if isinstance(messages, list) else []
        return model

    def _text(self, layer: Layer) -> str:
        return self.store.blobs.read_bytes(layer.digest).decode("utf-8", errors="replace")

    def _json(self, layer: Layer) -> Any:
        try:
            return json.loads(self.store.blobs.read_bytes(layer.digest) or b"null")
        except ValueError:
            log.warning("unreadable %s layer %s in %s", layer.media_type, layer.digest, self.name)
            return None

    # -- weights -----------------------------------------------------------------------------------
    @property
    def gguf_layer(self) -> Layer | None:
        layers = self.manifest.by_type(MediaType.MODEL)
        return layers[0] if layers else None

    @property
    def hf_files(self) -> dict[str, Layer]:
        """Relative path -> layer, for a model stored as a Hugging Face (Safetensors) directory."""
        return {layer.name: layer for layer in self.manifest.layers if layer.media_type in HF_FILE_TYPES and layer.name}

    @property
    def format(self) -> str:
        if self.config.model_format:
            return self.config.model_format
        return "gguf" if self.gguf_layer else "safetensors"

    @property
    def parent_model(self) -> str:
        for layer in self.manifest.layers:
            if layer.media_type in (MediaType.MODEL, MediaType.TENSOR) and layer.from_:
                return layer.from_
        return ""

    def blob_path(self, layer: Layer) -> Path:
        return self.store.blobs.path(layer.digest)

    def read_hf_json(self, relpath: str) -> Any:
        layer = self.hf_files.get(relpath)
        if layer is None:
            return None
        try:
            return json.loads(self.store.blobs.read_bytes(layer.digest))
        except ValueError:
            return None

    @property
    def capabilities(self) -> list[str]:
        from ..capabilities import model_capabilities

        return model_capabilities(self)
