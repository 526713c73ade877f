"""Model management endpoints: version, tags, show, copy, delete, blobs."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .. import OLLAMA_API_VERSION
from ..errors import BadRequest, ModelNotFound, NotFound, OllamaError
from ..store import ModelStore, parse_digest
from . import show as show_mod
from .decode import Fields, read_json
from .lookup import model_name
from .state import ENGINE, STORE
from .streaming import json_response

log = logging.getLogger(__name__)


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running", content_type="text/plain")


async def version(request: web.Request) -> web.Response:
    return json_response({"version": OLLAMA_API_VERSION})


def _tags(store: ModelStore) -> dict[str, object]:
    models = []
    for listed in store.list():
        try:
            model = store.get(listed.name)
        except OllamaError:
            continue
        entry = {
            "name": listed.name.display_shortest,
            "model": listed.name.display_shortest,
            "modified_at": show_mod.rfc3339(listed.modified_at),
            "size": listed.size,
            "digest": listed.digest,
            "details": show_mod.details_with_lengths(model),
        }
        caps = model.capabilities
        if caps:
            entry["capabilities"] = caps
        models.append(entry)
    return {"models": models}


async def tags(request: web.Request) -> web.Response:
    return json_response(await tags_body(request.app[STORE]))


async def tags_body(store: ModelStore) -> dict[str, object]:
    """``/api/tags``'s answer (also ``/v1/models``'s source)."""
    return await asyncio.to_thread(_tags, store)


def _model_arg(fields: Fields, key: str = "model", alt: str = "name") -> str:
    return fields.str(key) or fields.str(alt)


async def show(request: web.Request) -> web.Response:
    return json_response(await show_body(request.app[STORE], await read_json(request, "ShowRequest")))


async def show_body(store: ModelStore, fields: Fields) -> dict[str, object]:
    """``/api/show``'s answer for a ``ShowRequest`` (also ``/v1/models/{model}``'s source)."""
    name_text = _model_arg(fields)
    verbose = fields.bool("verbose")
    system = fields.str("system")
    options = fields.dict("options")
    if not name_text:
        raise BadRequest("model is required")
    name = model_name(name_text)

    def build() -> dict[str, object]:
        try:
            model = store.get(name)
        except ModelNotFound:
            raise ModelNotFound(name.display_shortest) from None
        return show_mod.show(model, verbose=verbose, system=system, options=options)

    return await asyncio.to_thread(build)


async def copy(request: web.Request) -> web.Response:
    fields = await read_json(request, "CopyRequest")
    source_text, dest_text = fields.str("source"), fields.str("destination")
    source = model_name(source_text, f'source "{source_text}" is invalid')
    dest = model_name(dest_text, f'destination "{dest_text}" is invalid')
    store = request.app[STORE]
    try:
        await asyncio.to_thread(store.copy, source, dest)
    except ModelNotFound:
        raise NotFound(f'model "{source_text}" not found') from None
    return web.Response(status=200)


async def delete(request: web.Request) -> web.Response:
    fields = await read_json(request, "DeleteRequest")
    name_text = _model_arg(fields)
    name = model_name(name_text, f'name "{name_text}" is invalid')
    store = request.app[STORE]
    try:
        await asyncio.to_thread(store.delete, name)
    except ModelNotFound:
        raise ModelNotFound(name_text) from None
    engine = request.app.get(ENGINE)
    if engine is not None:
        await engine.forget(name)
    return web.Response(status=200)


async def head_blob(request: web.Request) -> web.Response:
    digest = parse_digest(request.match_info["digest"])
    if request.app[STORE].blobs.exists(digest):
        return web.Response(status=200)
    raise NotFound(f'blob "{digest}" not found')


async def create_blob(request: web.Request) -> web.Response:
    digest = parse_digest(request.match_info["digest"])
    blobs = request.app[STORE].blobs
    if blobs.exists(digest):
        return web.Response(status=200)
    # Streamed to a temp file while hashed; leaving the block any way but commit() stores nothing.
    with blobs.writer(digest) as writer:
        async for chunk in request.content.iter_chunked(1 << 20):
            writer.write(chunk)
        await asyncio.to_thread(writer.commit)
    return web.Response(status=201)


def setup(app: web.Application) -> None:
    app.router.add_get("/", root)  # add_get answers HEAD too (Ollama's Go client heartbeat is HEAD /)
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/tags", tags)
    app.router.add_route("POST", "/api/show", show)
    app.router.add_route("POST", "/api/copy", copy)
    app.router.add_route("DELETE", "/api/delete", delete)
    app.router.add_route("HEAD", "/api/blobs/{digest}", head_blob)
    app.router.add_route("POST", "/api/blobs/{digest}", create_blob)
