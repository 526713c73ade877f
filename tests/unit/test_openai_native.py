"""The ``/v1`` routes around a scripted native ``/api/chat`` in-process: the translated body reaches the
native handler, its NDJSON stream comes back as SSE while it is produced, its errors keep their status,
and a client that goes away mid-stream cancels the native handler."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ollama_torch.errors import InternalError, ModelNotFound
from ollama_torch.server.decode import read_json
from ollama_torch.server.openai import routes
from ollama_torch.server.streaming import json_response, respond


class ScriptedChat:
    """A native ``/api/chat`` whose behaviour is chosen by the first message's content."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.closed = asyncio.Event()

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        fields = await read_json(request, "ChatRequest")
        self.bodies.append(fields.data)
        mode = fields.data["messages"][0]["content"]
        if mode == "missing":
            raise ModelNotFound("ghost")
        if mode == "busy":
            return json_response({"error": "rate limit exceeded"}, status=429)
        count = 1000 if mode == "forever" else 3

        async def events() -> AsyncIterator[dict[str, Any]]:
            try:
                for i in range(count):
                    await asyncio.sleep(0.01)
                    yield {"model": "m", "created_at": "2023-11-14T22:13:20Z", "message": {"role": "assistant", "content": f"w{i} "}, "done": False}
                if mode == "fail":
                    raise InternalError("an error was encountered while running the model: boom")
                yield {"model": "m", "created_at": "2023-11-14T22:13:21Z", "message": {"role": "assistant", "content": ""}, "done": True,
                       "done_reason": "stop", "prompt_eval_count": 4, "eval_count": count}
            finally:
                self.closed.set()

        def fold(chunks: list[dict[str, Any]]) -> dict[str, Any]:
            return {**chunks[-1], "message": {"role": "assistant", "content": "".join(c["message"]["content"] for c in chunks)}}

        return await respond(request, events(), stream=fields.bool("stream", True), fold=fold)


def run(test: Callable[[TestClient[web.Request, web.Application], ScriptedChat], Awaitable[None]]) -> None:
    async def main() -> None:
        chat = ScriptedChat()
        app = web.Application()
        app.router.add_route("POST", "/api/chat", chat)
        routes.setup(app)
        async with TestClient(TestServer(app)) as client:
            await test(client, chat)

    asyncio.run(main())


def body(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


def test_non_stream_translates_both_ways() -> None:
    async def check(client: TestClient[web.Request, web.Application], chat: ScriptedChat) -> None:
        r = await client.post("/v1/chat/completions", json=body("hi", max_tokens=7))
        assert r.status == 200 and r.content_type == "application/json"
        done = await r.json()
        assert chat.bodies == [{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False,
                                "options": {"num_predict": 7, "temperature": 1.0, "top_p": 1.0}}]
        assert done["choices"][0]["message"] == {"role": "assistant", "content": "w0 w1 w2 "}
        assert done["choices"][0]["finish_reason"] == "stop" and done["created"] == 1700000001
        assert done["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}

    run(check)


def test_stream_is_sse() -> None:
    async def check(client: TestClient[web.Request, web.Application], chat: ScriptedChat) -> None:
        r = await client.post("/v1/chat/completions", json=body("hi", stream=True, stream_options={"include_usage": True}))
        assert r.status == 200 and r.content_type == "text/event-stream"
        frames = [f[len("data: "):] for f in (await r.text()).split("\n\n") if f]
        assert frames[-1] == "[DONE]"
        chunks = [json.loads(f) for f in frames[:-1]]
        assert [c["choices"][0]["delta"] for c in chunks[:4]] == [
            {"role": "assistant", "content": "w0 "}, {"content": "w1 "}, {"content": "w2 "}, {}]
        assert chunks[3]["choices"][0]["finish_reason"] == "stop"
        assert chunks[4]["choices"] == [] and chunks[4]["usage"]["total_tokens"] == 7
        assert {c["created"] for c in chunks} == {1700000000}

    run(check)


def test_errors_keep_their_status() -> None:
    async def check(client: TestClient[web.Request, web.Application], chat: ScriptedChat) -> None:
        for content, status, kind, message in [
            ("missing", 404, "not_found_error", "model 'ghost' not found"),
            ("busy", 429, "api_error", "rate limit exceeded"),
        ]:
            for stream in (False, True):
                r = await client.post("/v1/chat/completions", json=body(content, stream=stream))
                assert r.status == status
                assert await r.json() == {"error": {"message": message, "type": kind, "param": None, "code": None}}
        r = await client.post("/v1/chat/completions", json={"model": "m", "messages": []})
        assert r.status == 400 and (await r.json())["error"]["message"] == "[] is too short - 'messages'"
        r = await client.post("/v1/embeddings", json={"model": "m", "input": "x"})  # no native /api/embed here
        assert r.status == 404 and (await r.json())["error"]["type"] == "not_found_error"

    run(check)


def test_error_after_stream_began_is_an_error_frame() -> None:
    async def check(client: TestClient[web.Request, web.Application], chat: ScriptedChat) -> None:
        r = await client.post("/v1/chat/completions", json=body("fail", stream=True))
        frames = [json.loads(f[len("data: "):]) for f in (await r.text()).split("\n\n") if f]
        assert r.status == 200 and len(frames) == 4
        assert frames[-1] == {"error": {"message": "an error was encountered while running the model: boom", "type": "api_error",
                                        "param": None, "code": None}}

    run(check)


def test_client_going_away_cancels_the_native_handler() -> None:
    async def check(client: TestClient[web.Request, web.Application], chat: ScriptedChat) -> None:
        r = await client.post("/v1/chat/completions", json=body("forever", stream=True))
        assert (await r.content.readline()).startswith(b"data: ")
        r.close()
        await asyncio.wait_for(chat.closed.wait(), 10)

    run(check)
