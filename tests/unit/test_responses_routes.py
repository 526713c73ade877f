"""``/v1/responses`` over a scripted engine (the seam in ``engine/api.py``): the request reaches the engine
as a typed call, the chunks come back as the Responses events, errors keep their status in the OpenAI
envelope, or end the stream with ``response.failed``. ``tests/e2e/test_responses.py`` drives the same
route with the real SDK over the real engine."""

from __future__ import annotations

from pathlib import Path

from .scripted import Client, ScriptedEngine, serve, sse_events


def test_responses_non_stream_and_stream(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        r = await client.post("/v1/responses", json={"model": "m", "input": "hi", "instructions": "Be brief.", "max_output_tokens": 9})
        assert r.status == 200
        response = await r.json()
        assert engine.calls[-1].options.num_predict == 9 and engine.calls[-1].options.temperature == 1.0
        assert response["object"] == "response" and response["status"] == "completed" and response["id"].startswith("resp_")
        assert response["output"][0]["content"][0]["text"] == "Hello there" and response["instructions"] == "Be brief."
        r = await client.post("/v1/responses", json={"model": "m", "input": "tool", "stream": True})
        events = sse_events(await r.text())
        assert events[0][0] == "response.created" and events[-1][0] == "response.completed"
        assert [i["type"] for i in events[-1][1]["response"]["output"]] == ["message", "function_call"]
        r = await client.post("/v1/responses", json={"model": "m", "input": "long"})
        assert (await r.json())["status"] == "incomplete"
        tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
        r = await client.post("/v1/responses", json={"model": "m", "input": "tool", "tools": [tool], "tool_choice": "required"})
        assert r.status == 200 and engine.calls[-1].require_tool_call

    serve(tmp_path, check)


def test_responses_errors_in_openai_envelope(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        cases = [
            ({"model": "nope", "input": "hi"}, 404, "model 'nope' not found"),
            ({"model": "m"}, 400, "input is required"),
            ({"model": "m", "input": "hi", "previous_response_id": "resp_1"}, 400,
             "previous_response_id is not supported: responses are not stored, send the whole conversation in input"),
            ({"input": "hi"}, 400, "model is required"),
        ]
        for body, status, message in cases:
            r = await client.post("/v1/responses", json=body)
            error = (await r.json())["error"]
            assert (r.status, error["message"]) == (status, message), error
        r = await client.post("/v1/responses", json={"model": "m", "input": "fail", "stream": True})
        events = sse_events(await r.text())
        assert r.status == 200 and events[-1][0] == "response.failed"
        assert events[-1][1]["response"]["error"]["message"] == "an error was encountered while running the model: boom"

    serve(tmp_path, check)
