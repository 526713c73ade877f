"""CORS as Ollama answers it (gin-contrib/cors with ``AllowWildcard`` over ``envconfig.AllowedOrigins``),
without gin's prefix/suffix wildcard hole: ``http://localhost:*`` must not admit ``http://localhost:3000.evil.com``.

A disallowed origin is a 403 with no ``Access-Control-Allow-*`` header; an allowed one gets its origin echoed
on every answer (errors and streams included) and preflights a 204.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ollama_torch.server.app import make_app, origin_allowed
from ollama_torch.settings import DEFAULT_ORIGINS, Settings
from ollama_torch.store import ModelStore

ALLOWED_BY_DEFAULT = [
    "http://localhost",
    "https://localhost",
    "http://localhost:3000",
    "https://localhost:8443",
    "http://127.0.0.1",
    "http://127.0.0.1:11434",
    "https://0.0.0.0:1",
    "HTTP://LOCALHOST:3000",  # schemes and hosts are case-insensitive
    "app://obsidian.md",
    "file://",
    "tauri://localhost",
    "vscode-webview://1a2b3c4d",
    "vscode-file://vscode-app",
]

DENIED_BY_DEFAULT = [
    "http://localhost:3000.evil.com",  # fnmatch and gin's prefix match both let `:*` swallow a host
    "http://localhost:3000@evil.com",
    "http://localhost:3000/",
    "http://localhost:",  # `*` in the port is one or more digits
    "http://localhost:abc",
    "http://localhost.evil.com",
    "http://localhostevil.com",
    "http://127.0.0.1.nip.io",
    "http://127.0.0.1:80.evil.com",
    "https://0.0.0.0.evil.com:443",
    "https://evil.com",
    "ftp://localhost",
    "null",  # what a sandboxed page or a file:// page sends
    "",
]


@pytest.mark.parametrize("origin", ALLOWED_BY_DEFAULT)
def test_ollamas_default_origins_are_allowed(origin: str) -> None:
    assert origin_allowed(origin, DEFAULT_ORIGINS)


@pytest.mark.parametrize("origin", DENIED_BY_DEFAULT)
def test_other_origins_are_denied_by_default(origin: str) -> None:
    assert not origin_allowed(origin, DEFAULT_ORIGINS)


@pytest.mark.parametrize(
    ("pattern", "origin", "allowed"),
    [
        ("https://x.org", "https://x.org", True),
        ("https://x.org", "https://x.org:443", False),
        ("https://x.org", "https://x.org.evil.com", False),
        ("https://x.org", "http://x.org", False),
        ("*", "https://anything.example", True),
        # a leading `*.` is one or more whole labels under the rest of the host
        ("https://*.example.com", "https://a.example.com", True),
        ("https://*.example.com", "https://a.b.example.com", True),
        ("https://*.example.com", "https://example.com", False),
        ("https://*.example.com", "https://evilexample.com", False),
        ("https://*.example.com", "https://a.example.com.evil.net", False),
        ("https://*.example.com", "https://a.example.com:8443", False),
        ("https://*.example.com", "http://a.example.com", False),
        ("https://*.example.com:*", "https://a.example.com:8443", True),
        # elsewhere in a host, `*` stays inside one label
        ("http://192.168.1.*", "http://192.168.1.20", True),
        ("http://192.168.1.*", "http://192.168.1.20.evil.com", False),
        ("http://192.168.1.*", "http://192.168.1.20:3000", False),
        ("http://192.168.1.*:*", "http://192.168.1.20:3000", True),
        ("http://dev-*.corp", "http://dev-alice.corp", True),
        ("http://dev-*.corp", "http://dev-a.evil.com/.corp", False),
        ("http://dev-*.corp", "http://dev-a.evil.corp", False),
        # a host that is only `*` is any host
        ("http://*:3000", "http://a.b.example:3000", True),
        ("http://*:3000", "http://a.b.example:3001", False),
        ("http://*:3000", "http://a.b.example:3000.evil.com", False),
        # `scheme://*` is any origin of that scheme (browser extensions, app shells)
        ("chrome-extension://*", "chrome-extension://abcdefghijklmnop", True),
        ("chrome-extension://*", "moz-extension://abcdefghijklmnop", False),
        ("http*://x.org", "https://x.org", True),
        ("http*://x.org", "http://x.org", True),
        # a pattern without a scheme takes any scheme; its `*` still follows the host rules
        ("*.example.com", "https://a.example.com", True),
        ("*.example.com", "http://a.b.example.com", True),
        ("*.example.com", "https://example.com.evil.net", False),
        ("localhost:*", "http://localhost:3000", True),
        ("localhost:*", "http://localhost:3000.evil.com", False),
    ],
)
def test_patterns(pattern: str, origin: str, allowed: bool) -> None:
    assert origin_allowed(origin, (pattern,)) is allowed


# -- through the app ---------------------------------------------------------------------------------
def cors_headers(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower().startswith("access-control-")}


def run(coro: Callable[[], Any]) -> Any:
    return asyncio.run(coro())


@pytest.mark.parametrize(
    ("method", "path", "origin", "status", "allow_origin"),
    [
        ("GET", "/api/version", "http://localhost:3000", 200, "http://localhost:3000"),
        ("GET", "/api/version", "app://obsidian.md", 200, "app://obsidian.md"),
        ("GET", "/api/nothing-here", "http://localhost:3000", 404, "http://localhost:3000"),  # errors readable too
        ("POST", "/api/show", "http://localhost:3000", 400, "http://localhost:3000"),
        ("GET", "/api/version", "https://evil.com", 403, None),
        ("GET", "/api/version", "http://localhost:3000.evil.com", 403, None),
        ("POST", "/api/generate", "https://evil.com", 403, None),
        ("GET", "/api/version", None, 200, None),
    ],
)
def test_simple_requests(
    tmp_path: Path, method: str, path: str, origin: str | None, status: int, allow_origin: str | None
) -> None:
    async def go() -> None:
        settings = Settings(models=tmp_path / "models")
        async with TestClient(TestServer(make_app(settings, store=ModelStore(settings.models)))) as client:
            headers = {"Origin": origin} if origin is not None else {}
            resp = await client.request(method, path, headers=headers, json={} if method == "POST" else None)
            assert resp.status == status, await resp.text()
            if allow_origin is None:
                assert cors_headers(resp.headers) == {}
            else:
                assert cors_headers(resp.headers) == {"Access-Control-Allow-Origin": allow_origin}
                assert "Origin" in resp.headers.get("Vary", "")

    run(go)


@pytest.mark.parametrize(
    ("origin", "status"),
    [("http://localhost:5173", 204), ("https://evil.com", 403), ("http://localhost:5173.evil.com", 403)],
)
def test_preflight(tmp_path: Path, origin: str, status: int) -> None:
    async def go() -> None:
        settings = Settings(models=tmp_path / "models")
        async with TestClient(TestServer(make_app(settings, store=ModelStore(settings.models)))) as client:
            resp = await client.options(
                "/api/chat",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type",
                },
            )
            assert resp.status == status
            headers = cors_headers(resp.headers)
            if status == 403:
                assert headers == {}
            else:
                assert headers["Access-Control-Allow-Origin"] == origin
                assert "POST" in headers["Access-Control-Allow-Methods"]
                assert "content-type" in headers["Access-Control-Allow-Headers"].lower()

    run(go)


def test_wildcard_origins_answer_star(tmp_path: Path) -> None:
    """``OLLAMA_ORIGINS=*``: gin-contrib/cors answers ``Access-Control-Allow-Origin: *``."""

    async def go() -> None:
        settings = Settings.from_env({"OLLAMA_MODELS": str(tmp_path / "models"), "OLLAMA_ORIGINS": "*"})
        async with TestClient(TestServer(make_app(settings, store=ModelStore(settings.models)))) as client:
            resp = await client.get("/api/version", headers={"Origin": "https://anything.example"})
            assert resp.status == 200 and cors_headers(resp.headers) == {"Access-Control-Allow-Origin": "*"}

    run(go)


def test_same_origin_is_not_a_cors_request(tmp_path: Path) -> None:
    """An ``Origin`` equal to ``http://<Host>`` (a page served through the same host, e.g. a reverse proxy
    in front of both) passes without CORS headers, as gin-contrib/cors lets it."""

    async def go() -> None:
        settings = Settings.from_env({"OLLAMA_MODELS": str(tmp_path / "models"), "OLLAMA_HOST": "0.0.0.0"})
        async with TestClient(TestServer(make_app(settings, store=ModelStore(settings.models)))) as client:
            same = {"Host": "ai.lan:8080", "Origin": "http://ai.lan:8080"}
            resp = await client.get("/api/version", headers=same)
            assert resp.status == 200 and cors_headers(resp.headers) == {}
            other = {"Host": "ai.lan:8080", "Origin": "http://other.lan:8080"}
            resp = await client.get("/api/version", headers=other)
            assert resp.status == 403 and cors_headers(resp.headers) == {}

    run(go)
