"""``OLLAMA_TORCH_API_KEY``: with a key, every registered route but ``/``, ``HEAD /`` and ``/api/version``
answers 401 without it or with a wrong one, in the error shape of its family; the key is accepted as a
bearer token or as ``x-api-key``; CORS preflights still work; without a key nothing changes. The
end-to-end test (``tests/e2e/test_api_key.py``) drives the real server with the real SDKs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ollama_torch.server.auth import key_matches, presented_keys

from .scripted import Client, ScriptedEngine, serve

KEY = "s3cret-Key"


def routes(client: Client) -> list[tuple[str, str]]:
    """Every registered (method, path), its parameters filled in."""
    out = []
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        template = info.get("path") or info.get("formatter") or ""
        out.append((route.method, re.sub(r"\{[^}]+\}", "x", template)))
    return out


def family(path: str) -> str:
    if path.startswith("/v1/messages"):
        return "anthropic"
    return "openai" if path.startswith("/v1/") else "native"


def test_every_route_but_liveness_and_version_needs_the_key(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        protected = [(m, p) for m, p in routes(client) if (m, p) not in {("GET", "/"), ("HEAD", "/"), ("GET", "/api/version"), ("HEAD", "/api/version")}]
        assert len(protected) >= 24 and ("POST", "/v1/messages/count_tokens") in protected
        for method, path in protected:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"x-api-key": "wrong"}, {"Authorization": KEY}):
                r = await client.request(method, path, headers=headers)
                assert r.status == 401, (method, path, headers, r.status)
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                if method == "HEAD":
                    continue
                body = await r.json()
                kind = family(path)
                if kind == "native":
                    assert set(body) == {"error"} and isinstance(body["error"], str)
                elif kind == "openai":
                    assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == "invalid_api_key"
                else:
                    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
        for method, path in (("GET", "/"), ("HEAD", "/"), ("GET", "/api/version"), ("HEAD", "/api/version")):
            assert (await client.request(method, path)).status == 200
        # an unknown path is refused before the router says 404
        assert (await client.get("/api/nope")).status == 401

    serve(tmp_path, check, api_key=KEY)


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {KEY}"}, {"Authorization": f"bearer {KEY}"}, {"x-api-key": KEY},
     {"Authorization": "Bearer placeholder", "x-api-key": KEY}],
    ids=["bearer", "scheme case", "x-api-key", "either of both"],
)
def test_the_key_opens_every_family(tmp_path: Path, headers: dict[str, str]) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        assert (await client.get("/api/tags", headers=headers)).status == 200
        assert (await client.get("/v1/models", headers=headers)).status == 200
        body = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
        assert (await client.post("/v1/messages", json=body, headers=headers)).status == 200
        assert (await client.post("/v1/responses", json={"model": "m", "input": "hi"}, headers=headers)).status == 200

    serve(tmp_path, check, api_key=KEY)


def test_cors_preflight_needs_no_key(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        headers = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                   "Access-Control-Request-Headers": "authorization, content-type"}
        r = await client.options("/api/chat", headers=headers)
        assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        r = await client.post("/api/chat", json={}, headers={"Origin": "http://localhost:3000"})
        assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"  # readable by the page

    serve(tmp_path, check, api_key=KEY)


def test_without_a_key_nothing_is_asked(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        assert (await client.get("/api/tags")).status == 200
        assert (await client.get("/v1/models", headers={"Authorization": "Bearer anything"})).status == 200

    serve(tmp_path, check)


def test_key_helpers() -> None:
    assert presented_keys({"Authorization": "Bearer  k "}) == ["k"]
    assert presented_keys({"Authorization": "Basic k"}) == []
    assert presented_keys({"Authorization": "Bearer a", "x-api-key": "b"}) == ["a", "b"]
    assert key_matches("k", "k") and not key_matches("k", "K") and not key_matches("", "k")
    assert not key_matches("\udcff", "k")  # undecodable header text is compared, not an exception
