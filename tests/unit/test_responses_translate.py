"""The Responses translators, table-tested: requests -> native ``/api/chat`` bodies (the cases of Ollama's
``openai/responses_test.go``, plus what Ollama leaves out), and the engine's typed chunks -> the Responses
events and response object."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from ollama_torch.engine.api import Content, Done, Stats, Thinking, ToolCall, ToolCalls
from ollama_torch.errors import BadRequest
from ollama_torch.server.openai.translate_request import decode
from ollama_torch.server.responses import translate_request as req
from ollama_torch.server.responses import translate_response as resp

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather", "strict": None,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
NATIVE_WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                                   "parameters": WEATHER["parameters"]}}


def translate(body: dict[str, Any]) -> req.Translated:
    return req.responses_request(decode(json.dumps({"model": "m", **body}).encode(), req.STRUCT))


def messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(translate(body).native["messages"])


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def call(call_id: str, name: str = "get_weather", arguments: str = '{"city":"Paris"}') -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def test_string_input_instructions_and_options() -> None:
    translated = translate({"input": "Hi", "instructions": "Be brief.", "max_output_tokens": 12, "top_p": 0.5})
    assert translated.native == {
        "model": "m", "stream": False, "options": {"temperature": 1.0, "top_p": 0.5, "num_predict": 12},
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    }
    assert translate({"input": "Hi", "temperature": 0}).native["options"] == {"temperature": 0}


@pytest.mark.parametrize(
    ("item", "native"),
    [
        ({"role": "user", "content": "shorthand"}, {"role": "user", "content": "shorthand"}),
        ({"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "a"}, {"type": "output_text", "text": "b"}]},
         {"role": "developer", "content": "ab"}),
        ({"type": "message", "role": "user", "content": [{"type": "input_image", "detail": "auto", "image_url": f"data:image/png;base64,{PNG}"},
                                                         {"type": "input_image", "detail": "auto", "file_id": "file_1"}]},
         {"role": "user", "content": "", "images": [PNG]}),
    ],
)
def test_messages(item: dict[str, Any], native: dict[str, Any]) -> None:
    assert messages({"input": [item]}) == [native]


def test_function_call_round_trip() -> None:
    """Ollama's merge rules: calls join the assistant message before them; an assistant message replayed
    between a call and its output stays with the call; outputs become tool messages (naming their tool)."""
    got = messages({"input": [
        user("Find Ollama."),
        {"type": "web_search_call", "id": "ws", "status": "completed", "action": {"type": "search", "query": "Ollama"}},
        call("call_1", "exec_command", '{"cmd":"pwd"}'),
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Inspecting."}]},
        {"type": "function_call_output", "call_id": "call_1", "output": "/tmp"},
        {"type": "message", "role": "assistant", "content": "Done:"},
        call("call_2"), call("call_3", "get_time", ""),
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "sunny"}]},
    ]})
    assert got == [
        {"role": "user", "content": "Find Ollama."},
        {"role": "assistant", "content": "Inspecting.",
         "tool_calls": [{"id": "call_1", "function": {"name": "exec_command", "arguments": {"cmd": "pwd"}}}]},
        {"role": "tool", "content": "/tmp", "tool_name": "exec_command", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "Done:", "tool_calls": [
            {"id": "call_2", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"id": "call_3", "function": {"name": "get_time", "arguments": {}}}]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather", "tool_call_id": "call_2"},
    ]


def test_reasoning_items() -> None:
    reasoning = {"type": "reasoning", "id": "rs_1", "encrypted_content": "2+2=4", "summary": [{"type": "summary_text", "text": "math"}]}
    got = messages({"input": [user("2+2?"), reasoning, {"type": "message", "role": "assistant", "content": "4"}, user("x3?"),
                              {"type": "reasoning", "summary": [{"type": "summary_text", "text": "call it"}]}, call("c")]})
    assert got[1] == {"role": "assistant", "content": "4", "thinking": "2+2=4"}
    assert got[3]["thinking"] == "call it" and got[3]["tool_calls"][0]["id"] == "c"
    assert messages({"input": [user("q"), reasoning]})[-1] == {"role": "assistant", "content": "", "thinking": "2+2=4"}


def test_tools_namespace_and_choice() -> None:
    namespace = {"type": "namespace", "name": "fs", "tools": [{"type": "function", "name": "read", "parameters": {}},
                                                              {"type": "function", "name": "fs.write", "parameters": {}}]}
    native = translate({"input": "x", "tools": [WEATHER, namespace, {"type": "web_search"}]}).native
    assert [t["function"]["name"] for t in native["tools"]] == ["get_weather", "fs.read", "fs.write"]
    assert native["tools"][0] == NATIVE_WEATHER
    none = translate({"input": "x", "tools": [WEATHER], "tool_choice": "none"})
    assert "tools" not in none.native and not none.require_tool_call
    only = translate({"input": "x", "tools": [WEATHER, namespace], "tool_choice": {"type": "function", "name": "fs.read"}})
    assert [t["function"]["name"] for t in only.native["tools"]] == ["fs.read"] and only.require_tool_call
    assert translate({"input": "x", "tools": [WEATHER], "tool_choice": "required"}).require_tool_call
    assert not translate({"input": "x", "tools": [WEATHER], "tool_choice": "auto"}).require_tool_call


@pytest.mark.parametrize(
    ("text", "fmt"),
    [({"format": {"type": "json_schema", "name": "p", "schema": {"type": "object"}, "strict": True}}, {"type": "object"}),
     ({"format": {"type": "json_object"}}, "json"), ({"format": {"type": "text"}}, None), ({}, None)],
)
def test_text_format(text: dict[str, Any], fmt: Any) -> None:
    assert translate({"input": "x", "text": text}).native.get("format") == fmt


def test_reasoning_effort_is_think() -> None:
    assert translate({"input": "x", "reasoning": {"effort": "high"}}).native["think"] == "high"
    assert translate({"input": "x", "reasoning": {"effort": "none"}}).native["think"] is False


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": 5}, "input must be a string or array: json: cannot unmarshal number into Go value of type []json.RawMessage"),
        ({"input": [{"content": "x"}]}, "input[0]: input item missing required 'type' field"),
        ({"input": [user("a"), {"type": "bogus"}]}, 'input[1]: unknown input item type: "bogus"'),
        ({"input": [{"role": "user", "content": [{"type": "audio"}]}]}, "input[0]: content[0]: unknown content type: audio"),
        ({"input": [{"role": "user", "content": 3}]}, "input[0]: content must be a string or array: "),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "file inputs are not currently supported"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
         "image URLs are not currently supported, please use base64 encoded data instead"),
        ({"input": [call("c", arguments="{")]}, "failed to parse function call arguments: "),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "nope"}]}]}, "input[0]: output[0]: unknown content type: nope"),
        ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id is not supported: responses are not stored"),
        ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "f"}}, 'tool_choice names the function "f"'),
        ({"input": "x", "temperature": "hot"}, "json: cannot unmarshal string into Go struct field ResponsesRequest.temperature of type float64"),
        ({"input": "x", "max_output_tokens": "5"}, "json: cannot unmarshal string into Go struct field ResponsesRequest.max_output_tokens of type int"),
    ],
)
def test_request_errors(body: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as info:
        translate(body)
    assert info.value.message.startswith(message), info.value.message


# -- chunks -> events -----------------------------------------------------------------------------------------
def done(reason: str = "stop") -> Done:
    return Done(reason, Stats(prompt_tokens=10, cached_tokens=4, prompt_eval_count=6, prompt_eval_duration=0.1,
                              eval_count=5, eval_duration=0.2, load_duration=0.0))


def run(chunks: list[Any], request: dict[str, Any] | None = None) -> tuple[list[resp.Event], resp.ResponseStream]:
    stream = resp.ResponseStream("resp_1", "m", request or {})
    return [e for c in chunks for e in stream.feed(c)], stream


def test_text_only_sequence() -> None:
    events, stream = run([Content("Hel"), Content("lo"), done()])
    assert [name for name, _ in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert all(name == data["type"] for name, data in events)
    final = events[-1][1]["response"]
    assert final is stream.final and final["status"] == "completed" and final["completed_at"] is not None
    [message] = final["output"]
    assert message["type"] == "message" and message["status"] == "completed" and message["content"] == [
        {"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}]
    assert events[2][1]["item"]["id"] == message["id"] and events[4][1]["item_id"] == message["id"]
    assert final["usage"] == {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 5,
                              "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15}


def test_reasoning_text_and_calls_get_their_own_items() -> None:
    calls = ToolCalls((ToolCall("get_weather", {"city": "Paris"}, "call_a", 0), ToolCall("get_time", {}, "call_b", 1)))
    events, stream = run([Thinking("hmm"), Content("Checking."), calls, Content("More."), done()])
    assert stream.final is not None
    output = stream.final["output"]
    assert [item["type"] for item in output] == ["reasoning", "message", "function_call", "function_call", "message"]
    assert output[0]["summary"] == [{"type": "summary_text", "text": "hmm"}] and output[0]["encrypted_content"] == "hmm"
    assert output[2] == {"id": output[2]["id"], "type": "function_call", "status": "completed", "call_id": "call_a",
                         "name": "get_weather", "arguments": '{"city":"Paris"}'}
    added = [data for name, data in events if name == "response.output_item.added"]
    finished = [data for name, data in events if name == "response.output_item.done"]
    assert [d["output_index"] for d in added] == [d["output_index"] for d in finished] == [0, 1, 2, 3, 4]
    assert [d["item"] for d in finished] == output
    names = [name for name, _ in events]
    assert names[2:5] == ["response.output_item.added", "response.reasoning_summary_part.added", "response.reasoning_summary_text.delta"]


def test_max_output_tokens_is_incomplete() -> None:
    events, stream = run([Content("cut"), done("length")], {"max_output_tokens": 1})
    assert events[-1][0] == "response.incomplete"
    assert stream.final is not None and stream.final["status"] == "incomplete"
    assert stream.final["incomplete_details"] == {"reason": "max_output_tokens"} and stream.final["max_output_tokens"] == 1
    assert stream.final["output"][0]["status"] == "incomplete"


def test_request_is_echoed() -> None:
    request = {"instructions": "Be brief.", "tools": [WEATHER], "tool_choice": "none", "temperature": 0.2,
               "text": {"format": {"type": "json_schema", "name": "p", "schema": {"type": "object"}}},
               "reasoning": {"effort": "low"}, "truncation": "auto", "background": False}
    _, stream = run([done()], request)
    final = stream.final
    assert final is not None
    assert (final["instructions"], final["tools"], final["tool_choice"], final["temperature"], final["top_p"]) == (
        "Be brief.", [WEATHER], "none", 0.2, 1.0)
    assert final["text"] == {"format": request["text"]["format"]} and final["reasoning"] == {"effort": "low", "summary": None}
    assert (final["truncation"], final["store"], final["previous_response_id"]) == ("auto", False, None)
    assert final["output"] == []


def test_an_empty_answer_is_an_empty_message_when_not_streamed() -> None:
    """Nothing said and nothing called (a model that stops at once): the stream has no item, as Ollama's; the
    ``stream: false`` answer has one empty message, as Ollama's ``ToResponse`` gives."""
    events, stream = run([done("length")], {"max_output_tokens": 1})
    assert stream.final is not None and stream.final["output"] == []
    assert [name for name, _ in events] == ["response.created", "response.in_progress", "response.incomplete"]
    [message] = stream.answer()["output"]
    assert message["type"] == "message" and message["status"] == "incomplete" and message["role"] == "assistant"
    assert message["content"] == [{"type": "output_text", "text": "", "annotations": [], "logprobs": []}]
    _, thought = run([Thinking("hmm"), done()])
    assert [item["type"] for item in thought.answer()["output"]] == ["reasoning", "message"]
    _, called = run([ToolCalls((ToolCall("f", {}, "call_a", 0),)), done()])
    assert [item["type"] for item in called.answer()["output"]] == ["function_call"]
    _, said = run([Content("hi"), done()])
    assert said.answer() is said.final


def test_failure_after_the_start() -> None:
    stream = resp.ResponseStream("resp_1", "m", {})
    events = stream.feed(Content("partial")) + stream.failed("boom")
    assert events[-1][0] == "response.failed"
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"] == {"code": "server_error", "message": "boom"}
    assert failed["output"][0]["content"][0]["text"] == "partial"
