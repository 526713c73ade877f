"""The application's state, under typed ``web.AppKey``s: what ``make_app`` puts in and routes read.

Its own module, so routes and the app factory import it and not each other.
"""

from __future__ import annotations

from aiohttp import web

from ..create import CreateModel, ExportModel
from ..engine.api import EngineAPI
from ..registry import Transfers
from ..settings import Settings
from ..store import ModelStore

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", ModelStore)
ENGINE = web.AppKey("engine", EngineAPI)  # ollama_torch.engine.front.Engine, or a scripted stand-in
TRANSFERS = web.AppKey("registry_transfers", Transfers)  # in-flight downloads, shared by concurrent pulls
CREATE = web.AppKey("create", CreateModel)  # ollama_torch.create.service.create_model (it runs the converters)
EXPORT = web.AppKey("export", ExportModel)  # ollama_torch.create.export.export_model (it runs the converters)


def engine_of(app: web.Application) -> EngineAPI:
    """The engine, or a 500 when the server runs without one (model management only)."""
    from ..errors import InternalError

    engine = app.get(ENGINE)
    if engine is None:
        raise InternalError("the inference engine is not available")
    return engine


def create_of(app: web.Application) -> CreateModel:
    """The create service, or a 500 when the server was built without it."""
    from ..errors import InternalError

    create = app.get(CREATE)
    if create is None:
        raise InternalError("model creation is not available")
    return create


def export_of(app: web.Application) -> ExportModel:
    """The GGUF export service, or a 500 when the server was built without it."""
    from ..errors import InternalError

    export = app.get(EXPORT)
    if export is None:
        raise InternalError("model export is not available")
    return export
