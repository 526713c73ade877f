"""``POST /api/create``: validate, then run the create service on a thread and stream its statuses."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..create import CreateRequest
from ..errors import BadRequest
from ..names import ModelName
from ..registry.pull import blocking_pull
from .decode import Fields, read_json
from .state import SETTINGS, STORE, TRANSFERS, create_of
from .streaming import iterate_in_thread, respond


def parse_create_request(fields: Fields) -> CreateRequest:
    license_value = fields.raw("license")
    if license_value is None:
        licenses: list[str] = []
    elif isinstance(license_value, str):
        licenses = [license_value]
    elif isinstance(license_value, list) and all(isinstance(v, str) for v in license_value):
        licenses = list(license_value)
    else:
        raise BadRequest("json: cannot unmarshal license: must be a string or a list of strings")
    messages = fields.list("messages", "[]api.Message")
    for msg in messages:
        if not isinstance(msg, dict):
            raise BadRequest("json: cannot unmarshal messages: each message must be an object")
    return CreateRequest(
        name=ModelName.parse(fields.str("model") or fields.str("name")),
        from_=fields.str("from"),
        files=fields.dict_str("files"),
        adapters=fields.dict_str("adapters"),
        template=fields.str("template"),
        system=fields.str("system"),
        license=licenses,
        parameters=fields.dict("parameters"),
        messages=[{**m, "role": str(m.get("role", "")).lower()} for m in messages],
        quantize=fields.str("quantize") or fields.str("quantization"),
        gguf=fields.bool("gguf"),
    )


async def create(request: web.Request) -> web.StreamResponse:
    fields = await read_json(request, "CreateRequest")
    req = parse_create_request(fields)
    req.validate()
    store = request.app[STORE]
    settings = request.app[SETTINGS]
    # ``FROM`` a model that is not stored yet pulls it first, as Ollama does.
    create = create_of(request.app)
    pull = blocking_pull(asyncio.get_running_loop(), store, request.app[TRANSFERS], create=create, prune=not settings.noprune)
    events = iterate_in_thread(lambda emit: create(store, req, emit, noprune=settings.noprune, pull=pull))
    return await respond(request, events, stream=fields.bool("stream", True))


def setup(app: web.Application) -> None:
    app.router.add_route("POST", "/api/create", create)
