"""A scripted engine behind the real application (``make_app``), for HTTP-level tests of the translators
(``/v1/messages``, ``/v1/responses``), the API key and ``/metrics`` without a model: each generation plays
the chunks of the script that the last user message names."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

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
    Thinking,
    ToolCall,
    ToolCalls,
)
from ollama_torch.errors import InternalError, OllamaError
from ollama_torch.names import ModelName
from ollama_torch.server import make_app
from ollama_torch.settings import Settings
from ollama_torch.store import ConfigV2, Layer, Manifest, MediaType, ModelStore, StoredModel

Client = TestClient[web.Request, web.Application]
STATS = Stats(prompt_tokens=12, cached_tokens=5, prompt_eval_count=7, prompt_eval_duration=0.1, eval_count=3,
              eval_duration=0.2, load_duration=0.0)
CALL = ToolCall("get_weather", {"city": "Paris"}, "call_abc12345", 0)
SCRIPTS: dict[str, list[Chunk]] = {
    "hi": [Content("Hello"), Content(" there"), Done("stop", STATS)],
    "think": [Thinking("hmm "), Thinking("ok"), Content("Answer."), Done("stop", STATS)],
    "tool": [Content("Checking."), ToolCalls((CALL,)), Done("stop", STATS)],
    "long": [Content("a"), Content("b"), Done("length", STATS)],
    "stop": [Content("x"), Done("stop", STATS, stop_sequence="END")],
}


class ScriptedEngine:
    def __init__(self) -> None:
        self.calls: list[GenerationCall] = []
        self.rendered: list[GenerationCall] = []
        self.statuses: list[RunnerStatus] = []

    async def generate(self, call: GenerationCall) -> AsyncIterator[Chunk]:
        self.calls.append(call)
        assert isinstance(call.input, Chat)
        mode = next((m.content for m in reversed(call.input.messages) if m.role == "user"), "hi")
        if mode == "busy":
            raise OllamaError("server busy, please try again.  maximum pending requests exceeded", 503)
        for chunk in SCRIPTS.get(mode, SCRIPTS["hi"] if mode != "fail" else SCRIPTS["hi"][:2]):
            await asyncio.sleep(0)
            yield chunk
        if mode == "fail":
            raise InternalError("an error was encountered while running the model: boom")

    async def render(self, call: GenerationCall) -> Rendered:
        self.rendered.append(call)
        return Rendered("rendered", 0, 42)

    async def embed(self, call: EmbedCall) -> Embeddings:
        return Embeddings(((1.0, 0.0),) * len(call.inputs), 4, 0.0)

    async def load(self, model: StoredModel, keep_alive: float | None) -> None:
        return None

    async def unload(self, model: StoredModel) -> None:
        return None

    async def forget(self, name: ModelName) -> None:
        return None

    def status(self) -> list[RunnerStatus]:
        return list(self.statuses)

    async def close(self) -> None:
        return None


def scripted_store(root: Path, capabilities: tuple[str, ...] = ("completion", "tools")) -> ModelStore:
    """A store with the model ``m`` (and ``thinker``, which can think); no weights are ever loaded."""
    store = ModelStore(root)
    weights = store.blobs.write_bytes(b"weights")
    for name, caps in (("m", list(capabilities)), ("thinker", [*capabilities, "thinking"])):
        config = store.blobs.write_bytes(ConfigV2(model_format="gguf", capabilities=caps).to_bytes())
        store.write_manifest(ModelName.parse(name), Manifest(Layer(MediaType.CONFIG, config, 1), (Layer(MediaType.MODEL, weights, 7),)))
    return store


def serve(tmp_path: Path, test: Callable[[Client, ScriptedEngine], Awaitable[None]], **settings: Any) -> None:
    """Run ``test`` against ``make_app`` over a scripted engine (``settings``: extra ``Settings`` fields)."""

    async def main() -> None:
        engine = ScriptedEngine()
        app = make_app(Settings(models=tmp_path, **settings), store=scripted_store(tmp_path), engine=engine)
        async with TestClient(TestServer(app)) as client:
            await test(client, engine)

    asyncio.run(main())


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """An SSE body as (event, data) pairs; each event's name is its data's ``type``."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"]
        events.append((lines["event"], data))
    return events
