"""``/api/rerank`` and ``/v1/rerank`` over a scripted engine: the request reaches the engine as a typed
``RerankCall`` only once it is valid and names a model with ``rerank``, the engine's ranking comes back in the
shared answer shape, and errors come in each API's envelope. The end-to-end tests run the real engine."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ollama_torch.engine.api import RankedDocument, RerankCall, Reranked
from ollama_torch.errors import BadRequest
from ollama_torch.names import ModelName
from ollama_torch.server import make_app
from ollama_torch.settings import Settings
from ollama_torch.store import ConfigV2, Layer, Manifest, MediaType, ModelStore

Client = TestClient[web.Request, web.Application]


class RerankEngine:
    """Ranks by document length, longest first; ``"refuse"`` as the query raises the engine's 400."""

    def __init__(self) -> None:
        self.calls: list[RerankCall] = []

    async def rerank(self, call: RerankCall) -> Reranked:
        self.calls.append(call)
        if call.query == "refuse":
            raise BadRequest('"r:latest" does not support rerank')
        order = sorted(range(len(call.documents)), key=lambda i: -len(call.documents[i]))
        ranked = tuple(RankedDocument(i, float(len(call.documents[i]))) for i in order[: call.top_n])
        return Reranked(ranked, prompt_eval_count=11, load_duration=0.0)


def _store(root: Path) -> ModelStore:
    store = ModelStore(root)
    weights = store.blobs.write_bytes(b"weights")
    for name, caps in (("r", ["rerank"]), ("e", ["embedding"])):
        config = store.blobs.write_bytes(ConfigV2(model_format="safetensors", capabilities=caps).to_bytes())
        layers = (Layer(MediaType.TENSOR, weights, 7, name="model.safetensors"),)
        store.write_manifest(ModelName.parse(name), Manifest(Layer(MediaType.CONFIG, config, 1), layers))
    return store


def run(tmp_path: Path, test: Callable[[Client, RerankEngine], Awaitable[None]]) -> None:
    async def main() -> None:
        engine = RerankEngine()
        app = make_app(Settings(models=tmp_path), store=_store(tmp_path), engine=engine)  # type: ignore[arg-type]
        async with TestClient(TestServer(app)) as client:
            await test(client, engine)

    asyncio.run(main())


@pytest.mark.parametrize("path", ["/api/rerank", "/v1/rerank"])
def test_typed_call_and_answer(tmp_path: Path, path: str) -> None:
    async def check(client: Client, engine: RerankEngine) -> None:
        body = {"model": "r", "query": "q", "documents": ["bb", "a", "ccc"], "top_n": 2, "keep_alive": "1m", "unknown": 1}
        r = await client.post(path, json=body)
        assert r.status == 200 and r.content_type == "application/json"
        assert await r.json() == {
            "model": "r",
            "results": [{"index": 2, "relevance_score": 3.0, "document": {"text": "ccc"}},
                        {"index": 0, "relevance_score": 2.0, "document": {"text": "bb"}}],
            "usage": {"prompt_tokens": 11, "total_tokens": 11},
        }
        [call] = engine.calls
        assert call.model.name.display_shortest == "r:latest"
        assert (call.query, call.documents, call.top_n, call.keep_alive) == ("q", ("bb", "a", "ccc"), 2, 60.0)

    run(tmp_path, check)


def test_return_documents_false_and_null_top_n(tmp_path: Path) -> None:
    async def check(client: Client, engine: RerankEngine) -> None:
        r = await client.post("/api/rerank", json={"model": "r", "query": "", "documents": ["a", "bb"], "top_n": None,
                                                   "return_documents": False})
        assert (await r.json())["results"] == [{"index": 1, "relevance_score": 2.0}, {"index": 0, "relevance_score": 1.0}]
        assert engine.calls[0].top_n is None

    run(tmp_path, check)


ERRORS = [
    ({"model": "e", "query": "q", "documents": ["a"]}, 400, '"e" does not support rerank'),
    ({"model": "ghost", "query": "q", "documents": ["a"]}, 404, "model 'ghost' not found"),
    ({"query": "q", "documents": ["a"]}, 400, "model is required"),
    ({"model": 3, "query": "q", "documents": ["a"]}, 400, "json: cannot unmarshal number into Go struct field RerankRequest.model of type string"),
    ({"model": "r", "query": None, "documents": ["a"]}, 400, '"query" must be a string'),
    ({"model": "r", "query": "q", "documents": [None]}, 400, '"documents" must be a non-empty array of strings; documents[0] is null'),
    ({"model": "r", "query": "q", "documents": {}}, 400, '"documents" must be a non-empty array of strings'),
    ({"model": "r", "query": "q", "documents": ["a"], "top_n": 2**70}, 200, None),  # clamped to the documents
    ({"model": "r", "query": "q", "documents": ["a"], "top_n": -(2**70)}, 400, f'"top_n" must be a positive integer, got {-(2**70)}'),
    ({"model": "r", "query": "q", "documents": ["a"], "top_n": [1]}, 400, '"top_n" must be a positive integer, got array'),
    ({"model": "r", "query": "q", "documents": ["a"], "return_documents": 1}, 400, '"return_documents" must be a boolean'),
    ({"model": "r", "query": "refuse", "documents": ["a"]}, 400, '"r:latest" does not support rerank'),  # the engine's own check
]


@pytest.mark.parametrize(("body", "status", "message"), ERRORS)
def test_errors(tmp_path: Path, body: dict[str, Any], status: int, message: str | None) -> None:
    async def check(client: Client, engine: RerankEngine) -> None:
        native = await client.post("/api/rerank", json=body)
        v1 = await client.post("/v1/rerank", json=body)
        assert (native.status, v1.status) == (status, status)
        if message is None:
            return
        assert await native.json() == {"error": message}
        error = (await v1.json())["error"]
        assert error["message"] == message and error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
        valid_call = body.get("model") == "r" and body.get("query") == "refuse"
        assert len(engine.calls) == (2 if valid_call else 0)  # a bad request never reaches the engine

    run(tmp_path, check)
