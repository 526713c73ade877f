"""Hugging Face -> GGUF export: files llama.cpp and Ollama load and run as Transformers does.

``export_hf`` writes a Hugging Face directory as one GGUF; ``retype_gguf`` re-encodes a GGUF in another type;
``derive_hf`` recovers the Hugging Face directory our engine loads from an exported file. Everything the
export would have to approximate is refused with an ``UnsupportedExport`` that names it.
"""

from __future__ import annotations

from .errors import UnsupportedExport
from .families import SUPPORTED_ARCHITECTURES
from .inverse import derive_hf
from .retype import retype_gguf
from .types import FLOAT_TYPES, GGUFType, UnsupportedGGUFType, available_types, parse_gguf_type
from .writer import Progress, Source, check_exportable, export_hf, load_source

__all__ = [
    "FLOAT_TYPES",
    "SUPPORTED_ARCHITECTURES",
    "GGUFType",
    "Progress",
    "Source",
    "UnsupportedExport",
    "UnsupportedGGUFType",
    "available_types",
    "check_exportable",
    "derive_hf",
    "export_hf",
    "load_source",
    "parse_gguf_type",
    "retype_gguf",
]
