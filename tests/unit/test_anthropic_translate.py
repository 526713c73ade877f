"""The Anthropic translators, table-tested: requests -> native ``/api/chat`` bodies (the cases of Ollama's
``middleware/anthropic_test.go`` and ``anthropic/anthropic_test.go``, plus what Ollama leaves out), and the
engine's typed chunks -> Anthropic's event sequence and message."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from ollama_torch.engine.api import (
    Content,
    Done,
    Logprobs,
    Stats,
    Thinking,
    TokenLogprob,
    ToolCall,
    ToolCalls,
)
from ollama_torch.errors import BadRequest
from ollama_torch.server.anthropic import translate_request as req
from ollama_torch.server.anthropic import translate_response as resp
from ollama_torch.server.openai.translate_request import decode

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
WEATHER = {"name": "get_weather", "description": "Get current weather",
           "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}
NATIVE_WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Get current weather",
                                                   "parameters": WEATHER["input_schema"]}}


def translate(body: dict[str, Any]) -> req.Translated:
    return req.messages_request(decode(json.dumps(body).encode(), req.MESSAGES, req.PACKAGE))


def base(**extra: Any) -> dict[str, Any]:
    return {"model": "test-model", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hello"}], **extra}


HELLO = [{"role": "user", "content": "Hello"}]


@pytest.mark.parametrize(
    ("body", "native"),
    [
        pytest.param(base(), {"messages": HELLO, "options": {"num_predict": 1024}}, id="basic"),
        pytest.param(base(system="You are helpful."),
                     {"messages": [{"role": "system", "content": "You are helpful."}, *HELLO], "options": {"num_predict": 1024}},
                     id="system"),
        pytest.param(base(system=[{"type": "text", "text": "A."}, {"type": "image"}, {"type": "text", "text": "B."}]),
                     {"messages": [{"role": "system", "content": "A.B."}, *HELLO], "options": {"num_predict": 1024}},
                     id="system blocks"),
        pytest.param(base(max_tokens=2048, temperature=0.7, top_p=0.9, top_k=40, stop_sequences=["\n", "END"]),
                     {"messages": HELLO, "options": {"num_predict": 2048, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
                                                     "stop": ["\n", "END"]}},
                     id="sampling options"),
        pytest.param(base(tools=[WEATHER]), {"messages": HELLO, "options": {"num_predict": 1024}, "tools": [NATIVE_WEATHER]},
                     id="tools"),
        pytest.param(base(thinking={"type": "enabled", "budget_tokens": 1000}),
                     {"messages": HELLO, "options": {"num_predict": 1024}, "think": True}, id="thinking enabled"),
        pytest.param(base(thinking={"type": "disabled"}, output_config={"effort": "high"}),
                     {"messages": HELLO, "options": {"num_predict": 1024}, "think": False}, id="thinking disabled wins"),
        pytest.param(base(output_config={"effort": "xhigh"}),
                     {"messages": HELLO, "options": {"num_predict": 1024}, "think": "high"}, id="effort xhigh is high"),
        pytest.param(base(thinking={"type": "adaptive"}), {"messages": HELLO, "options": {"num_predict": 1024}},
                     id="adaptive is the model's default"),
        pytest.param(base(output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}}),
                     {"messages": HELLO, "options": {"num_predict": 1024}, "format": {"type": "object"}}, id="output format"),
    ],
)
def test_request(body: dict[str, Any], native: dict[str, Any]) -> None:
    translated = translate(body)
    assert translated.native == {"model": "test-model", "stream": False, **native}
    assert translated.model == "test-model" and not translated.stream


def test_tool_round_trip_messages() -> None:
    """A tool_use answered by a tool_result: the call on the assistant message, the result a tool message
    that names its tool (found from the call's id), before the user's text."""
    body = base(messages=[
        {"role": "user", "content": "What's the weather?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "call_123", "name": "get_weather", "input": {"location": "Paris"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_123", "content": [{"type": "text", "text": "Sunny, "}, {"type": "text", "text": "22°C"}]},
            {"type": "text", "text": "And tomorrow?"},
        ]},
    ])
    assert translate(body).native["messages"] == [
        {"role": "user", "content": "What's the weather?"},
        {"role": "assistant", "content": "Let me check.",
         "tool_calls": [{"id": "call_123", "function": {"name": "get_weather", "arguments": {"location": "Paris"}}}]},
        {"role": "tool", "content": "Sunny, 22°C", "tool_name": "get_weather", "tool_call_id": "call_123"},
        {"role": "user", "content": "And tomorrow?"},
    ]


def test_images_thinking_and_skipped_blocks() -> None:
    body = base(messages=[
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                                     {"type": "text", "text": "What is this?"}, {"type": "document", "source": {}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "x"},
                                          {"type": "redacted_thinking", "data": "..."}, {"type": "text", "text": "A PNG."}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "image", "source": {"type": "base64", "data": PNG}}]}]},
    ])
    assert translate(body).native["messages"] == [
        {"role": "user", "content": "What is this?", "images": [PNG]},
        {"role": "assistant", "content": "A PNG.", "thinking": "hmm"},
        {"role": "tool", "content": "", "images": [PNG], "tool_call_id": "t"},
    ]


@pytest.mark.parametrize(
    ("choice", "names", "required"),
    [({"type": "auto"}, ["get_weather", "get_time"], False), ({"type": "any"}, ["get_weather", "get_time"], True),
     ({"type": "tool", "name": "get_time"}, ["get_time"], True), ({"type": "none"}, [], False)],
)
def test_tool_choice(choice: dict[str, Any], names: list[str], required: bool) -> None:
    tools = [WEATHER, {"name": "get_time", "input_schema": {"type": "object"}}]
    translated = translate(base(tools=tools, tool_choice=choice))
    assert [t["function"]["name"] for t in translated.native.get("tools", [])] == names
    assert translated.require_tool_call is required
    assert translate(base(tool_choice={"type": "any"})).require_tool_call is False  # no tools, nothing to call


def test_web_search_is_not_offered() -> None:
    native = translate(base(tools=[WEATHER, {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}])).native
    assert native["tools"] == [NATIVE_WEATHER]


def test_stream_stop_sequences_and_estimate() -> None:
    translated = translate(base(stream=True, stop_sequences=["END"], system="abcd" * 10))
    assert translated.stream and translated.native["stream"] is True and translated.stop_sequences == ("END",)
    assert translated.estimated_input_tokens == (40 + len("user") + len("Hello")) // 4


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_tokens": 1024, "messages": HELLO}, "model is required"),
        ({"model": "m", "messages": HELLO}, "max_tokens is required and must be positive"),
        ({"model": "m", "max_tokens": 0, "messages": HELLO}, "max_tokens is required and must be positive"),
        ({"model": "m", "max_tokens": 1024}, "messages is required"),
        (base(messages=[{"role": "assistant", "content": [{"type": "tool_use", "name": "test"}]}]),
         "tool_use block missing required 'id' field"),
        (base(messages=[{"role": "assistant", "content": [{"type": "tool_use", "id": "x"}]}]),
         "tool_use block missing required 'name' field"),
        (base(messages=[{"role": "user", "content": [{"type": "image"}]}]), "invalid image source"),
        (base(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]),
         "invalid image source type: url. Only base64 images are supported."),
        (base(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "!!"}}]}]),
         "invalid base64 image data: "),
        (base(messages=[{"role": "user", "content": [{"type": "tool_result", "content": [{"type": "image", "source": "x"}]}]}]),
         "invalid tool_result image source"),
        (base(tools=[{"name": "f", "input_schema": "x"}]),
         'invalid input_schema for tool "f": json: cannot unmarshal string into Go value of type api.ToolFunctionParameters'),
        (base(tools=[WEATHER], tool_choice={"type": "tool", "name": "nope"}),
         'tool_choice names the tool "nope", which is not in tools'),
        # Go decodes every field's type before any check
        ({"max_tokens": "1"}, "json: cannot unmarshal string into Go struct field MessagesRequest.max_tokens of type int"),
        (base(temperature="hot"), "json: cannot unmarshal string into Go struct field MessagesRequest.temperature of type float64"),
        (base(stop_sequences="END"), "json: cannot unmarshal string into Go struct field MessagesRequest.stop_sequences of type []string"),
        (base(messages=["hi"]), "json: cannot unmarshal string into Go struct field MessagesRequest.messages of type anthropic.MessageParam"),
        (base(messages=[{"role": "user", "content": {"type": "text"}}]), "json: cannot unmarshal object into Go value of type []anthropic.ContentBlock"),
        (base(messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}]),
         "json: cannot unmarshal number into Go struct field ContentBlock.text of type string"),
    ],
)
def test_request_errors(body: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as info:
        translate(body)
    assert info.value.message.startswith(message)


def test_empty_body_and_non_object() -> None:
    with pytest.raises(BadRequest, match=r"^EOF$"):
        decode(b"", req.MESSAGES, req.PACKAGE)
    with pytest.raises(BadRequest, match=r"into Go value of type anthropic\.MessagesRequest"):
        decode(b"[]", req.MESSAGES, req.PACKAGE)


def test_count_tokens_request_needs_no_max_tokens() -> None:
    body = {"model": "m", "messages": HELLO, "system": "s", "tools": [WEATHER], "thinking": {"type": "enabled"}}
    native = req.count_tokens_request(decode(json.dumps(body).encode(), req.COUNT_TOKENS, req.PACKAGE)).native
    assert native == {"model": "m", "messages": [{"role": "system", "content": "s"}, *HELLO], "tools": [NATIVE_WEATHER], "think": True}


# -- chunks -> events ---------------------------------------------------------------------------------------
def done(reason: str = "stop", stop: str = "", prompt: int = 10, cached: int = 4, generated: int = 5) -> Done:
    stats = Stats(prompt_tokens=prompt, cached_tokens=cached, prompt_eval_count=prompt - cached, prompt_eval_duration=0.1,
                  eval_count=generated, eval_duration=0.2, load_duration=0.0)
    return Done(reason, stats, stop_sequence=stop)


def events_of(chunks: list[Any], stops: tuple[str, ...] = ()) -> list[resp.Event]:
    stream = resp.MessageStream("msg_1", "m", 7, stops)
    return [event for chunk in chunks for event in stream.feed(chunk)]


def test_event_sequence_thinking_text_tool() -> None:
    call = ToolCall("get_weather", {"location": "Paris"}, "call_1", 0)
    events = events_of([Thinking("let me "), Thinking("see"), Content("Hi"), Logprobs((TokenLogprob("x", -1.0),)),
                        Content("!"), ToolCalls((call,)), done()])
    assert [name for name, _ in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    assert events[0][1]["message"] == {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
                                       "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 7, "output_tokens": 0}}
    assert events[1][1] == {"type": "content_block_start", "index": 0,
                            "content_block": {"type": "thinking", "thinking": "", "signature": ""}}
    assert events[6][1]["delta"] == {"type": "text_delta", "text": "Hi"} and events[6][1]["index"] == 1
    assert events[9][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}
    assert events[10][1] == {"type": "content_block_delta", "index": 2,
                             "delta": {"type": "input_json_delta", "partial_json": '{"location":"Paris"}'}}
    assert events[12][1] == {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                             "usage": {"input_tokens": 6, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4,
                                       "output_tokens": 5}}
    assert resp.fold(events)["content"] == [
        {"type": "thinking", "thinking": "let me see", "signature": ""}, {"type": "text", "text": "Hi!"},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}}]


@pytest.mark.parametrize(
    ("final", "stops", "reason", "sequence"),
    [(done("stop"), (), "end_turn", None), (done("length"), (), "max_tokens", None),
     (done("stop", stop="END"), ("END",), "stop_sequence", "END"),
     (done("stop", stop="<|im_end|>"), ("END",), "end_turn", None)],  # the model's own stop string is its end of turn
)
def test_stop_reasons(final: Done, stops: tuple[str, ...], reason: str, sequence: str | None) -> None:
    message = resp.fold(events_of([Content("x"), final], stops))
    assert (message["stop_reason"], message["stop_sequence"]) == (reason, sequence)


def test_folded_message() -> None:
    message = resp.fold(events_of([Content("Hello"), Content(" there"), done()]))
    assert message == {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                       "content": [{"type": "text", "text": "Hello there"}], "stop_reason": "end_turn", "stop_sequence": None,
                       "usage": {"input_tokens": 6, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4, "output_tokens": 5}}
    assert resp.fold(events_of([done()]))["content"] == []


def test_errors() -> None:
    body = resp.error_body(404, "model 'x' not found")
    assert body["type"] == "error" and body["error"] == {"type": "not_found_error", "message": "model 'x' not found"}
    assert body["request_id"].startswith("req_")
    assert [resp.error_type(s) for s in (400, 401, 403, 429, 500, 503)] == [
        "invalid_request_error", "authentication_error", "permission_error", "rate_limit_error", "api_error", "overloaded_error"]
    assert resp.sse(resp.stream_error(500, "boom")) == (
        b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"boom"}}\n\n')
