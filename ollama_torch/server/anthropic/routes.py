"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: the Anthropic request becomes a native
``/api/chat`` body (``translate_request``), which ``/api/chat``'s own parser validates into the engine's
typed call; the engine's chunks become Anthropic's events (``translate_response``).

Every error is answered in Anthropic's shape with its native status; one after the stream began is an
``error`` event. As in Ollama (its ``relax_thinking``), asking a model without the ``thinking`` capability
to think is not an error here (coding agents ask every model): ``think`` is dropped. ``count_tokens``
renders the conversation exactly as ``/v1/messages`` would, tools and thinking included, and counts the
prompt's tokens with the model's tokenizer (Ollama has no such route; its estimate is a quarter of the
characters), without fitting it to ``num_ctx``: the count is of the conversation as sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from aiohttp import web

from ...engine.api import Chunk
from ...errors import BadRequest, OllamaError
from .. import routes_generate
from ..decode import Fields
from ..lookup import stored_model
from ..openai.translate_request import decode
from ..openai.translate_response import dumps
from ..routes_generate import Parsed
from ..state import STORE, engine_of
from ..streaming import as_ollama_error, sse_response
from . import translate_request as req
from . import translate_response as resp

EVENT_STREAM = "text/event-stream"
# count_tokens renders without fitting the prompt to a context: a bound no prompt reaches
UNBOUNDED_CTX = 1 << 40


def json_answer(body: Any, status: int = 200) -> web.Response:
    """Go's ``json.NewEncoder(w).Encode``: ``application/json`` and a trailing newline."""
    return web.Response(body=dumps(body) + b"\n", status=status, content_type="application/json")


def error_answer(exc: OllamaError) -> web.Response:
    return json_answer(resp.error_body(exc.status, exc.message), exc.status)


def _relax_thinking(request: web.Request, native: dict[str, Any]) -> dict[str, Any]:
    """Ollama's ``relax_thinking``: ``think`` on a model that cannot think is dropped, not refused."""
    if not native.get("think"):
        return native
    try:
        stored = stored_model(request.app[STORE], native["model"], empty=BadRequest("model is required"))
    except OllamaError:
        return native  # the parser answers it, in its order
    if "thinking" in stored.capabilities:
        return native
    return {k: v for k, v in native.items() if k != "think"}


def _parse(request: web.Request, translated: req.Translated) -> Parsed:
    parsed = routes_generate.parse_chat(request, Fields(_relax_thinking(request, translated.native), "ChatRequest"))
    if parsed.action != "generate":  # every message was empty (an empty conversation only loads the model)
        raise BadRequest("messages: no message has any content")
    if translated.require_tool_call:  # no native field says it: the call is the seam's
        parsed = replace(parsed, call=replace(parsed.generation, require_tool_call=True))
    return parsed


async def messages(request: web.Request) -> web.StreamResponse:
    try:
        translated = req.messages_request(decode(await request.read(), req.MESSAGES, req.PACKAGE))
        parsed = _parse(request, translated)
    except OllamaError as exc:
        return error_answer(exc)
    stream = resp.MessageStream(resp.new_id("msg"), translated.model, translated.estimated_input_tokens,
                                translated.stop_sequences)
    chunks = engine_of(request.app).generate(parsed.generation)
    if translated.stream:
        return await _stream(request, chunks, stream)
    events: list[resp.Event] = []
    try:
        async for chunk in chunks:
            events += stream.feed(chunk)
    except Exception as exc:
        return error_answer(as_ollama_error(exc))
    return json_answer(resp.fold(events))


async def _stream(request: web.Request, chunks: AsyncIterator[Chunk], stream: resp.MessageStream) -> web.StreamResponse:
    """Events as the chunks come; an error before the first chunk is an answer with its status."""
    return await sse_response(
        request, chunks, frames=lambda chunk: [resp.sse(event) for event in stream.feed(chunk)], refused=error_answer,
        failed=lambda err: [resp.sse(resp.stream_error(err.status, err.message))],
        headers={"Content-Type": EVENT_STREAM, "Cache-Control": "no-cache"},
    )


async def count_tokens(request: web.Request) -> web.StreamResponse:
    try:
        translated = req.count_tokens_request(decode(await request.read(), req.COUNT_TOKENS, req.PACKAGE))
        parsed = _parse(request, translated)
        call = parsed.generation
        call = replace(call, options=replace(call.options, num_ctx=UNBOUNDED_CTX), truncate=True)
        rendered = await engine_of(request.app).render(call)
    except OllamaError as exc:
        return error_answer(exc)
    return json_answer({"input_tokens": rendered.token_count})


def setup(app: web.Application) -> None:
    app.router.add_route("POST", "/v1/messages", messages)
    app.router.add_route("POST", "/v1/messages/count_tokens", count_tokens)
