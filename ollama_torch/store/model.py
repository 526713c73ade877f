"""``StoredModel``: one model as the store holds it, with its small layers read and decoded.

A value: it holds what was read (manifest, config, template, system prompt, parameters, messages, licenses,
capabilities) and where its blobs lie, and no reference back to the store, so it can be passed to any layer
and kept without keeping the store's state alive. ``ModelStore.get`` builds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..names import ModelName
from .blobs import blob_file
from .manifest import ConfigV2, Layer, Manifest, MediaType

HF_FILE_TYPES = (MediaType.TENSOR, MediaType.JSON, MediaType.FILE)
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_GGUF = "adapter.gguf"  # the key of an unnamed adapter layer: a GGUF LoRA, as Ollama stores ADAPTER x.gguf


@dataclass(frozen=True)
class StoredAdapter:
    """One LoRA adapter of a model: either its PEFT files (``adapter_config.json``,
    ``adapter_model.safetensors``) as layers stored under ``adapters/<id>/`` names, or one unnamed layer
    holding a GGUF LoRA (Ollama's layout, which a stock Ollama passes to llama.cpp as ``--lora``; our engine
    converts it once for its base). Its key is the weights' digest."""

    id: str
    files: dict[str, Layer]

    @property
    def weights(self) -> Layer:
        return self.files[ADAPTER_GGUF] if self.gguf else self.files[ADAPTER_WEIGHTS]

    @property
    def gguf(self) -> bool:
        return ADAPTER_GGUF in self.files

    @property
    def key(self) -> str:
        return self.weights.digest


@dataclass(frozen=True)
class StoredModel:
    name: ModelName
    manifest: Manifest
    digest: str  # hex sha256 of the manifest bytes
    modified_at: float
    config: ConfigV2
    blobs: Path = field(repr=False)  # the store's blob directory
    capabilities: tuple[str, ...] = ()  # computed once, when the store read the model
    template: str | None = None
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)

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

    @property
    def adapters(self) -> tuple[StoredAdapter, ...]:
        """The LoRA adapters applied on top of the weights, in the order they were added."""
        groups: dict[str, dict[str, Layer]] = {}
        for layer in self.manifest.layers:
            if layer.media_type != MediaType.ADAPTER:
                continue
            if layer.name.startswith("adapters/"):
                _, adapter_id, file = layer.name.split("/", 2)
                groups.setdefault(adapter_id, {})[file] = layer
            elif not layer.name:  # Ollama's own: one GGUF LoRA per layer
                groups.setdefault(layer.digest.removeprefix("sha256:")[:12], {})[ADAPTER_GGUF] = layer
        return tuple(StoredAdapter(i, files) for i, files in groups.items() if ADAPTER_WEIGHTS in files or ADAPTER_GGUF in files)

    def blob_path(self, layer: Layer) -> Path:
        return blob_file(self.blobs, layer.digest)
