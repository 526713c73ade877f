"""The one error of the GGUF export: what cannot be written without llama.cpp running it wrongly."""

from __future__ import annotations


class UnsupportedExport(ValueError):
    """An architecture, tokenizer, tensor or setting the export refuses, with a message naming it (a 400)."""
