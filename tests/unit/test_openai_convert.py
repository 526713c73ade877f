"""The OpenAI translation, both ways, table-tested with the cases of Ollama's ``openai/openai_test.go``,
``openai/openai_encoding_format_test.go`` and ``middleware/openai_test.go`` (inputs and expectations
ported; the Go request structs are written here as the JSON the native handler receives)."""

from __future__ import annotations

import base64
import json
import struct
import time
from typing import Any

import pytest

from ollama_torch.errors import BadRequest
from ollama_torch.server.openai import prompts
from ollama_torch.server.openai import translate_request as req
from ollama_torch.server.openai import translate_response as resp

IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNk+A8AAQUBAScY42YAAAAASUVORK5CYII="
DEFAULTS = {"temperature": 1.0, "top_p": 1.0}
WEATHER_CALL = {"id": "id", "type": "function", "function": {"name": "get_current_weather", "arguments": '{"location": "Paris, France", "format": "celsius"}'}}
WEATHER_NATIVE = {"id": "id", "function": {"index": 0, "name": "get_current_weather", "arguments": {"location": "Paris, France", "format": "celsius"}}}
USER_Q = {"role": "user", "content": "What's the weather like in Paris Today?"}
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Get the current weather", "parameters": {
    "type": "object", "required": ["location"], "properties": {
        "location": {"type": "string", "description": "The city and state"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}}


def chat(body: dict[str, Any]) -> req.Translated:
    return req.chat_request(req.decode(json.dumps(body).encode(), req.CHAT))


