"""The aiohttp application: app state under ``web.AppKey``s, the error/CORS/host middlewares, the routes.

``make_app(settings, store=..., engine=...)`` takes its services through the constructor, so tests can
inject a scripted engine for HTTP edge cases while end-to-end tests run the real one.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..create import CreateModel, ExportModel
from ..engine.api import EngineAPI
from ..errors import Forbidden, InternalError, OllamaError
from ..registry import Transfers
from ..settings import Settings
from ..store import ModelStore
from . import (
    anthropic,
    metrics,
    openai,
    responses,
    routes_create,
    routes_embed,
    routes_export,
    routes_generate,
    routes_models,
    routes_registry,
    routes_rerank,
    routes_tokenize,
)
from .auth import auth_middleware
from .state import CREATE, ENGINE, EXPORT, SETTINGS, STORE, TRANSFERS
from .streaming import error_response

log = logging.getLogger(__name__)

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


# Origin patterns (OLLAMA_ORIGINS plus Ollama's defaults) match as gin-contrib/cors matches them with
# AllowWildcard, except that a `*` never spans what gin's prefix/suffix match lets it span: in the port it is
# digits, in a host it stays inside one label (a leading `*.` is whole labels under the rest of the host), so
# `http://localhost:*` admits `http://localhost:3000` and not `http://localhost:3000.evil.com`.
_LABEL = r"[a-z0-9_-]+"
_ANY = {"scheme": r"[a-z0-9+.-]*", "host": r"[a-z0-9_-]*", "port": r"[0-9]+"}


def _glob(text: str, part: str) -> str:
    return _ANY[part].join(re.escape(piece) for piece in text.split("*"))


@functools.lru_cache(maxsize=256)
def _origin_regex(pattern: str) -> re.Pattern[str]:
    """``scheme://host[:port]`` -> a regex for whole origins. ``scheme://*`` is any origin of that scheme
    (``app://*``, ``chrome-extension://*``); a pattern without a scheme takes any scheme."""
    scheme, sep, rest = pattern.partition("://")
    if not sep:
        scheme, rest = "*", pattern
    if rest == "*":
        return re.compile(_glob(scheme, "scheme") + "://.*", re.IGNORECASE | re.DOTALL)
    if rest.startswith("["):  # an IPv6 literal: its colons are not the port's
        end = rest.find("]") + 1
        host, port = rest[:end], rest[end + 1 :] if rest[end : end + 1] == ":" else None
    else:
        host, colon, tail = rest.partition(":")
        port = tail if colon else None
    if host == "*" or host.startswith("*."):  # any host, or any under the rest: whole labels
        host_regex = rf"{_LABEL}(?:\.{_LABEL})*" + _glob(host[1:], "host")
    else:
        host_regex = _glob(host, "host")
    port_regex = "" if port is None else ":" + _glob(port, "port")
    return re.compile(_glob(scheme, "scheme") + "://" + host_regex + port_regex, re.IGNORECASE)


def origin_allowed(origin: str, patterns: tuple[str, ...]) -> bool:
    return any(p == "*" or _origin_regex(p).fullmatch(origin) for p in patterns)


# The origin a request's answer may be read from: set only by the CORS middleware once it allowed the request.
_ALLOW_ORIGIN = web.RequestKey("allow_origin", str)


def cors_middleware(settings: Settings) -> Callable[..., Awaitable[web.StreamResponse]]:
    """gin-contrib/cors as Ollama configures it: no ``Origin``, or one equal to ``http(s)://<Host>``, is not a
    CORS request; a disallowed origin is a bare 403 (no ``Access-Control-*`` header); an allowed preflight is
    a 204; any other allowed request gets ``Access-Control-Allow-Origin`` (``*`` when ``*`` is allowed)."""
    allow_all = "*" in settings.origins

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or origin in (f"http://{request.host}", f"https://{request.host}"):
            return await handler(request)
        if not origin_allowed(origin, settings.origins):
            return web.Response(status=403)
        request[_ALLOW_ORIGIN] = "*" if allow_all else origin
        if request.method == "OPTIONS":
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS",
                    "Access-Control-Allow-Headers": request.headers.get(
                        "Access-Control-Request-Headers",
                        "Authorization, Content-Type, User-Agent, Accept, X-Requested-With",
                    ),
                    "Access-Control-Max-Age": "43200",
                },
            )
        return await handler(request)

    return cors


async def _allow_origin(request: web.Request, response: web.StreamResponse) -> None:
    """Add the CORS header as any response (streams and errors included) is prepared, for requests the CORS
    middleware allowed: a 403 for a foreign origin, or an answer that never reached it, carries none."""
    allowed = request.get(_ALLOW_ORIGIN)
    if allowed is not None:
        response.headers["Access-Control-Allow-Origin"] = allowed
        if allowed != "*":
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


def make_app(
    settings: Settings,
    *,
    store: ModelStore | None = None,
    engine: EngineAPI | None = None,
    create: CreateModel | None = None,
    export: ExportModel | None = None,
    transfers: Transfers | None = None,
) -> web.Application:
    """The application over its services, handed in by the composition root (``ollama_torch.serve``) or a
    test: the model store, the engine (``engine.front.Engine`` or a scripted stand-in), the create service
    (``create.service.create_model``), the GGUF export (``create.export.export_model``) and the registry's
    transfers. Without an engine or a create service
    the routes that need them answer 500."""
    measured = metrics.Metrics()
    # metrics outermost: refusals (host, CORS, key) are requests too
    middlewares = [metrics.metrics_middleware(measured), host_middleware(settings), cors_middleware(settings)]
    if settings.api_key:  # after CORS: a preflight carries no credentials
        middlewares.append(auth_middleware(settings.api_key))
    app = web.Application(
        middlewares=[*middlewares, error_middleware],
        client_max_size=1 << 40,  # blob uploads are streamed; this only bounds request.read()
    )
    app.on_response_prepare.append(_allow_origin)
    app[SETTINGS] = settings
    app[STORE] = store if store is not None else ModelStore(settings.models)
    app[TRANSFERS] = transfers or Transfers()
    if engine is not None:
        app[ENGINE] = metrics.MeteredEngine(engine, measured)
    if create is not None:
        app[CREATE] = create
    if export is not None:
        app[EXPORT] = export
    routes_models.setup(app)
    routes_create.setup(app)
    routes_export.setup(app)
    routes_generate.setup(app)
    routes_embed.setup(app)
    routes_rerank.setup(app)  # /api/rerank and /v1/rerank
    routes_registry.setup(app)
    routes_tokenize.setup(app)  # /tokenize, /detokenize, /tokenizer_info (vLLM's, for evaluation harnesses)
    openai.setup(app)  # /v1: Ollama's OpenAI-compatible endpoints
    anthropic.setup(app)  # /v1/messages: Ollama's Anthropic-compatible endpoint
    responses.setup(app)  # /v1/responses: Ollama's OpenAI Responses endpoint
    metrics.setup(app, measured)  # /metrics: Prometheus
    return app
