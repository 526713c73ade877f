"""``POST /api/x/export`` and ``GET /api/x/blobs/{digest}``: a stored model as one GGUF file (ollama-torch
extensions, used by ``ollama-torch export``).

The export runs the injected ``ExportModel`` (``create.export.export_model``: the converters, on a thread)
and streams its statuses like ``/api/create``; its last line names the GGUF's blob, which the client then
downloads. Ollama has no way to read a blob back (only ``HEAD`` and ``POST``), so that download is ours.
"""

from __future__ import annotations

from aiohttp import web

from ..create import ExportRequest
from ..errors import BadRequest, NotFound
from ..store import parse_digest
from .decode import read_json
from .lookup import model_name
from .state import STORE, export_of
from .streaming import iterate_in_thread, respond


async def export(request: web.Request) -> web.StreamResponse:
    fields = await read_json(request, "ExportRequest")
    text = fields.str("model") or fields.str("name")
    if not text:
        raise BadRequest("model is required")
    req = ExportRequest(name=model_name(text), quantize=fields.str("quantize") or fields.str("quantization"))
    store, run = request.app[STORE], export_of(request.app)
    events = iterate_in_thread(lambda emit: run(store, req, emit))
    return await respond(request, events, stream=fields.bool("stream", True))


async def get_blob(request: web.Request) -> web.StreamResponse:
    """The blob's bytes (``application/octet-stream``), streamed from disk; ranges are honoured."""
    digest = parse_digest(request.match_info["digest"])
    path = request.app[STORE].blobs.path(digest)
    if not path.is_file():
        raise NotFound(f'blob "{digest}" not found')
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


def setup(app: web.Application) -> None:
    app.router.add_route("POST", "/api/x/export", export)
    app.router.add_get("/api/x/blobs/{digest}", get_blob)  # HEAD too
