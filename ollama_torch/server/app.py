"""The aiohttp application: app state under ``web.AppKey``s, the error/CORS/host middlewares, the routes.

``make_app(settings, store=..., engine=...)`` takes its services through the constructor, so tests can
inject a scripted engine for HTTP edge cases while end-to-end tests run the real one.
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import Forbidden, InternalError, OllamaError
from ..settings import Settings
from ..store import ModelStore
from .engine_api import EngineService
from .streaming import error_response

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", ModelStore)
ENGINE = web.AppKey("engine", EngineService)  # ollama_torch.engine.Scheduler, or a scripted stand-in

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except OllamaError as exc:
        return error_response(exc)
    except web.HTTPMethodNotAllowed:
        return web.Response(status=405, text="405 method not allowed", content_type="text/plain")
    except web.HTTPNotFound:
        return web.Response(status=404, text="404 page not found", content_type="text/plain")
    except web.HTTPException:
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:  # a bug: still answer JSON (never aiohttp's text/plain 500), and log it
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(InternalError(f"internal error: {type(exc).__name__}: {exc}"))


def _origin_allowed(origin: str, patterns: tuple[str, ...]) -> bool:
    return any(p == "*" or fnmatch.fnmatchcase(origin, p) for p in patterns)


def cors_middleware(settings: Settings) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and origin is not None:
            if not _origin_allowed(origin, settings.origins):
                return web.Response(status=403)
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS",
                    "Access-Control-Allow-Headers": request.headers.get(
                        "Access-Control-Request-Headers",
                        "Authorization, Content-Type, User-Agent, Accept, X-Requested-With",
                    ),
                    "Access-Control-Max-Age": "43200",
                },
            )
        if origin is not None and not _origin_allowed(origin, settings.origins):
            return web.Response(status=403)
        return await handler(request)

    return cors


async def _allow_origin(request: web.Request, response: web.StreamResponse) -> None:
    """Add the CORS header as any response (streams included) is prepared; disallowed origins never get
    this far (the CORS middleware answers them 403)."""
    origin = request.headers.get("Origin")
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.setdefault("Vary", "Origin")


def _host_allowed(host_header: str) -> bool:
    host = host_header
    if host.startswith("["):
        host = host[1 : host.find("]")]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if not host:
        return True
    host = host.lower()
    if host in {"localhost", socket.gethostname().lower()}:
        return True
    if host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified or ip.is_link_local


def host_middleware(settings: Settings) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Ollama's ``allowedHostsMiddleware``: a server bound to loopback answers only local Host headers,
    which stops DNS-rebinding attacks from web pages."""

    @web.middleware
    async def hosts(request: web.Request, handler: Handler) -> web.StreamResponse:
        if settings.host.is_loopback and not _host_allowed(request.host):
            return error_response(Forbidden("forbidden"))
        return await handler(request)

    return hosts


def make_app(settings: Settings, *, store: ModelStore | None = None, engine: EngineService | None = None) -> web.Application:
    from . import openai, routes_create, routes_embed, routes_generate, routes_models, routes_registry

    app = web.Application(
        middlewares=[host_middleware(settings), cors_middleware(settings), error_middleware],
        client_max_size=1 << 40,  # blob uploads are streamed; this only bounds request.read()
    )
    app.on_response_prepare.append(_allow_origin)
    app[SETTINGS] = settings
    app[STORE] = store if store is not None else ModelStore(settings.models)
    if engine is not None:
        app[ENGINE] = engine
    routes_models.setup(app)
    routes_create.setup(app)
    routes_generate.setup(app)
    routes_embed.setup(app)
    routes_registry.setup(app)
    openai.setup(app)  # /v1: Ollama's OpenAI-compatible endpoints
    return app
