"""Streaming is the only path: handlers produce an async iterator of JSON objects; this module writes it
as NDJSON, or folds it into one object for ``stream:false``.

Errors follow Ollama's ``streamResponse``: an ``OllamaError`` raised before the first line becomes the HTTP
status with ``{"error": ...}``; one raised after streaming began becomes a final ``{"error": ...}`` line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import orjson
from aiohttp import web

from ..errors import InternalError, OllamaError

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"


def dumps(obj: Any) -> bytes:
    """Compact JSON, as Go's encoder writes it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def dumps_arrays(obj: Any) -> bytes:
    """Compact JSON where numpy arrays are float32 vectors (embeddings): orjson writes them as Go writes a
    ``[]float32``, each value's shortest float32 form, at a twentieth of ``json.dumps``' time."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def json_response(data: Any, status: int = 200, *, arrays: bool = False) -> web.Response:
    """Gin's ``c.JSON``: ``application/json; charset=utf-8`` (``arrays``: see ``dumps_arrays``)."""
    return web.Response(
        body=dumps_arrays(data) if arrays else dumps(data),
        status=status,
        content_type="application/json",
        charset="utf-8",
    )


def error_response(exc: OllamaError) -> web.Response:
    return json_response({"error": exc.message}, status=exc.status)


def as_ollama_error(exc: BaseException) -> OllamaError:
    """The error a client is told: an ``OllamaError`` as it is, anything else logged and a 500."""
    if isinstance(exc, OllamaError):
        return exc
    log.exception("unexpected error", exc_info=exc)
    return InternalError(str(exc) or type(exc).__name__)


async def respond(
    request: web.Request,
    events: AsyncIterator[dict[str, Any]],
    *,
    stream: bool,
    fold: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
    charset: str | None = None,
) -> web.StreamResponse:
    """Write ``events`` as NDJSON (``stream``) or as one folded object. ``fold`` defaults to "last event"."""
    if not stream:
        collected: list[dict[str, Any]] = []
        try:
            async for event in events:
                collected.append(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return error_response(as_ollama_error(exc))
        body = (fold or _last)(collected)
        single = web.Response(body=dumps(body), content_type="application/json")
        if charset:
            single.charset = charset
        return single

    iterator = aiter(events)
    try:
        first = await anext(iterator)
    except StopAsyncIteration:
        first = None
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return error_response(as_ollama_error(exc))

    resp = web.StreamResponse(status=200, headers={"Content-Type": NDJSON})
    await resp.prepare(request)
    if first is not None:
        await _write_line(resp, first)
        try:
            async for event in iterator:
                await _write_line(resp, event)
        except asyncio.CancelledError:
            raise
        except (ConnectionResetError, ConnectionError):
            raise
        except Exception as exc:
            err = as_ollama_error(exc)
            await _write_line(resp, {"error": err.message})
    await resp.write_eof()
    return resp



T = TypeVar("T")


async def sse_response(
    request: web.Request,
    items: AsyncIterator[T],
    *,
    frames: Callable[[T], Iterable[bytes]],
    failed: Callable[[OllamaError], Iterable[bytes]],
    refused: Callable[[OllamaError], web.Response],
    headers: Mapping[str, str],
    finished: Callable[[], bool] = lambda: False,
) -> web.StreamResponse:
    """Server-sent events as ``items`` come (``/v1`` chat and completions, ``/v1/messages``,
    ``/v1/responses``): an error before the first item is ``refused``'s answer, with its status; one after
    it ends the stream with ``failed``'s frames; the stream also ends once ``finished()``. The items are
    closed however it ends, so a client that went away stops the generation (its batch row is freed)."""
    iterator = aiter(items)
    try:
        try:
            item = await anext(iterator, None)
        except Exception as exc:
            return refused(as_ollama_error(exc))
        out = web.StreamResponse(status=200, headers=headers)
        await out.prepare(request)
        try:
            while item is not None and not finished():
                for frame in frames(item):
                    await out.write(frame)
                item = await anext(iterator, None)
        except (ConnectionResetError, ConnectionError):
            raise
        except Exception as exc:
            for frame in failed(as_ollama_error(exc)):
                await out.write(frame)
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
    await out.write_eof()
    return out

def _last(events: list[dict[str, Any]]) -> dict[str, Any]:
    return events[-1] if events else {}


async def _write_line(resp: web.StreamResponse, obj: dict[str, Any]) -> None:
    await resp.write(dumps(obj) + b"\n")


async def iterate_in_thread(work: Callable[[Callable[[dict[str, Any]], None]], None]) -> AsyncIterator[dict[str, Any]]:
    """Run blocking ``work(emit)`` on a thread and yield what it emits, in order, on the event loop.

    An exception in ``work`` is re-raised here after the events emitted before it. If the consumer goes
    away (client disconnect), ``emit`` raises ``CancelledWork`` in the thread at its next call, so long
    work stops at its next progress report.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancelled = threading.Event()

    def emit(event: dict[str, Any]) -> None:
        if cancelled.is_set():
            raise CancelledWork
        loop.call_soon_threadsafe(queue.put_nowait, ("event", event))

    def run() -> None:
        try:
            work(emit)
        except CancelledWork:
            pass
        except BaseException as exc:
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
            return
        loop.call_soon_threadsafe(queue.put_nowait, ("done", None))

    thread = threading.Thread(target=run, name="ollama-torch-work", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "event":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        cancelled.set()


class CancelledWork(Exception):
    """Raised inside worker threads when the request that wanted their output is gone."""


def iterate_sync(items: Iterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    async def gen() -> AsyncIterator[dict[str, Any]]:
        for item in items:
            yield item

    return gen()
