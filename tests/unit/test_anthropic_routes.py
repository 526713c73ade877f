"""``/v1/messages`` and ``/v1/messages/count_tokens`` over a scripted engine (the seam in ``engine/api.py``):
the request reaches the engine as a typed call, the chunks come back as Anthropic's events, errors keep
their status in Anthropic's shape, before and after the stream began. ``tests/e2e/test_anthropic.py``
drives the same routes with the real SDK over the real engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ollama_torch.engine.api import Chat

from .scripted import Client, ScriptedEngine, serve, sse_events


def anthropic(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": content}], **extra}


def test_messages_non_stream(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        r = await client.post("/v1/messages", json=anthropic("hi", system="Be kind.", temperature=0.3, top_k=7, top_p=0.5,
                                                               stop_sequences=["END"]))
        assert r.status == 200 and r.content_type == "application/json"
        message = await r.json()
        [call] = engine.calls
        assert isinstance(call.input, Chat) and [(m.role, m.content) for m in call.input.messages] == [("system", "Be kind."), ("user", "hi")]
        opts = call.options
        assert (opts.num_predict, opts.temperature, opts.top_k, opts.top_p, opts.stop) == (16, 0.3, 7, 0.5, ("END",))
        assert message["id"].startswith("msg_") and message["model"] == "m" and message["role"] == "assistant"
        assert message["content"] == [{"type": "text", "text": "Hello there"}]
        assert (message["stop_reason"], message["stop_sequence"]) == ("end_turn", None)
        assert message["usage"] == {"input_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 5, "output_tokens": 3}

    serve(tmp_path, check)


def test_messages_stream_and_stop_sequence(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        r = await client.post("/v1/messages", json=anthropic("stop", stream=True, stop_sequences=["END"]))
        assert r.status == 200 and r.content_type == "text/event-stream"
        events = sse_events(await r.text())
        assert [e for e, _ in events] == ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
                                          "message_delta", "message_stop"]
        assert events[4][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}

    serve(tmp_path, check)


def test_messages_thinking_relaxed_and_tools(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        # a model that cannot think is not refused (Ollama's relax_thinking): think is dropped
        r = await client.post("/v1/messages", json=anthropic("think", thinking={"type": "enabled", "budget_tokens": 1024}))
        assert r.status == 200 and engine.calls[-1].think is None
        r = await client.post("/v1/messages", json={**anthropic("think", thinking={"type": "enabled"}), "model": "thinker"})
        message = await r.json()
        assert engine.calls[-1].think is True
        assert [b["type"] for b in message["content"]] == ["thinking", "text"] and message["content"][0]["thinking"] == "hmm ok"
        tool = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
        r = await client.post("/v1/messages", json=anthropic("tool", tools=[tool]))
        message = await r.json()
        assert isinstance(engine.calls[-1].input, Chat) and engine.calls[-1].input.tools[0]["function"]["name"] == "get_weather"
        assert not engine.calls[-1].require_tool_call
        r = await client.post("/v1/messages", json=anthropic("tool", tools=[tool], tool_choice={"type": "any"}))
        assert r.status == 200 and engine.calls[-1].require_tool_call
        assert message["stop_reason"] == "tool_use" and message["content"][1] == {
            "type": "tool_use", "id": "call_abc12345", "name": "get_weather", "input": {"city": "Paris"}}

    serve(tmp_path, check)


def test_messages_errors_in_anthropic_shape(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        cases = [
            (anthropic("hi", model="nope"), 404, "not_found_error", "model 'nope' not found"),
            ({"model": "m", "messages": []}, 400, "invalid_request_error", "max_tokens is required and must be positive"),
            (anthropic("hi", max_tokens=-1), 400, "invalid_request_error", "max_tokens is required and must be positive"),
            (anthropic("busy"), 503, "overloaded_error", "server busy, please try again.  maximum pending requests exceeded"),
            (anthropic("hi", temperature=-1), 400, "invalid_request_error", "`temperature` must be a non-negative number, got -1.0"),
        ]
        for body, status, kind, message in cases:
            r = await client.post("/v1/messages", json=body)
            error = await r.json()
            assert (r.status, error["type"], error["error"]) == (status, "error", {"type": kind, "message": message}), error
        r = await client.post("/v1/messages", data=b"")
        assert r.status == 400 and (await r.json())["error"]["message"] == "EOF"
        # after the first chunk: an error event, status 200
        r = await client.post("/v1/messages", json=anthropic("fail", stream=True))
        events = sse_events(await r.text())
        assert r.status == 200 and events[-1] == ("error", {"type": "error", "error": {
            "type": "api_error", "message": "an error was encountered while running the model: boom"}})
        r = await client.post("/v1/messages", json=anthropic("fail"))
        assert r.status == 500 and (await r.json())["error"]["type"] == "api_error"

    serve(tmp_path, check)


def test_count_tokens_renders_without_fitting(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "system": "s", "tools": [{"name": "f"}]}
        r = await client.post("/v1/messages/count_tokens", json=body)
        assert r.status == 200 and await r.json() == {"input_tokens": 42}
        [call] = engine.rendered
        assert call.options.num_ctx >= 1 << 40 and isinstance(call.input, Chat) and len(call.input.tools) == 1
        r = await client.post("/v1/messages/count_tokens", json={"model": "m"})
        assert r.status == 400 and (await r.json())["error"]["message"] == "messages is required"

    serve(tmp_path, check)
