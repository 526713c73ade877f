"""Ollama's OpenAI compatibility layer (``openai/openai.go`` + ``middleware/openai.go``), under ``/v1``.

As in Ollama, every ``/v1`` route is a translation around a native one, in process: the OpenAI request is
rewritten into the native request (``translate_request``), which the native route's own parser turns into
the engine's typed call; the engine's chunks become the native route's lines, and those are rewritten into
the OpenAI shape (``translate_response``: chat completions, SSE chunks, models, embeddings, the error
envelope). ``routes`` wires the five endpoints.
"""

from __future__ import annotations

from .routes import setup

__all__ = ["setup"]
