"""The ``/v1`` routes over a scripted engine (the seam in ``engine/api.py``): the OpenAI request reaches the
engine as a typed call, the engine's chunks come back as SSE while they are produced, errors keep their
status, and a client that goes away mid-stream stops the generation. The end-to-end tests run the same
routes over the real engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ollama_torch.engine.api import (
    Chat,
    Chunk,
    Content,
    Done,
    EmbedCall,
    Embeddings,
    GenerationCall,
    Rendered,
    RunnerStatus,
    Stats,
)
from ollama_torch.errors import InternalError, OllamaError
from ollama_torch.names import ModelName
from ollama_torch.server import make_app
from ollama_torch.settings import Settings
from ollama_torch.store import ConfigV2, Layer, Manifest, MediaType, ModelStore, StoredModel

Client = TestClient[web.Request, web.Application]


class ScriptedEngine:
    """An engine whose generation is chosen by the first message's content."""

    def __init__(self) -> None:
        self.calls: list[GenerationCall] = []
        self.closed = asyncio.Event()

    async def generate(self, call: GenerationCall) -> AsyncIterator[Chunk]:
        self.calls.append(call)
        assert isinstance(call.input, Chat)
        mode = call.input.messages[0].content
        if mode == "busy":
            raise OllamaError("rate limit exceeded", 429)
        count = 1000 if mode == "forever" else 3
        try:
            for i in range(count):
                await asyncio.sleep(0.01)
                yield Content(f"w{i} ")
            if mode == "fail":
                raise InternalError("an error was encountered while running the model: boom")
            yield Done("stop", Stats(prompt_tokens=6, cached_tokens=2, prompt_eval_count=4, prompt_eval_duration=0.1,
                                     eval_count=count, eval_duration=0.2, load_duration=0.0))
        finally:
            self.closed.set()

    async def render(self, call: GenerationCall) -> Rendered:
        return Rendered("rendered", 0)

    async def embed(self, call: EmbedCall) -> Embeddings:
        return Embeddings(((1.0, 0.0),) * len(call.inputs), 2, 0.0)

    async def load(self, model: StoredModel, keep_alive: float | None) -> None:
        return None

    async def unload(self, model: StoredModel) -> None:
        return None

    async def forget(self, name: ModelName) -> None:
        return None

    def status(self) -> list[RunnerStatus]:
        return []

    async def close(self) -> None:
        return None


def _store(root: Path) -> ModelStore:
    store = ModelStore(root)
    weights = store.blobs.write_bytes(b"weights")
    config = store.blobs.write_bytes(ConfigV2(model_format="gguf", capabilities=["completion"]).to_bytes())
    store.write_manifest(ModelName.parse("m"), Manifest(Layer(MediaType.CONFIG, config, 1), (Layer(MediaType.MODEL, weights, 7),)))
    return store


def run(tmp_path: Path, test: Callable[[Client, ScriptedEngine], Awaitable[None]]) -> None:
    async def main() -> None:
        engine = ScriptedEngine()
        app = make_app(Settings(models=tmp_path), store=_store(tmp_path), engine=engine)
        async with TestClient(TestServer(app)) as client:
            await test(client, engine)

    asyncio.run(main())


def body(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


def test_non_stream_translates_both_ways(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        r = await client.post("/v1/chat/completions", json=body("hi", max_tokens=7))
        assert r.status == 200 and r.content_type == "application/json"
        done = await r.json()
        [call] = engine.calls
        assert call.model.name.display_shortest == "m:latest" and isinstance(call.input, Chat)
        assert [(m.role, m.content) for m in call.input.messages] == [("user", "hi")]
        opts = call.options
        assert (opts.num_predict, opts.temperature, opts.top_p) == (7, 1.0, 1.0)
        assert done["choices"][0]["message"] == {"role": "assistant", "content": "w0 w1 w2 "}
        assert done["choices"][0]["finish_reason"] == "stop"
        assert done["usage"] == {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9,
                                 "prompt_tokens_details": {"cached_tokens": 2}}

    run(tmp_path, check)


def test_stream_is_sse(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        r = await client.post("/v1/chat/completions", json=body("hi", stream=True, stream_options={"include_usage": True}))
        assert r.status == 200 and r.content_type == "text/event-stream"
        frames = [f[len("data: "):] for f in (await r.text()).split("\n\n") if f]
        assert frames[-1] == "[DONE]"
        chunks = [json.loads(f) for f in frames[:-1]]
        assert [c["choices"][0]["delta"] for c in chunks[:4]] == [
            {"role": "assistant", "content": "w0 "}, {"content": "w1 "}, {"content": "w2 "}, {}]
        assert chunks[3]["choices"][0]["finish_reason"] == "stop"
        assert chunks[4]["choices"] == [] and chunks[4]["usage"]["total_tokens"] == 9
        assert len({c["created"] for c in chunks}) == 1

    run(tmp_path, check)


@pytest.mark.parametrize("stream", [False, True])
def test_errors_keep_their_status(tmp_path: Path, stream: bool) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        for request, status, kind, message in [
            ({**body("hi"), "model": "ghost"}, 404, "not_found_error", "model 'ghost' not found"),
            (body("busy"), 429, "api_error", "rate limit exceeded"),
            ({"model": "m", "messages": []}, 400, "invalid_request_error", "[] is too short - 'messages'"),
        ]:
            r = await client.post("/v1/chat/completions", json={**request, "stream": stream})
            assert r.status == status
            assert await r.json() == {"error": {"message": message, "type": kind, "param": None, "code": None}}

    run(tmp_path, check)


def test_error_after_stream_began_is_an_error_frame(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        r = await client.post("/v1/chat/completions", json=body("fail", stream=True))
        frames = [json.loads(f[len("data: "):]) for f in (await r.text()).split("\n\n") if f]
        assert r.status == 200 and len(frames) == 4
        assert frames[-1] == {"error": {"message": "an error was encountered while running the model: boom", "type": "api_error",
                                        "param": None, "code": None}}

    run(tmp_path, check)


def test_client_going_away_stops_the_generation(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        r = await client.post("/v1/chat/completions", json=body("forever", stream=True))
        assert (await r.content.readline()).startswith(b"data: ")
        r.close()
        await asyncio.wait_for(engine.closed.wait(), 10)

    run(tmp_path, check)


def test_native_and_v1_read_the_same_chunks(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        r = await client.post("/api/chat", json={**body("hi"), "stream": False})
        native = await r.json()
        assert native["message"] == {"role": "assistant", "content": "w0 w1 w2 "}
        assert native["prompt_eval_count"] == 4 and native["eval_count"] == 3 and native["done_reason"] == "stop"
        r = await client.post("/v1/embeddings", json={"model": "m", "input": ["a", "b"]})
        assert [d["embedding"] for d in (await r.json())["data"]] == [[1.0, 0.0], [1.0, 0.0]]

    run(tmp_path, check)
