"""The model store: content-addressed blobs and manifests in Ollama's on-disk layout.

Imports neither torch nor aiohttp, so the CLI and the HTTP layer can use it freely.
"""

from .blobs import BlobStore, BlobWriter, parse_digest
from .manifest import ConfigV2, Layer, Manifest, MediaType
from .model import StoredAdapter, StoredModel
from .store import BlobPins, ListedModel, ModelStore

__all__ = [
    "BlobPins",
    "BlobStore",
    "BlobWriter",
    "ConfigV2",
    "Layer",
    "ListedModel",
    "Manifest",
    "MediaType",
    "ModelStore",
    "StoredAdapter",
    "StoredModel",
    "parse_digest",
]
