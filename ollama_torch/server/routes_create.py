"""``POST /api/create``: validate, then run the create service on a thread and stream its statuses."""

from __future__ import annotations

from aiohttp import web

from ..create import CreateRequest, create_model
from ..errors import BadRequest
from ..names import ModelName
from .app import SETTINGS, STORE
from .decode import Fields, read_json
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
    )


async def create(request: web.Request) -> web.StreamResponse:
    fields = await read_json(request, "CreateRequest")
    req = parse_create_request(fields)
    req.validate()
    store = request.app[STORE]
    settings = request.app[SETTINGS]
    events = iterate_in_thread(lambda emit: create_model(store, req, emit, noprune=settings.noprune))
    return await respond(request, events, stream=fields.bool("stream", True))


def setup(app: web.Application) -> None:
    app.router.add_route("POST", "/api/create", create)
