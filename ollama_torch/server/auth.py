"""The API key (``OLLAMA_TORCH_API_KEY``): when it is set, every request but the liveness and version checks
must carry it, as ``Authorization: Bearer <key>`` (Ollama's clients via their headers, the OpenAI SDK's
``api_key``) or Anthropic's ``x-api-key``. Ollama has no such setting; llama.cpp's ``--api-key`` and vLLM's
``--api-key`` work this way.

The key is compared in constant time (``hmac.compare_digest``), so the time an answer takes says nothing
about how much of a guess was right. A refusal is a 401 with ``WWW-Authenticate: Bearer``, its body in the
shape of the endpoint family the request was for, so each SDK raises its own authentication error: native
``{"error": ...}``, the OpenAI envelope under ``/v1``, Anthropic's error under ``/v1/messages``. CORS
preflights are answered by the CORS middleware before this one (browsers send them without credentials);
any other ``OPTIONS`` passes through to the router's 405.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import anthropic
from .openai.translate_response import dumps
from .streaming import json_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Open without a key: liveness (Ollama's clients send HEAD / as a heartbeat) and the API level.
OPEN = frozenset({("GET", "/"), ("HEAD", "/"), ("GET", "/api/version"), ("HEAD", "/api/version")})
MISSING = "missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
INVALID = "invalid API key"


def presented_keys(headers: Any) -> list[str]:
    """The keys a request carries: its bearer token (scheme case-insensitive) and its ``x-api-key``. A
    client may send both (an SDK's placeholder bearer beside the real key); either may match."""
    keys = []
    scheme, _, token = str(headers.get("Authorization", "")).strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        keys.append(token.strip())
    api_key = str(headers.get("x-api-key", "")).strip()
    if api_key:
        keys.append(api_key)
    return keys


def key_matches(presented: str, expected: str) -> bool:
    """Constant-time comparison (on bytes: ``compare_digest`` refuses non-ASCII ``str``)."""
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


def refusal(path: str, message: str) -> web.Response:
    """The 401, in the error shape of the family ``path`` belongs to."""
    headers = {"WWW-Authenticate": 'Bearer realm="ollama-torch"'}
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        body = anthropic.error_body(401, message)
    elif path.startswith("/v1/"):
        # OpenAI's own answer to a bad key: the SDKs raise AuthenticationError on the status either way.
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
    else:
        response = json_response({"error": message}, status=401)
        response.headers.update(headers)
        return response
    return web.Response(body=dumps(body) + b"\n", status=401, content_type="application/json", headers=headers)


def auth_middleware(api_key: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Refuse requests without the key (``api_key`` non-empty; ``make_app`` adds this only then)."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" or (request.method, request.path) in OPEN:
            return await handler(request)
        presented = presented_keys(request.headers)
        if not presented:
            return refusal(request.path, MISSING)
        if not any([key_matches(key, api_key) for key in presented]):  # a list: every key is compared
            return refusal(request.path, INVALID)
        return await handler(request)

    return authenticate