def native_chat(messages: list[dict[str, Any]], options: dict[str, Any] | None = None, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": "test-model", "messages": messages, "stream": stream, "options": options or DEFAULTS, **extra}


# -- requests: ChatMiddleware / FromChatRequest ---------------------------------------------------------
CHAT_CASES = [
    ("chat handler", {"messages": [{"role": "user", "content": "Hello"}]},
     native_chat([{"role": "user", "content": "Hello"}])),
    ("chat handler with options", {
        "messages": [{"role": "user", "content": "Hello"}], "stream": True, "max_tokens": 999, "seed": 123,
        "stop": ["\n", "stop"], "temperature": 3.0, "frequency_penalty": 4.0, "presence_penalty": 5.0, "top_p": 6.0,
        "response_format": {"type": "json_object"}},
     native_chat([{"role": "user", "content": "Hello"}], {
         "stop": ["\n", "stop"], "num_predict": 999, "temperature": 3.0, "seed": 123, "frequency_penalty": 4.0,
         "presence_penalty": 5.0, "top_p": 6.0}, stream=True, format="json")),
    ("chat handler with image content", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Hello"}, {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + IMAGE}}]}]},
     native_chat([{"role": "user", "content": "Hello"}, {"role": "user", "content": "", "images": [IMAGE]}])),
    ("image_url as a bare string, blank mime type", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": "data:;base64," + IMAGE}]}]},
     native_chat([{"role": "user", "content": "", "images": [IMAGE]}])),
    ("chat handler with tools", {"messages": [USER_Q, {"role": "assistant", "tool_calls": [WEATHER_CALL]}]},
     native_chat([USER_Q, {"role": "assistant", "content": "", "tool_calls": [WEATHER_NATIVE]}])),
    ("chat handler with tools and content", {"messages": [USER_Q, {
        "role": "assistant", "content": "Let's see what the weather is like in Paris", "tool_calls": [WEATHER_CALL]}]},
     native_chat([USER_Q, {"role": "assistant", "content": "Let's see what the weather is like in Paris", "tool_calls": [WEATHER_NATIVE]}])),
    ("chat handler with tools and empty content", {"messages": [USER_Q, {"role": "assistant", "content": "", "tool_calls": [WEATHER_CALL]}]},
     native_chat([USER_Q, {"role": "assistant", "content": "", "tool_calls": [WEATHER_NATIVE]}])),
    ("chat handler with tools and thinking content", {"messages": [USER_Q, {
        "role": "assistant", "reasoning": "Let's see what the weather is like in Paris", "tool_calls": [WEATHER_CALL]}]},
     native_chat([USER_Q, {"role": "assistant", "content": "", "thinking": "Let's see what the weather is like in Paris", "tool_calls": [WEATHER_NATIVE]}])),
    ("tool response with call ID", {"messages": [USER_Q, {"role": "assistant", "tool_calls": [{**WEATHER_CALL, "id": "id_abc"}]},
                                                 {"role": "tool", "tool_call_id": "id_abc", "content": "The weather in Paris is 20 degrees Celsius"}]},
     native_chat([USER_Q, {"role": "assistant", "content": "", "tool_calls": [{**WEATHER_NATIVE, "id": "id_abc"}]},
                  {"role": "tool", "content": "The weather in Paris is 20 degrees Celsius", "tool_name": "get_current_weather", "tool_call_id": "id_abc"}])),
    ("tool response with name", {"messages": [USER_Q, {"role": "assistant", "tool_calls": [WEATHER_CALL]},
                                              {"role": "tool", "name": "get_current_weather", "content": "The weather in Paris is 20 degrees Celsius"}]},
     native_chat([USER_Q, {"role": "assistant", "content": "", "tool_calls": [WEATHER_NATIVE]},
                  {"role": "tool", "content": "The weather in Paris is 20 degrees Celsius", "tool_name": "get_current_weather"}])),
    ("chat handler with streaming tools", {"messages": [{"role": "user", "content": "What's the weather like in Paris?"}], "stream": True, "tools": [TOOL]},
     native_chat([{"role": "user", "content": "What's the weather like in Paris?"}], stream=True, tools=[TOOL])),
    ("json_schema response format", {"messages": [{"role": "user", "content": "hi"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
     native_chat([{"role": "user", "content": "hi"}], format={"type": "object"})),
    ("text response format is free text", {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "text"}},
     native_chat([{"role": "user", "content": "hi"}])),
    ("logprobs", {"messages": [{"role": "user", "content": "Hello"}], "logprobs": True, "top_logprobs": 5},
     native_chat([{"role": "user", "content": "Hello"}], logprobs=True, top_logprobs=5)),
    ("stop string, non-strings in a stop list dropped", {"messages": [{"role": "user", "content": "a"}], "stop": "x"},
     native_chat([{"role": "user", "content": "a"}], {"stop": ["x"], **DEFAULTS})),
    ("a stop list of no strings is left out", {"messages": [{"role": "user", "content": "a"}], "stop": [1]},
     native_chat([{"role": "user", "content": "a"}])),
    ("reasoning object wins over reasoning_effort", {"messages": [{"role": "user", "content": "a"}], "reasoning": {"effort": "high"}, "reasoning_effort": "low"},
     native_chat([{"role": "user", "content": "a"}], think="high")),
]


@pytest.mark.parametrize(("body", "expected"), [(b, e) for _, b, e in CHAT_CASES], ids=[n for n, _, _ in CHAT_CASES])
def test_chat_request(body: dict[str, Any], expected: dict[str, Any]) -> None:
    translated = chat({"model": "test-model", **body})
    assert translated.native == expected
    assert translated.stream is expected["stream"]


def test_chat_stream_options() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "Hello"}], "stream": True}
    assert chat(body).include_usage is False
    assert chat({**body, "stream_options": {"include_usage": True}}).include_usage is True


@pytest.mark.parametrize(("effort", "think"), [
    (None, None), ("high", "high"), ("medium", "medium"), ("low", "low"), ("max", "max"), ("minimal", "low"),
    ("xhigh", "max"), ("ultra", "max"), ("none", False)])
