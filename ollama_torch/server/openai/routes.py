"""The ``/v1`` endpoints: the OpenAI request becomes a native request body (``translate_request``), which
the native parser turns into the engine's typed call; the engine's chunks become native lines (the same ones
``/api/chat`` and ``/api/generate`` send), which ``translate_response`` turns into OpenAI's answer.

``POST /v1/chat/completions`` over ``/api/chat``'s parser, ``POST /v1/completions`` over ``/api/generate``'s
(one call per prompt, with ``echo``: ``completions.py``), ``POST /v1/embeddings`` over ``/api/embed``'s, ``GET /v1/models`` and ``GET /v1/models/{model}`` over tags
and show. Every error is answered in the OpenAI envelope with its native status; one after an SSE stream
began is a final ``data: {"error": {...}}`` frame. Usage counts the whole prompt, and the prefix-cache hits
in ``prompt_tokens_details.cached_tokens`` (Ollama's counts only what was evaluated).
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, Protocol

from aiohttp import web

from ...errors import OllamaError
from .. import routes_embed, routes_generate, routes_models
from ..decode import Fields
from ..routes_generate import Parsed
from ..state import STORE
from ..streaming import as_ollama_error, dumps_arrays, sse_response
from . import translate_request as req
from . import translate_response as resp
from .answer import EVENT_STREAM, Generation, Line, error_answer, json_answer
from .completions import completions


class _StreamTranslator(Protocol):
    finished: bool
    counted: dict[str, Any] | None

    def feed(self, native: dict[str, Any]) -> list[resp.Frame]: ...


async def _stream(request: web.Request, lines: AsyncGenerator[dict[str, Any], None], translator: _StreamTranslator,
                  generation: Generation) -> web.StreamResponse:
    """SSE frames as the native lines come; an error before the first one is an answer with its status."""

    def frames(line: dict[str, Any]) -> list[bytes]:
        translator.counted = generation.counted
        return [resp.sse(frame) for frame in translator.feed(line)]

    return await sse_response(request, lines, frames=frames, refused=error_answer,
                              failed=lambda err: [resp.sse(resp.stream_error(err.message))],
                              headers={"Content-Type": EVENT_STREAM}, finished=lambda: translator.finished)


async def _generation(
    request: web.Request, translated: req.Translated, parsed: Parsed, line: Line,
    fold: Callable[[list[dict[str, Any]]], dict[str, Any]], shape: Callable[..., dict[str, Any]],
    translator: _StreamTranslator, completion_id: str, started: float,
) -> web.StreamResponse:
    generation = Generation(request, parsed, line, started)
    lines = generation.lines()
    if translated.stream:
        return await _stream(request, lines, translator, generation)
    try:
        collected = [body async for body in lines]
    except Exception as exc:
        return error_answer(as_ollama_error(exc))
    return json_answer(shape(completion_id, fold(collected), generation.counted))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        translated = req.chat_request(req.decode(await request.read(), req.CHAT))
        parsed = routes_generate.parse_chat(request, Fields(translated.native, "ChatRequest"))
    except OllamaError as exc:
        return error_answer(exc)
    completion_id = f"chatcmpl-{random.randrange(999)}"
    return await _generation(
        request, translated, parsed, routes_generate.chat_line, routes_generate.fold_chat, resp.chat_completion,
        resp.ChatStream(completion_id, translated.include_usage), completion_id, started,
    )


async def embeddings(request: web.Request) -> web.Response:
    started = time.perf_counter()
    try:
        translated = req.embed_request(req.decode(await request.read(), req.EMBED))
        parsed = routes_embed.parse_embed(request, Fields(translated.native, "EmbedRequest"))
        body = await routes_embed.run_embed(request, parsed, started)
    except OllamaError as exc:
        return error_answer(exc)
    answer = resp.embedding_list(translated.model, body, translated.encoding_format)
    return web.Response(body=dumps_arrays(answer) + b"\n", content_type="application/json")


async def list_models(request: web.Request) -> web.Response:
    try:
        tags = await routes_models.tags_body(request.app[STORE])
    except OllamaError as exc:
        return error_answer(exc)
    return json_answer(resp.model_list(tags))


async def retrieve_model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    try:
        shown = await routes_models.show_body(request.app[STORE], Fields({"name": name}, "ShowRequest"))
    except OllamaError as exc:
        return error_answer(exc)
    return json_answer(resp.model(shown, name))


def setup(app: web.Application) -> None:
    app.router.add_route("POST", "/v1/chat/completions", chat_completions)
    app.router.add_route("POST", "/v1/completions", completions)
    app.router.add_route("POST", "/v1/embeddings", embeddings)
    app.router.add_route("GET", "/v1/models", list_models)
    # names may carry a namespace or a host ("hf.co/user/repo:tag"), so the id may contain slashes
    app.router.add_route("GET", "/v1/models/{model:.+}", retrieve_model)
