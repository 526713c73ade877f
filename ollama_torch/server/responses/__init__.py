"""OpenAI's Responses API (``POST /v1/responses``) as Ollama serves it (``openai/responses.go`` and its
``ResponsesMiddleware``): newer OpenAI SDKs and agents speak it.

A translation around ``/api/chat``, in process: the request is rewritten into the native body
(``translate_request``), which the native parser turns into the engine's typed call; the engine's typed
chunks become the Responses events and response object (``translate_response``). Stateless: responses are
not stored, so ``previous_response_id`` is refused (send the whole conversation in ``input``).
"""

from __future__ import annotations

from .routes import setup

__all__ = ["setup"]