def test_reasoning_effort(effort: str | None, think: bool | str | None) -> None:
    native = chat({"model": "m", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": effort}).native
    assert native.get("think") == think and ("think" in native) == (think is not None)


CHAT_ERRORS = [
    ("chat handler error forwarding", {"messages": [{"role": "user", "content": 2}]}, "invalid message content type: float64"),
    ("no content and no tool calls", {"messages": [{"role": "assistant"}]}, "invalid message content type: <nil>"),
    ("empty messages", {"messages": []}, "[] is too short - 'messages'"),
    ("messages missing", {}, "[] is too short - 'messages'"),
    ("invalid effort", {"messages": [{"role": "user", "content": "a"}], "reasoning_effort": "extreme"},
     'invalid reasoning value: "extreme" (must be "minimal", "low", "medium", "high", "xhigh", "ultra", "max", or "none")'),
    ("http image url", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
     req.IMAGE_URL_UNSUPPORTED),
    ("gif data url", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/gif;base64," + IMAGE}}]}]},
     "invalid image input"),
    ("bad base64", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!"}}]}]},
     "invalid image input"),
    ("unknown part type", {"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "invalid message format"),
    ("text part without text", {"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "invalid message format"),
    ("bad tool call arguments", {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{"}}]}]},
     "invalid tool call arguments"),
    ("non-integer max_tokens", {"messages": [{"role": "user", "content": "a"}], "max_tokens": 1.5},
     "json: cannot unmarshal number 1.5 into Go struct field ChatCompletionRequest.max_tokens of type int"),
    ("a tool that is not an object", {"messages": [{"role": "user", "content": "a"}], "tools": ["get_weather"]},
     "json: cannot unmarshal string into Go struct field ChatCompletionRequest.tools of type api.Tool"),
    ("string temperature", {"messages": [{"role": "user", "content": "a"}], "temperature": "hot"},
     "json: cannot unmarshal string into Go struct field ChatCompletionRequest.temperature of type float64"),
]


@pytest.mark.parametrize(("body", "message"), [(b, m) for _, b, m in CHAT_ERRORS], ids=[n for n, _, _ in CHAT_ERRORS])
def test_chat_request_errors(body: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as err:
        chat({"model": "m", **body})
    assert err.value.message == message and err.value.status == 400


@pytest.mark.parametrize(("body", "message"), [
    (b"", "EOF"), (b"  ", "EOF"), (b"[1]", "json: cannot unmarshal array into Go value of type openai.ChatCompletionRequest"),
    (b"{", "unexpected EOF")])
def test_decode_errors(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as err:
        req.decode(body, req.CHAT)
    assert err.value.message == message


# -- requests: CompletionsMiddleware / FromCompleteRequest ----------------------------------------------------
COMPLETION_OPTIONS = {"stop": ["\n", "stop"], "temperature": 0.8, "frequency_penalty": 0.0, "presence_penalty": 0.0, "top_p": 1.0}
BASE_COMPLETION = {"model": "test-model", "prompt": "Hello", "temperature": 0.8, "stop": ["\n", "stop"], "suffix": "suffix"}


@pytest.mark.parametrize(("extra", "stream", "usage"), [({}, False, False), ({"stream": True}, True, False),
                                                        ({"stream": True, "stream_options": {"include_usage": True}}, True, True)])
def test_completion_request(extra: dict[str, Any], stream: bool, usage: bool) -> None:
    translated = req.completion_request(req.decode(json.dumps({**BASE_COMPLETION, **extra}).encode(), req.COMPLETION))
    assert translated.native == {"model": "test-model", "prompt": "Hello", "stream": stream, "options": COMPLETION_OPTIONS, "suffix": "suffix"}
    assert (translated.stream, translated.include_usage) == (stream, usage)


def test_completion_defaults_and_logprobs() -> None:
    native = req.completion_request(req.decode(b'{"model":"m","prompt":"Hi","top_p":0,"logprobs":5}', req.COMPLETION)).native
    assert native["options"] == {"temperature": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0, "top_p": 1.0}
    assert (native["logprobs"], native["top_logprobs"]) == (True, 5)


# A list prompt was Ollama's "cannot unmarshal array" 400; OpenAI's four forms are taken now (issue 14).
@pytest.mark.parametrize(("body", "message"), [
    ({"prompt": "Hello", "temperature": None, "stop": [1, 2], "suffix": "suffix"}, "invalid type for 'stop' field: float64"),
    ({"prompt": 5}, "json: cannot unmarshal number into Go struct field CompletionRequest.prompt of type string"),
    ({"prompt": {"a": 1}}, "json: cannot unmarshal object into Go struct field CompletionRequest.prompt of type string"),
    ({"prompt": []}, "[] is too short - 'prompt'"),
    ({"prompt": [[]]}, prompts.EMPTY_TOKENS),
    ({"prompt": [[1, 2], []]}, prompts.EMPTY_TOKENS),
    ({"prompt": ["a", [1]]}, prompts.INVALID),
    ({"prompt": [1, "a"]}, prompts.INVALID),
    ({"prompt": [1, 2.5]}, prompts.INVALID),
    ({"prompt": [True]}, prompts.INVALID),
    ({"prompt": [[1], [True]]}, prompts.INVALID),
    ({"prompt": [None]}, prompts.INVALID),
    ({"prompt": "Hi", "echo": 1}, "json: cannot unmarshal number into Go struct field CompletionRequest.echo of type bool"),
    ({"prompt": "Hi", "echo": True, "suffix": "x"}, "suffix is not supported with echo or token-id prompts"),
    ({"prompt": [1, 2], "suffix": "x"}, "suffix is not supported with echo or token-id prompts")])
def test_completion_request_errors(body: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as err:
        req.completion_request(req.decode(json.dumps({"model": "m", **body}).encode(), req.COMPLETION))
    assert err.value.message == message


@pytest.mark.parametrize(("prompt", "prompts", "raw"), [
    ("Hello", ("Hello",), False),
    (None, ("",), False),
    (["a", "b"], ("a", "b"), False),
    ([1, 2, 3], ((1, 2, 3),), True),
    ([[1, 2], [3]], ((1, 2), (3,)), True),
])
def test_completion_prompt_forms(prompt: Any, prompts: tuple[Any, ...], raw: bool) -> None:
    """OpenAI's four forms: each string or token list is one prompt (one choice); token ids run raw."""
    translated = req.completion_request(req.decode(json.dumps({"model": "m", "prompt": prompt}).encode(), req.COMPLETION))
    assert translated.prompts == prompts and not translated.echo
    assert translated.native.get("raw", False) is raw
    assert translated.native["prompt"] == (prompts[0] if isinstance(prompts[0], str) else "")


def test_completion_echo_is_raw() -> None:
    body = {"model": "m", "prompt": "Hello", "echo": True, "logprobs": 1, "max_tokens": 0}
    translated = req.completion_request(req.decode(json.dumps(body).encode(), req.COMPLETION))
    assert translated.echo and translated.native["raw"] is True and translated.native["options"]["num_predict"] == 0
    assert (translated.native["logprobs"], translated.native["top_logprobs"]) == (True, 1)


# -- requests: EmbeddingsMiddleware -------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "native", "fmt"), [
    ({"input": "Hello"}, {"model": "test-model", "input": "Hello"}, ""),
    ({"input": ["Hello", "World"]}, {"model": "test-model", "input": ["Hello", "World"]}, ""),
    ({"input": ""}, {"model": "test-model", "input": [""]}, ""),
    ({"input": "x", "dimensions": 8, "encoding_format": "BASE64"}, {"model": "test-model", "input": "x", "dimensions": 8}, "base64"),
    ({"input": "x", "encoding_format": "Float"}, {"model": "test-model", "input": "x"}, "float")])
def test_embed_request(body: dict[str, Any], native: dict[str, Any], fmt: str) -> None:
    translated = req.embed_request(req.decode(json.dumps({"model": "test-model", **body}).encode(), req.EMBED))
    assert (translated.native, translated.encoding_format, translated.model) == (native, fmt, "test-model")


@pytest.mark.parametrize(("body", "message"), [
    ({}, "invalid input"), ({"input": None}, "invalid input"), ({"input": []}, "invalid input"),
    ({"input": "x", "encoding_format": "json"}, "Invalid value for 'encoding_format' = json. Supported values: ['float', 'base64']."),
    ({"input": "x", "encoding_format": "hex"}, "Invalid value for 'encoding_format' = hex. Supported values: ['float', 'base64'].")])
def test_embed_request_errors(body: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as err:
        req.embed_request(req.decode(json.dumps({"model": "m", **body}).encode(), req.EMBED))
    assert err.value.message == message


# -- responses: ToChatCompletion, ToToolCalls, NewError, ToUsage ---------------------------------------------
CREATED_AT = "2009-02-13T23:31:30Z"  # unix 1234567890
CALL = {"id": "call_123", "function": {"index": 0, "name": "get_weather", "arguments": {"location": "Seattle"}}}
LOGPROBS = [{"token": "Hello", "logprob": -0.5, "top_logprobs": [{"token": "Hello", "logprob": -0.5}, {"token": "Hi", "logprob": -1.2}]},
            {"token": " there", "logprob": -0.3, "top_logprobs": [{"token": " there", "logprob": -0.3}, {"token": " world", "logprob": -1.5}]}]


@pytest.mark.parametrize(("status", "kind"), [(400, "invalid_request_error"), (404, "not_found_error"), (500, "api_error"), (503, "api_error")])
def test_error_body(status: int, kind: str) -> None:
    assert resp.error_body(status, "test message") == {"error": {"message": "test message", "type": kind, "param": None, "code": None}}


def test_usage() -> None:
    assert resp.usage({"prompt_eval_count": 10, "eval_count": 20}) == {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    assert resp.usage({}) == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_tool_calls_preserve_ids_and_indexes() -> None:
    calls = [{"id": "call_abc123", "function": {"index": 2, "name": "get_weather", "arguments": {"location": "Seattle"}}},
             {"id": "call_def456", "function": {"index": 7, "name": "get_time", "arguments": {"timezone": "UTC"}}}]
    assert resp.tool_calls_to_openai(calls) == [
        {"id": "call_abc123", "index": 2, "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"Seattle"}'}},
        {"id": "call_def456", "index": 7, "type": "function", "function": {"name": "get_time", "arguments": '{"timezone":"UTC"}'}}]
    assert calls[0]["function"]["arguments"] == {"location": "Seattle"}  # input not mutated


def test_chat_completion() -> None:
    native = {"model": "test-model", "created_at": CREATED_AT, "message": {"role": "assistant", "content": "Hello there", "thinking": "hm"},
              "logprobs": LOGPROBS, "done": True, "done_reason": "stop", "prompt_eval_count": 5, "eval_count": 2}
    assert resp.chat_completion("test-id", native) == {
        "id": "test-id", "object": "chat.completion", "created": 1234567890, "model": "test-model", "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there", "reasoning": "hm"}, "finish_reason": "stop",
                     "logprobs": {"content": LOGPROBS}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    del native["logprobs"]
    assert "logprobs" not in resp.chat_completion("test-id", native)["choices"][0]


@pytest.mark.parametrize(("done_reason", "finish"), [("length", "length"), ("stop", "tool_calls"), ("unload", "unload"), ("", None)])
def test_chat_completion_finish_reason_with_tool_calls(done_reason: str, finish: str | None) -> None:
    native = {"model": "m", "message": {"role": "assistant", "content": "", "tool_calls": [CALL]}, "done": True, "done_reason": done_reason}
    choice = resp.chat_completion("id", native)["choices"][0]
    assert choice["finish_reason"] == finish
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == '{"location":"Seattle"}'


# -- responses: ToStreamChunks / FinishChunk --------------------------------------------------------------------
def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks]


@pytest.mark.parametrize(("message", "expected"), [
    ({"thinking": "step-by-step", "content": "final answer"}, [{"role": "assistant", "reasoning": "step-by-step"}, {"content": "final answer"}]),
    ({"thinking": "need a tool", "tool_calls": [CALL]}, [{"role": "assistant", "reasoning": "need a tool"},
                                                          {"content": "", "tool_calls": resp.tool_calls_to_openai([CALL])}]),
    ({"thinking": "pondering"}, [{"role": "assistant", "content": "", "reasoning": "pondering"}]),
    ({"content": "hello"}, [{"role": "assistant", "content": "hello"}]),
    ({"tool_calls": [CALL]}, [{"role": "assistant", "content": "", "tool_calls": resp.tool_calls_to_openai([CALL])}]),
    ({"content": ""}, [{"role": "assistant", "content": ""}])])
def test_stream_chunks(message: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    for done in (False, True):
        chunks = resp.stream_chunks("test-id", {"model": "test-model", "message": message, "done": done, "done_reason": "stop"}, True, 7)
        assert deltas(chunks) == expected
        assert all(c["choices"][0]["finish_reason"] is None and c["created"] == 7 for c in chunks)


def test_stream_chunks_role_only_when_requested_and_logprobs_on_first_half() -> None:
    native = {"model": "m", "message": {"thinking": "thinking", "content": "content"}, "logprobs": [{"token": "tok", "logprob": -0.25}]}
    first, second = resp.stream_chunks("id", native, False, 1)
    assert "role" not in first["choices"][0]["delta"]
    assert first["choices"][0]["logprobs"] == {"content": [{"token": "tok", "logprob": -0.25}]}
    assert "logprobs" not in second["choices"][0]
    assert b'"delta":{"content":"Hi"}' in resp.dumps(resp.stream_chunks("id", {"message": {"content": "Hi"}}, False, 1)[0])


@pytest.mark.parametrize(("done_reason", "tool_call_sent", "expected"), [
    ("stop", False, "stop"), ("length", False, "length"), ("stop", True, "tool_calls"), ("length", True, "length"),
    ("", False, "stop"), ("unload", False, "unload"), ("unload", True, "unload")])
def test_finish_chunk(done_reason: str, tool_call_sent: bool, expected: str) -> None:
    chunk = resp.finish_chunk("test-id", {"model": "test-model", "done_reason": done_reason}, tool_call_sent, 1700000000)
    assert chunk["choices"] == [{"index": 0, "delta": {}, "finish_reason": expected}]
    assert chunk["created"] == 1700000000 and b'"delta":{}' in resp.dumps(chunk)


# -- responses: the ChatWriter stream ------------------------------------------------------------------------
def run_chat_stream(lines: list[dict[str, Any]], include_usage: bool = False) -> tuple[list[resp.Frame], resp.ChatStream]:
    stream = resp.ChatStream("chatcmpl-test", include_usage)
    frames = [f for line in lines for f in stream.feed({"model": "test-model", **line})]
    return frames, stream


def obj(frame: resp.Frame) -> dict[str, Any]:
    assert isinstance(frame, dict)
    return frame


def test_chat_stream_mixed_thinking_and_content_with_usage() -> None:
    frames, _ = run_chat_stream([{"message": {"thinking": "reasoning", "content": "final answer"}, "done": True, "done_reason": "stop",
                                  "prompt_eval_count": 3, "eval_count": 2}], include_usage=True)
    assert len(frames) == 5 and frames[4] == resp.DONE
    assert deltas([obj(f) for f in frames[:3]]) == [{"role": "assistant", "reasoning": "reasoning"}, {"content": "final answer"}, {}]
    assert obj(frames[2])["choices"][0]["finish_reason"] == "stop"
    assert obj(frames[3])["choices"] == [] and obj(frames[3])["usage"]["total_tokens"] == 5
    assert b'"choices":[]' in resp.sse(frames[3]) and resp.sse(frames[4]) == b"data: [DONE]\n\n"


def test_chat_stream_role_only_on_first_chunk_and_one_timestamp() -> None:
    frames, _ = run_chat_stream([
        {"created_at": "2023-11-14T22:13:20Z", "message": {"content": "Hello"}},
        {"created_at": "2023-11-14T22:13:30Z", "message": {"content": " world"}},
        {"created_at": "2023-11-14T22:13:40Z", "message": {"content": "!"}, "done": True, "done_reason": "stop"}])
    assert len(frames) == 5
    chunks = [obj(f) for f in frames[:4]]
    assert deltas(chunks) == [{"role": "assistant", "content": "Hello"}, {"content": " world"}, {"content": "!"}, {}]
    assert {c["created"] for c in chunks} == {1700000000}


def test_chat_stream_metrics_trailer_is_not_a_content_chunk() -> None:
    frames, _ = run_chat_stream([{"message": {"content": "Hi"}},
                                 {"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 1}],
                                include_usage=True)
    assert len(frames) == 4 and deltas([obj(frames[0]), obj(frames[1])]) == [{"role": "assistant", "content": "Hi"}, {}]
    assert obj(frames[2])["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


def test_chat_stream_done_with_logprobs_is_not_a_trailer() -> None:
    frames, _ = run_chat_stream([{"message": {"content": "Hi"}}, {"done": True, "done_reason": "stop", "logprobs": [{"token": "Hi", "logprob": -0.1}]}])
    assert len(frames) == 4 and b'"logprob":-0.1' in resp.sse(frames[1])


def test_chat_stream_empty_completion_still_opens_with_role() -> None:
    frames, _ = run_chat_stream([{"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop"}])
    assert len(frames) == 3 and deltas([obj(frames[0]), obj(frames[1])]) == [{"role": "assistant", "content": ""}, {}]


@pytest.mark.parametrize(("lines", "finish"), [
    ([{"message": {"content": "partial"}, "done": True, "done_reason": "length"}], "length"),
    ([{"message": {"tool_calls": [CALL]}, "done": True, "done_reason": "stop"}], "tool_calls"),
    ([{"message": {"tool_calls": [CALL]}}, {"done": True, "done_reason": "stop"}], "tool_calls"),
    ([{"message": {"tool_calls": [CALL]}}, {"done": True, "done_reason": "length"}], "length")])
def test_chat_stream_finish_reason(lines: list[dict[str, Any]], finish: str) -> None:
    frames, _ = run_chat_stream(lines)
    assert frames[-1] == resp.DONE and obj(frames[-2])["choices"][0] == {"index": 0, "delta": {}, "finish_reason": finish}
    assert all(obj(f)["choices"][0]["finish_reason"] is None for f in frames[:-2])


def test_chat_stream_mixed_not_done_emits_chunks_only() -> None:
    frames, stream = run_chat_stream([{"message": {"thinking": "reasoning", "tool_calls": [CALL]}}], include_usage=True)
    assert len(frames) == 2 and stream.tool_call_sent and not stream.finished


def test_chat_stream_error_line() -> None:
    frames, stream = run_chat_stream([{"message": {"content": "Hi"}}, {"error": "an error was encountered while running the model: boom"}])
    assert stream.finished and obj(frames[-1]) == resp.error_body(500, "an error was encountered while running the model: boom")


# -- responses: completions ------------------------------------------------------------------------------------
def test_completion() -> None:
    native = {"model": "m", "created_at": CREATED_AT, "response": "Hi there", "done": True, "done_reason": "length", "prompt_eval_count": 4, "eval_count": 2}
    assert resp.completion("cmpl-1", native) == {
        "id": "cmpl-1", "object": "text_completion", "created": 1234567890, "model": "m", "system_fingerprint": "fp_ollama",
        "choices": [{"text": "Hi there", "index": 0, "finish_reason": "length"}], "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}


@pytest.mark.parametrize("include_usage", [False, True])
def test_completion_stream(include_usage: bool) -> None:
    stream = resp.CompletionStream("cmpl-1", include_usage)
    frames = stream.feed({"model": "m", "response": "Hi", "done": False}, now=5)
    frames += stream.feed({"model": "m", "response": "", "done": True, "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 1}, now=5)
    zero = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    first = {"id": "cmpl-1", "object": "text_completion", "created": 5, "choices": [{"text": "Hi", "index": 0, "finish_reason": None}],
             "model": "m", "system_fingerprint": "fp_ollama", **({"usage": zero} if include_usage else {})}
    assert frames[0] == first and obj(frames[1])["choices"] == [{"text": "", "index": 0, "finish_reason": "stop"}]
    assert frames[-1] == resp.DONE and stream.finished
    if include_usage:
        assert len(frames) == 4 and obj(frames[2])["choices"] == [] and obj(frames[2])["usage"]["total_tokens"] == 4
    else:
        assert len(frames) == 3


def test_completion_choices_and_echoed_logprobs() -> None:
    """Several prompts: one choice each, numbered, usage added; an echoed prompt's first token has null values."""
    echoed = {"model": "m", "created_at": CREATED_AT, "response": "Hi there", "done": True, "done_reason": "length",
              "prompt_eval_count": 2, "eval_count": 0,
              "logprobs": [{"token": "Hi", "logprob": None}, {"token": " there", "logprob": -1.5, "top_logprobs": [{"token": " you", "logprob": -0.5}]}]}
    plain = {"model": "m", "created_at": CREATED_AT, "response": "!", "done": True, "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 1}
    out = resp.completion_choices("cmpl-1", [echoed, plain])
    assert [c["index"] for c in out["choices"]] == [0, 1] and [c["text"] for c in out["choices"]] == ["Hi there", "!"]
    assert out["choices"][0]["logprobs"] == {"tokens": ["Hi", " there"], "token_logprobs": [None, -1.5],
                                             "top_logprobs": [None, {" you": -0.5}], "text_offset": [0, 2]}
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    counted = resp.add_usage([resp.token_usage(4, 1, 2), resp.token_usage(6, 0, 0)])
    assert counted == {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11, "prompt_tokens_details": {"cached_tokens": 2}}


def test_completion_stream_of_several_prompts() -> None:
    """Lines of two prompts interleaved: each chunk names its choice, offsets run per choice, [DONE] after both."""
    stream = resp.CompletionStream("cmpl-1", include_usage=True, prompts=2)
    lp = [{"token": "ab", "logprob": -1.0}]
    frames = stream.feed({"model": "m", "response": "ab", "done": False, "logprobs": lp}, now=5, index=1)
    frames += stream.feed({"model": "m", "response": "ab", "done": False, "logprobs": lp}, now=5, index=1)
    frames += stream.feed({"model": "m", "response": "", "done": True, "done_reason": "stop", "prompt_eval_count": 1, "eval_count": 2}, now=5, index=1)
    assert not stream.finished and resp.DONE not in frames
    frames += stream.feed({"model": "m", "response": "x", "done": True, "done_reason": "length", "prompt_eval_count": 3, "eval_count": 1}, now=5, index=0)
    assert [obj(f)["choices"][0]["index"] for f in frames[:4]] == [1, 1, 1, 0]
    assert [obj(f)["choices"][0]["logprobs"]["text_offset"] for f in frames[:2]] == [[0], [2]]
    assert obj(frames[4])["choices"] == [] and obj(frames[4])["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    assert frames[-1] == resp.DONE and stream.finished


# -- responses: models and embeddings ----------------------------------------------------------------------------
def test_model_list() -> None:
    tags = {"models": [{"name": "legacy-name:latest", "model": "namespace/exposed-model:latest", "modified_at": CREATED_AT},
                       {"name": "fallback-name:latest", "modified_at": "2009-02-13T23:31:31Z"},
                       {"name": "test-model", "model": "test-model", "modified_at": "2023-06-16T17:03:22Z"}]}
    assert resp.model_list(tags) == {"object": "list", "data": [
        {"id": "namespace/exposed-model:latest", "object": "model", "created": 1234567890, "owned_by": "namespace"},
        {"id": "fallback-name:latest", "object": "model", "created": 1234567891, "owned_by": "library"},
        {"id": "test-model", "object": "model", "created": 1686935002, "owned_by": "library"}]}
    assert resp.model_list({"models": []}) == {"object": "list", "data": []}  # Ollama: null (a Go nil slice)


def test_model() -> None:
    assert resp.model({"modified_at": "2023-06-16T19:03:22.5+02:00"}, "test-model") == {
        "id": "test-model", "object": "model", "created": 1686935002, "owned_by": "library"}
    assert resp.model({}, "hf.co/user/repo:Q4")["owned_by"] == "user"


@pytest.mark.parametrize(("text", "expected"), [
    ("2009-02-13T23:31:30Z", 1234567890), ("2009-02-13T23:31:30.123456789Z", 1234567890), ("2009-02-14T00:31:30+01:00", 1234567890),
    ("0001-01-01T00:00:00Z", -1), ("garbage", -1), (None, -1)])
def test_unix_time(text: Any, expected: int) -> None:
    assert resp.unix_time(text, -1) == expected
    assert abs(resp.unix_time("bad") - time.time()) < 5


@pytest.mark.parametrize(("embeddings", "fmt", "expected"), [
    ([[0.1, -0.2, 0.3]], "float", [[0.1, -0.2, 0.3]]),
    ([[0.1, -0.2, 0.3]], "base64", ["zczMPc3MTL6amZk+"]),
    ([[0.1, -0.2, 0.3]], "", [[0.1, -0.2, 0.3]]),
    ([[0.1, -0.2, 0.3]], "invalid", [[0.1, -0.2, 0.3]]),
    ([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], "base64", ["zczMPc3MTD4=", "mpmZPs3MzD4=", "AAAAP5qZGT8="]),
    (None, "float", [])])
def test_embedding_list(embeddings: Any, fmt: str, expected: list[Any]) -> None:
    out = resp.embedding_list("test-model", {"embeddings": embeddings, "prompt_eval_count": 5}, fmt)
    assert out == {"object": "list", "data": [{"object": "embedding", "embedding": e, "index": i} for i, e in enumerate(expected)],
                   "model": "test-model", "usage": {"prompt_tokens": 5, "total_tokens": 5}}


def test_floats_to_base64_round_trip() -> None:
    floats = [0.1, -0.2, 0.3, -0.4, 0.5]
    decoded = struct.unpack("<5f", base64.b64decode(resp.floats_to_base64(floats)))
    assert decoded == pytest.approx(floats, abs=1e-6)
    assert resp.floats_to_base64([]) == ""
