"""Anthropic's Messages API (``/v1/messages``, ``/v1/messages/count_tokens``) as Ollama serves it
(``anthropic/anthropic.go`` + ``middleware/anthropic.go``): coding agents that speak Anthropic's API
(Claude Code and others) point their base URL here.

A translation around ``/api/chat``, in process: the request is rewritten into the native body
(``translate_request``), which the native parser turns into the engine's typed call; the engine's typed
chunks become Anthropic's events and message (``translate_response``). ``routes`` wires the two endpoints.
"""

from __future__ import annotations

from .routes import setup
from .translate_response import error_body

__all__ = ["error_body", "setup"]
