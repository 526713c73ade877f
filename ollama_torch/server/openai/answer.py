"""What every ``/v1`` generation route shares: the JSON answer and the OpenAI error envelope, and
:class:`Generation`, one engine call seen as the native route's lines (``/api/chat``'s or ``/api/generate``'s)
with the usage counted once it is done. ``routes`` (chat, embeddings, models) and ``completions`` build on it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

from aiohttp import web

from ...engine.api import Chunk, Done
from ...errors import OllamaError
from .. import routes_generate
from ..routes_generate import Parsed
from ..state import engine_of
from . import translate_response as resp

EVENT_STREAM = "text/event-stream"

Line = Callable[[Parsed, Chunk, float], "dict[str, Any] | None"]


def json_answer(body: Any, status: int = 200) -> web.Response:
    """Go's ``json.NewEncoder(w).Encode``: ``application/json`` and a trailing newline."""
    return web.Response(body=resp.dumps(body) + b"\n", status=status, content_type="application/json")


def error_answer(exc: OllamaError) -> web.Response:
    return json_answer(resp.error_body(exc.status, exc.message), exc.status)


class Generation:
    """One translated generation: its native lines as they come, and the usage once it is done."""

    def __init__(self, request: web.Request, parsed: Parsed, line: Line, started: float) -> None:
        self.request, self.parsed, self.line, self.started = request, parsed, line, started
        self.counted: dict[str, Any] | None = None

    async def lines(self) -> AsyncGenerator[dict[str, Any], None]:
        chat = self.line is routes_generate.chat_line
        single = await routes_generate.single_answer(self.request, self.parsed, chat)
        if single is not None:  # nothing to generate (an empty prompt loads the model)
            yield single
            return
        async for chunk in engine_of(self.request.app).generate(self.parsed.generation):
            if isinstance(chunk, Done):
                stats = chunk.stats
                self.counted = resp.token_usage(stats.prompt_tokens, stats.eval_count, stats.cached_tokens)
            out = self.line(self.parsed, chunk, self.started)
            if out is not None:
                yield out
