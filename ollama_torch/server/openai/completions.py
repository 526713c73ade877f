"""``POST /v1/completions``: OpenAI's (legacy) completions over ``/api/generate``'s parser, for every prompt
of the request (OpenAI's four ``prompt`` forms, ``prompts.py``), with ``echo``.

Each prompt is its own generation call, all submitted at once so that the engine batches them; the answer
has one choice per prompt with its ``index``, and the usage of all of them; a stream interleaves the
choices' chunks as they come and ends with ``[DONE]`` once every prompt is done. An error in any prompt
answers the whole request (and stops the others), before the first chunk with its status, after it as the
stream's last frame.

``echo`` returns the prompt as the engine read it (raw: no template, so the scored tokens are the caller's),
ahead of the generated text: the first chunk of each choice carries it and, with ``logprobs``, its tokens'
logprobs in the legacy shape (the first token's ``null``, as OpenAI wrote it). ``max_tokens: 0`` scores
without generating. A prompt longer than the context is a 400 with ``echo``, never cut: the scored tokens
would not be the ones sent.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace
from typing import Any

from aiohttp import web

from ...engine.api import Chunk, Prompt
from ...errors import OllamaError
from .. import routes_generate
from ..decode import Fields
from ..routes_generate import Parsed
from ..streaming import as_ollama_error, sse_response
from . import translate_request as req
from . import translate_response as resp
from .answer import EVENT_STREAM, Generation, error_answer, json_answer
from .prompts import PromptInput

Indexed = tuple[int, dict[str, Any]]  # a prompt's place in the request, and one of its native lines


async def completions(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        translated = req.completion_request(req.decode(await request.read(), req.COMPLETION))
        parsed = [_parse(request, translated, prompt) for prompt in translated.prompts]
    except OllamaError as exc:
        return error_answer(exc)
    completion_id = f"cmpl-{random.randrange(999)}"
    generations = [Generation(request, p, completion_line, started) for p in parsed]
    lines = _merged([g.lines() for g in generations])
    if translated.stream:
        stream = resp.CompletionStream(completion_id, translated.include_usage, len(generations))
        return await _stream(request, lines, stream, generations)
    collected: list[list[dict[str, Any]]] = [[] for _ in generations]
    try:
        async for index, line in lines:
            collected[index].append(line)
    except Exception as exc:
        return error_answer(as_ollama_error(exc))
    folded = [routes_generate.fold_generate(c) for c in collected]
    return json_answer(resp.completion_choices(completion_id, folded, _counted(generations)))


def _parse(request: web.Request, translated: req.Translated, prompt: PromptInput) -> Parsed:
    """One prompt's call: the native parser's, with what the native API has no field for (token ids, echo)."""
    native = {**translated.native, "prompt": prompt if isinstance(prompt, str) else ""}
    tokens = () if isinstance(prompt, str) else prompt
    parsed = routes_generate.parse_generate(request, Fields(native, "GenerateRequest"), tokens=tokens)
    if not translated.echo or parsed.call is None:
        return parsed
    call = replace(parsed.call, echo=True, prompt_logprobs=parsed.call.logprobs, truncate=False)
    return replace(parsed, call=call)


def completion_line(parsed: Parsed, chunk: Chunk, started: float) -> dict[str, Any] | None:
    """``/api/generate``'s line for ``chunk``; the echoed prompt as a line of text of its own, its logprobs
    first-token-``null`` (the native API never echoes, so only this translator writes such a line)."""
    if not isinstance(chunk, Prompt):
        return routes_generate.generate_line(parsed, chunk, started)
    line: dict[str, Any] = {"model": parsed.name, "created_at": routes_generate.now_rfc3339(), "response": chunk.text, "done": False}
    if parsed.generation.prompt_logprobs:
        line["logprobs"] = [{"token": chunk.first, "logprob": None}, *(e.as_json() for e in chunk.logprobs)]
    return line


def _counted(generations: Sequence[Generation]) -> dict[str, Any] | None:
    """The engine's usage of all prompts, when every one of them ran a generation."""
    counted = [g.counted for g in generations]
    return resp.add_usage([c for c in counted if c is not None]) if all(c is not None for c in counted) else None


async def _merged(sources: list[AsyncGenerator[dict[str, Any], None]]) -> AsyncGenerator[Indexed, None]:
    """The lines of every prompt's generation as they come, each with its prompt's index. All run at once (the
    engine batches them); the first error is raised here, and leaving early stops every generation."""
    if len(sources) == 1:
        try:
            async for line in sources[0]:
                yield 0, line
        finally:
            await sources[0].aclose()
        return
    queue: asyncio.Queue[tuple[int, dict[str, Any] | Exception | None]] = asyncio.Queue()

    async def pump(index: int, source: AsyncGenerator[dict[str, Any], None]) -> None:
        try:
            async for line in source:
                queue.put_nowait((index, line))
            queue.put_nowait((index, None))
        except Exception as exc:
            queue.put_nowait((index, exc))
        finally:
            await source.aclose()

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(sources)]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _stream(request: web.Request, lines: AsyncGenerator[Indexed, None], stream: resp.CompletionStream,
                  generations: Sequence[Generation]) -> web.StreamResponse:
    """SSE frames as the lines come; an error before the first one is an answer with its status."""

    def frames(item: Indexed) -> list[bytes]:
        index, line = item
        stream.counted = _counted(generations)
        return [resp.sse(frame) for frame in stream.feed(line, index=index)]

    return await sse_response(request, lines, frames=frames, refused=error_answer,
                              failed=lambda err: [resp.sse(resp.stream_error(err.message))],
                              headers={"Content-Type": EVENT_STREAM}, finished=lambda: stream.finished)
