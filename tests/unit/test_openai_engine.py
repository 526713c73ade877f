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
    Completion,
    Content,
    DetokenizeCall,
    Done,
    EmbedCall,
    Embeddings,
    GenerationCall,
    Prompt,
    Rendered,
    RunnerStatus,
    Stats,
    TokenizeCall,
    Tokenized,
    TokenizerInfo,
    TokenLogprob,
)
from ollama_torch.errors import InternalError, OllamaError
from ollama_torch.names import ModelName
from ollama_torch.server import make_app
from ollama_torch.settings import Settings
from ollama_torch.store import ConfigV2, Layer, Manifest, MediaType, ModelStore, StoredModel

Client = TestClient[web.Request, web.Application]


class ScriptedEngine:
    """An engine whose generation is chosen by the first message's content (or the prompt: a token-id prompt
    is ``tokens``); an echo sends the prompt back first, "scored" when asked."""

    def __init__(self) -> None:
        self.calls: list[GenerationCall] = []
        self.closed = asyncio.Event()
        self.running = 0
        self.most_running = 0  # generations in progress at once

    async def generate(self, call: GenerationCall) -> AsyncIterator[Chunk]:
        self.calls.append(call)
        if isinstance(call.input, Completion):
            mode = call.input.prompt or f"tokens{list(call.input.tokens)}"
        else:
            mode = call.input.messages[0].content
        if mode == "busy":
            raise OllamaError("rate limit exceeded", 429)
        count = 1000 if mode == "forever" else 3
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if call.echo:
                scored = (TokenLogprob(mode[1:], -1.0, top=(TokenLogprob("x", -0.5),)),) if call.prompt_logprobs else ()
                yield Prompt(mode, mode[0] if call.prompt_logprobs else "", scored)
            for i in range(count):
                await asyncio.sleep(0.01)
                yield Content(f"w{i} ")
            if mode == "fail":
                raise InternalError("an error was encountered while running the model: boom")
            yield Done("stop", Stats(prompt_tokens=6, cached_tokens=2, prompt_eval_count=4, prompt_eval_duration=0.1,
                                     eval_count=count, eval_duration=0.2, load_duration=0.0))
        finally:
            self.running -= 1
            self.closed.set()

    async def render(self, call: GenerationCall) -> Rendered:
        return Rendered("rendered", 0)

    async def embed(self, call: EmbedCall) -> Embeddings:
        return Embeddings(((1.0, 0.0),) * len(call.inputs), 2, 0.0)

    async def tokenize(self, call: TokenizeCall) -> Tokenized:
        ids = tuple(ord(c) for c in call.text)
        return Tokenized(((1,) if call.add_special_tokens else ()) + ids, 64, tuple(call.text) if call.pieces else ())

    async def detokenize(self, call: DetokenizeCall) -> str:
        return "".join(chr(t) for t in call.tokens)

    async def tokenizer_info(self, model: StoredModel) -> TokenizerInfo:
        return TokenizerInfo("ScriptedTokenizer", "<s>", "</s>", None, None, True, 64, "{{ messages }}")

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


# -- /v1/completions: OpenAI's four prompt forms, several choices, echo --------------------------------------
def _sse(text: str) -> list[Any]:
    frames = [f[len("data: "):] for f in text.split("\n\n") if f]
    assert frames[-1] == "[DONE]"
    return [json.loads(f) for f in frames[:-1]]


def test_completions_of_several_prompts_run_together(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        r = await client.post("/v1/completions", json={"model": "m", "prompt": ["one", "two", "three"], "max_tokens": 3})
        done = await r.json()
        assert r.status == 200 and engine.most_running == 3  # submitted at once: the engine batches them
        assert [(c["index"], c["text"]) for c in done["choices"]] == [(0, "w0 w1 w2 "), (1, "w0 w1 w2 "), (2, "w0 w1 w2 ")]
        assert [c.input.prompt for c in engine.calls if isinstance(c.input, Completion)] == ["one", "two", "three"]
        assert not any(c.input.raw for c in engine.calls if isinstance(c.input, Completion))  # strings keep the template
        assert done["usage"] == {"prompt_tokens": 18, "completion_tokens": 9, "total_tokens": 27, "prompt_tokens_details": {"cached_tokens": 6}}

    run(tmp_path, check)


def test_completions_of_token_ids_are_raw(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        r = await client.post("/v1/completions", json={"model": "m", "prompt": [[5, 6], [7]], "stream": True})
        chunks = _sse(await r.text())
        assert r.status == 200 and sorted({c["choices"][0]["index"] for c in chunks}) == [0, 1]
        inputs = [c.input for c in engine.calls]
        assert [(i.tokens, i.raw, i.prompt) for i in inputs if isinstance(i, Completion)] == [((5, 6), True, ""), ((7,), True, "")]
        r = await client.post("/v1/completions", json={"model": "m", "prompt": [1, 2, 3], "max_tokens": 1})
        assert [c["index"] for c in (await r.json())["choices"]] == [0]
        assert isinstance(engine.calls[-1].input, Completion) and engine.calls[-1].input.tokens == (1, 2, 3)

    run(tmp_path, check)


@pytest.mark.parametrize("stream", [False, True])
def test_completions_echo(tmp_path: Path, stream: bool) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        r = await client.post("/v1/completions", json={"model": "m", "prompt": "abc", "echo": True, "logprobs": 1, "stream": stream})
        assert r.status == 200
        [call] = engine.calls
        assert call.echo and call.prompt_logprobs and not call.truncate and isinstance(call.input, Completion) and call.input.raw
        if stream:
            first = _sse(await r.text())[0]["choices"][0]
        else:
            first = (await r.json())["choices"][0]
            assert first["text"] == "abcw0 w1 w2 "
        assert first["text"].startswith("abc")
        assert first["logprobs"]["tokens"][:2] == ["a", "bc"] and first["logprobs"]["token_logprobs"][:2] == [None, -1.0]
        assert first["logprobs"]["top_logprobs"][:2] == [None, {"x": -0.5}] and first["logprobs"]["text_offset"][:2] == [0, 1]
        # echo without logprobs: the text only
        r = await client.post("/v1/completions", json={"model": "m", "prompt": "abc", "echo": True})
        assert not engine.calls[-1].prompt_logprobs and (await r.json())["choices"][0]["text"] == "abcw0 w1 w2 "

    run(tmp_path, check)


@pytest.mark.parametrize("stream", [False, True])
def test_completions_error_in_one_prompt_answers_the_request(tmp_path: Path, stream: bool) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        r = await client.post("/v1/completions", json={"model": "m", "prompt": ["forever", "busy"], "stream": stream})
        assert r.status == 429 and (await r.json())["error"]["message"] == "rate limit exceeded"
        await asyncio.wait_for(engine.closed.wait(), 10)  # the other prompt's generation was stopped
        assert engine.running == 0
        r = await client.post("/v1/completions", json={"model": "m", "prompt": ["a", "fail"], "stream": stream})
        if stream:
            frames = [json.loads(f[len("data: "):]) for f in (await r.text()).split("\n\n") if f]
            assert r.status == 200 and "error" in frames[-1]
        else:
            assert r.status == 500 and "boom" in (await r.json())["error"]["message"]

    run(tmp_path, check)
