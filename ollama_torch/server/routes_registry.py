"""``POST /api/pull`` and ``POST /api/push``: validate, then stream the registry client's status lines.

Names on ``hf.co`` / ``huggingface.co`` are pulled from the Hugging Face Hub (``registry/hf.py``); every
other name from the OCI registry its host names. ``TRANSFERS`` holds the app's in-flight downloads so
concurrent pulls of one blob share a download; tests replace it to shrink part sizes and delays.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from aiohttp import web

from ..errors import BadRequest, ModelNotFound
from ..registry import parse_hf_name, pull_hf, pull_model, push_model
from .decode import read_json
from .lookup import model_name
from .state import SETTINGS, STORE, TRANSFERS, create_of
from .streaming import iterate_in_thread, respond

__all__ = ["TRANSFERS", "setup"]


async def _respond(
    request: web.Request, events: AsyncIterator[dict[str, Any]], stream: bool
) -> web.StreamResponse:
    try:
        return await respond(request, events, stream=stream)
    finally:
        if isinstance(events, AsyncGenerator):
            await events.aclose()  # a client that went away stops the transfer now, not at GC time


async def pull(request: web.Request) -> web.StreamResponse:
    fields = await read_json(request, "PullRequest")
    raw = fields.str("model") or fields.str("name")  # "name" is the deprecated spelling
    insecure, stream = fields.bool("insecure"), fields.bool("stream", True)  # type errors before any 404
    name = model_name(raw)
    store = request.app[STORE]
    name = store.resolve(name) or name  # the on-disk spelling of an existing model, as getExistingName
    noprune = request.app[SETTINGS].noprune
    events: AsyncIterator[dict[str, Any]]
    if parse_hf_name(name) is not None:
        create = create_of(request.app)
        events = iterate_in_thread(lambda emit: pull_hf(store, name, emit, create=create, noprune=noprune))
    else:
        transfers = request.app[TRANSFERS]
        events = pull_model(store, name, insecure=insecure, transfers=transfers, prune=not noprune)
    return await _respond(request, events, stream)


async def push(request: web.Request) -> web.StreamResponse:
    fields = await read_json(request, "PushRequest")
    raw = fields.str("model") or fields.str("name")  # "name" is the deprecated spelling
    insecure, stream = fields.bool("insecure"), fields.bool("stream", True)  # type errors before any 404
    if not raw:
        raise BadRequest("model is required")
    name = model_name(raw)
    store = request.app[STORE]
    resolved = store.resolve(name)
    if resolved is None:
        raise ModelNotFound(raw)
    options = request.app[TRANSFERS].options
    return await _respond(request, push_model(store, resolved, insecure=insecure, options=options), stream)


def setup(app: web.Application) -> None:
    app.router.add_post("/api/pull", pull)
    app.router.add_post("/api/push", push)
