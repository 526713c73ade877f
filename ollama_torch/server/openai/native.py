"""Run the native handler of a path in-process, with a translated body, and capture what it answers.

This is Go's ``c.Next()`` with a wrapped ``ResponseWriter``: the native handler runs unchanged, against a
request that is the client's own (same app, connection, headers) except for its path, its body (the
translated JSON) and its writer. The writer captures instead of sending, so a streamed native answer
comes back as NDJSON objects, one at a time, for the OpenAI side to re-shape while it is generated.
A native answer that was not streamed (``stream:false``, or any error before the first line) is the
``web.Response`` the handler returned, read as JSON.

The handler is found through the app's router, so the translation calls exactly what a client of the
native path would (and a path nobody registered is a clean 404). Two private attributes of aiohttp's
request are set, in one place (``_request_for``): ``_match_info`` (how aiohttp binds a request to its app
and route) and ``_read_bytes`` (``read()``'s cache, which is how the body is replaced; ``clone()`` keeps the
original payload). A handler that took an already-decoded body would make this module unnecessary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict
from yarl import URL

from ...errors import InternalError, NotFound

_EOF = object()


class _CaptureWriter(AbstractStreamWriter):
    """Stands in for the connection's payload writer: body bytes go to a queue, nothing to the socket."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.started = asyncio.Event()

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self.output_size += len(chunk)
        if chunk:
            self.queue.put_nowait(bytes(chunk))

    async def write_eof(self, chunk: bytes = b"") -> None:
        if chunk:
            await self.write(chunk)
        self.queue.put_nowait(_EOF)

    async def drain(self) -> None:
        return None

    def enable_compression(self, encoding: str = "deflate", strategy: int | None = None) -> None:
        return None  # compression belongs to the real response, not to this hop

    def enable_chunking(self) -> None:
        return None

    async def write_headers(self, status_line: str, headers: CIMultiDict[str]) -> None:
        self.started.set()


@dataclass
class NativeReply:
    """A native answer: ``body`` when it was one JSON document, ``lines`` when it was streamed."""

    status: int
    body: Any = None
    lines: AsyncGenerator[dict[str, Any], None] | None = None


async def _request_for(request: web.Request, method: str, path: str, body: bytes, writer: AbstractStreamWriter) -> web.Request:
    message = request.message._replace(method=method, path=path, url=URL(path))
    native = web.Request(
        message, request.content, request.protocol, writer, request.task, asyncio.get_running_loop(),
        client_max_size=request.client_max_size,
    )
    match = await request.app.router.resolve(native)
    if match.http_exception is not None:
        raise NotFound("404 page not found")
    match.add_app(request.app)
    native._match_info = match
    native._read_bytes = body
    return native


async def call(request: web.Request, method: str, path: str, body: dict[str, Any] | None = None) -> NativeReply:
    """Run the handler registered for ``method path`` with ``body`` as its JSON body.

    ``OllamaError`` raised by the handler propagates, as it would to the error middleware. For a streamed
    answer, ``lines`` must be iterated to the end or closed: closing it cancels the native handler (a
    client that went away frees its slot in the batch).
    """
    writer = _CaptureWriter()
    native = await _request_for(request, method, path, b"" if body is None else json.dumps(body).encode(), writer)
    handler = native.match_info.handler
    task = asyncio.ensure_future(handler(native))
    started = asyncio.ensure_future(writer.started.wait())
    try:
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        started.cancel()
    if writer.started.is_set():
        return NativeReply(200, lines=_lines(task, writer))
    response = task.result()  # re-raises the handler's exception
    return NativeReply(response.status, body=_json_body(response))


def _json_body(response: web.StreamResponse) -> Any:
    if not isinstance(response, web.Response):
        raise InternalError("native handler answered without a body")
    raw = response.body
    if raw is None:
        return None
    if not isinstance(raw, (bytes, bytearray)):
        raw = (response.text or "").encode()
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        return raw.decode(errors="replace")


async def _lines(task: asyncio.Future[web.StreamResponse], writer: _CaptureWriter) -> AsyncGenerator[dict[str, Any], None]:
    """The captured NDJSON, one object per line, until the native handler writes its end (or returns)."""
    buffer = b""
    try:
        while True:
            if task.done():  # whatever it wrote is queued already
                if writer.queue.empty():
                    break
                item = writer.queue.get_nowait()
            else:
                getter = asyncio.ensure_future(writer.queue.get())
                try:
                    await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not getter.done():
                        getter.cancel()  # the handler ended (or we were cancelled): no item is lost
                if getter.cancelled():
                    continue
                item = getter.result()
            if item is _EOF:
                break
            buffer += item
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                if line.strip():
                    yield json.loads(line)
        if buffer.strip():
            yield json.loads(buffer)
        await task  # returns at once after its write_eof; re-raises what the handler raised
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
