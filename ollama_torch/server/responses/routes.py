"""``POST /v1/responses``: the Responses request becomes a native ``/api/chat`` body (``translate_request``),
which ``/api/chat``'s own parser validates into the engine's typed call; the engine's chunks become the
Responses events (``translate_response``), and ``stream: false`` answers the response object the last event
carries. Errors before the first chunk are the OpenAI error envelope with the native status (as ``/v1``'s
other routes answer them); one after it is a ``response.failed`` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

from aiohttp import web

from ...engine.api import Chunk
from ...errors import BadRequest, OllamaError
from .. import routes_generate
from ..decode import Fields
from ..openai.routes import EVENT_STREAM, error_answer, json_answer
from ..openai.translate_request import decode
from ..state import engine_of
from ..streaming import as_ollama_error, sse_response
from . import translate_request as req
from . import translate_response as resp


async def responses(request: web.Request) -> web.StreamResponse:
    try:
        translated = req.responses_request(decode(await request.read(), req.STRUCT))
        parsed = routes_generate.parse_chat(request, Fields(translated.native, "ChatRequest"))
        if parsed.action != "generate":  # no input at all: an empty conversation only loads the model
            raise BadRequest("input is required")
        if translated.require_tool_call:  # no native field says it: the call is the seam's
            parsed = replace(parsed, call=replace(parsed.generation, require_tool_call=True))
    except OllamaError as exc:
        return error_answer(exc)
    stream = resp.ResponseStream(resp.new_id("resp"), translated.model, translated.request)
    chunks = engine_of(request.app).generate(parsed.generation)
    if translated.stream:
        return await _stream(request, chunks, stream)
    try:
        async for chunk in chunks:
            stream.feed(chunk)
    except Exception as exc:
        return error_answer(as_ollama_error(exc))
    return json_answer(stream.answer())


async def _stream(request: web.Request, chunks: AsyncIterator[Chunk], stream: resp.ResponseStream) -> web.StreamResponse:
    """Events as the chunks come; an error before the first chunk is an answer with its status."""
    return await sse_response(
        request, chunks, frames=lambda chunk: [resp.sse(event) for event in stream.feed(chunk)], refused=error_answer,
        failed=lambda err: [resp.sse(event) for event in stream.failed(err.message)],
        headers={"Content-Type": EVENT_STREAM, "Cache-Control": "no-cache"},
    )


def setup(app: web.Application) -> None:
    app.router.add_route("POST", "/v1/responses", responses)
