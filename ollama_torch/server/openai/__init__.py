"""Ollama's OpenAI compatibility layer (``openai/openai.go`` + ``middleware/openai.go``), under ``/v1``.

As in Ollama, every ``/v1`` route is a translation around a native handler: the OpenAI request is
rewritten into the native request (``translate_request``), the native handler registered for the native
path runs in-process (``native``), and its answer, one object or an NDJSON stream, is rewritten into the
OpenAI shape (``translate_response``: chat completions, SSE chunks, models, embeddings, the error
envelope). ``routes`` wires the five endpoints.
"""

from __future__ import annotations

from .routes import setup

__all__ = ["setup"]
