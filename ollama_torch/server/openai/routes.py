"""The ``/v1`` endpoints: translate the request, run the native handler in-process, translate its answer.

``POST /v1/chat/completions`` -> ``/api/chat``, ``POST /v1/completions`` -> ``/api/generate``,
``POST /v1/embeddings`` -> ``/api/embed``, ``GET /v1/models`` -> ``/api/tags``,
``GET /v1/models/{model}`` -> ``/api/show``. Every error, whether the translation's or the native
handler's, is answered in the OpenAI envelope with the native status kept; an error after an SSE stream
began is a final ``data: {"error": {...}}`` frame.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncGenerator
from typing import Any, Protocol

from aiohttp import web

from ...errors import OllamaError
from . import native
from . import translate_request as req
from . import translate_response as resp

log = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"


class _StreamTranslator(Protocol):
    finished: bool

    def feed(self, native: dict[str, Any]) -> list[resp.Frame]: ...


def json_answer(body: Any, status: int = 200) -> web.Response:
    """Go's ``json.NewEncoder(w).Encode``: ``application/json`` and a trailing newline."""
    return web.Response(body=resp.dumps(body) + b"\n", status=status, content_type="application/json")


def error_answer(status: int, message: str) -> web.Response:
    return json_answer(resp.error_body(status, message), status)


def _native_error(reply: native.NativeReply) -> web.Response:
    body = reply.body
    message = body.get("error") if isinstance(body, dict) else body
    return error_answer(reply.status, str(message if message is not None else ""))


async def _single(body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
    yield body


async def _stream(request: web.Request, lines: AsyncGenerator[dict[str, Any], None], translator: _StreamTranslator) -> web.StreamResponse:
    """Write the native lines as SSE frames as they come; stop at the translator's end."""
    out = web.StreamResponse(status=200, headers={"Content-Type": EVENT_STREAM})
    await out.prepare(request)
    try:
        async for line in lines:
            for frame in translator.feed(line):
                await out.write(resp.sse(frame))
            if translator.finished:
                break
    except OllamaError as exc:
        await out.write(resp.sse(resp.stream_error(exc.message)))
    finally:
        await lines.aclose()  # cancels the native handler if it is still generating
    await out.write_eof()
    return out


async def _generation(
    request: web.Request, path: str, translated: req.Translated, completion_id: str, translator: _StreamTranslator,
    shape: Any,
) -> web.StreamResponse:
    reply = await native.call(request, "POST", path, translated.native)
    if reply.lines is None and reply.status != 200:
        return _native_error(reply)
    if not translated.stream:
        return json_answer(shape(completion_id, reply.body or {}))
    return await _stream(request, reply.lines or _single(reply.body or {}), translator)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    try:
        translated = req.chat_request(req.decode(await request.read(), req.CHAT))
        completion_id = f"chatcmpl-{random.randrange(999)}"
        stream = resp.ChatStream(completion_id, translated.include_usage)
        return await _generation(request, "/api/chat", translated, completion_id, stream, resp.chat_completion)
    except OllamaError as exc:
        return error_answer(exc.status, exc.message)


async def completions(request: web.Request) -> web.StreamResponse:
    try:
        translated = req.completion_request(req.decode(await request.read(), req.COMPLETION))
        completion_id = f"cmpl-{random.randrange(999)}"
        stream = resp.CompletionStream(completion_id, translated.include_usage)
        return await _generation(request, "/api/generate", translated, completion_id, stream, resp.completion)
    except OllamaError as exc:
        return error_answer(exc.status, exc.message)


async def embeddings(request: web.Request) -> web.Response:
    try:
        translated = req.embed_request(req.decode(await request.read(), req.EMBED))
        reply = await native.call(request, "POST", "/api/embed", translated.native)
    except OllamaError as exc:
        return error_answer(exc.status, exc.message)
    if reply.status != 200:
        return _native_error(reply)
    return json_answer(resp.embedding_list(translated.model, reply.body or {}, translated.encoding_format))


async def list_models(request: web.Request) -> web.Response:
    try:
        reply = await native.call(request, "GET", "/api/tags")
    except OllamaError as exc:
        return error_answer(exc.status, exc.message)
    if reply.status != 200:
        return _native_error(reply)
    return json_answer(resp.model_list(reply.body or {}))


async def retrieve_model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    try:
        reply = await native.call(request, "POST", "/api/show", {"name": name})
    except OllamaError as exc:
        return error_answer(exc.status, exc.message)
    if reply.status != 200:
        return _native_error(reply)
    return json_answer(resp.model(reply.body or {}, name))


def setup(app: web.Application) -> None:
    app.router.add_route("POST", "/v1/chat/completions", chat_completions)
    app.router.add_route("POST", "/v1/completions", completions)
    app.router.add_route("POST", "/v1/embeddings", embeddings)
    app.router.add_route("GET", "/v1/models", list_models)
    # names may carry a namespace or a host ("hf.co/user/repo:tag"), so the id may contain slashes
    app.router.add_route("GET", "/v1/models/{model:.+}", retrieve_model)
