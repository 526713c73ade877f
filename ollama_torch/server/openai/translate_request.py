"""OpenAI request bodies -> native request bodies: Ollama's ``FromChatRequest``, ``FromCompleteRequest`` and
the checks its ``ChatMiddleware`` / ``CompletionsMiddleware`` / ``EmbeddingsMiddleware`` make first.

Pure functions over decoded JSON (no aiohttp, no I/O), so they are table-tested against the cases of
Ollama's ``openai_test.go`` and ``middleware/openai_test.go``. Every error is a ``BadRequest`` carrying
Ollama's text; the routes put it in the OpenAI error envelope.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from ...errors import BadRequest
from ..decode import Fields, check_depth, json_kind, mismatch, parse_body
from .prompts import PromptInput, parse_prompts

CHAT = "ChatCompletionRequest"
COMPLETION = "CompletionRequest"
EMBED = "EmbedRequest"

IMAGE_URL_UNSUPPORTED = "image URLs are not currently supported, please use base64 encoded data instead"
_IMAGE_PREFIXES = tuple(f"data:image/{t};base64," for t in ("jpeg", "jpg", "png", "webp"))
_EFFORT_TO_THINK: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
    "xhigh": "max",
    "ultra": "max",
}


@dataclass(frozen=True)
class Translated:
    """A native request body plus what the OpenAI side needs to shape the answer."""

    native: dict[str, Any]
    model: str
    stream: bool = False
    include_usage: bool = False
    encoding_format: str = ""
    prompts: tuple[PromptInput, ...] = ()  # completions: one native request each, ``prompt`` set per prompt
    echo: bool = False  # completions: the prompt comes back first (scored, with ``logprobs``)


# -- decoding, the way Go's encoding/json reports mistakes -------------------------------------------------
def go_type(value: Any) -> str:
    """``fmt.Sprintf("%T", v)`` for a value ``encoding/json`` decoded into an ``any``."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    return "map[string]interface {}"




def decode(body: bytes, struct: str, package: str = "openai") -> Fields:
    """Gin's ``ShouldBindJSON`` into ``<package>.<struct>``: an empty body is Go's bare ``EOF``."""
    if not body.strip():
        raise BadRequest("EOF")
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")  # as json.loads decodes bytes
        check_depth(text)  # before anything recursive (the decoder, the re-encoding for the native handler)
        data = json.loads(text)
    except ValueError:
        return parse_body(body, struct)  # raises with Go's syntax-error text
    if not isinstance(data, dict):
        raise BadRequest(f"json: cannot unmarshal {json_kind(data)} into Go value of type {package}.{struct}")
    return Fields(data, struct)




def _opt_int(fields: Fields, key: str) -> int | None:
    return fields.int(key) if fields.has(key) else None




def _include_usage(fields: Fields) -> bool:
    options = fields.object("stream_options", "openai.StreamOptions")
    return options.bool("include_usage") if options is not None else False


# -- sampling options -----------------------------------------------------------------------------------
def _stop(value: Any, *, strict: bool) -> list[str] | None:
    """``stop``: a string becomes a one-item list; in a list, non-strings are dropped (chat) or refused
    (completions); any other type is ignored, as Ollama's type switch ignores it. A list left empty is
    ``None`` (Ollama sends ``null``, which leaves the model's own stop parameters in force)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        stops = []
        for s in value:
            if isinstance(s, str):
                stops.append(s)
            elif strict:
                raise BadRequest(f"invalid type for 'stop' field: {go_type(s)}")
        return stops or None
    return None


def think_from_effort(effort: str) -> bool | str | None:
    """OpenAI's reasoning effort as a native ``think`` value; efforts past either end of Ollama's scale are
    clamped to its nearest level, and ``""`` leaves thinking at the model's default."""
    if effort == "":
        return None
    if effort in _EFFORT_TO_THINK:
        return _EFFORT_TO_THINK[effort]
    raise BadRequest(
        f'invalid reasoning value: "{effort}" (must be "minimal", "low", "medium", "high", "xhigh", "ultra", "max", or "none")'
    )


def _format(fields: Fields) -> Any:
    response_format = fields.object("response_format", "openai.ResponseFormat")
    if response_format is None:
        return None
    kind = response_format.str("type").strip().lower()
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = response_format.object("json_schema", "openai.JsonSchema")
        return schema.raw("schema") if schema is not None else None
    return None  # "text" and unknown types: free text


# -- messages ---------------------------------------------------------------------------------------------
def decode_image_url(url: str) -> str:
    """A ``data:`` URL's payload as (re-encoded) base64; remote URLs are refused with Ollama's text."""
    if url.startswith(("http://", "https://")):
        raise BadRequest(IMAGE_URL_UNSUPPORTED)
    if url.startswith("data:;base64,"):  # a blank mime type, as /api/chat takes bare base64
        data = url[len("data:;base64,") :]
    else:
        prefix = next((p for p in _IMAGE_PREFIXES if url.startswith(p)), None)
        if prefix is None:
            raise BadRequest("invalid image input")
        data = url[len(prefix) :]
    try:
        return base64.b64encode(base64.b64decode(data, validate=True)).decode()
    except (binascii.Error, ValueError):
        raise BadRequest("invalid image input") from None


def tool_calls_to_native(calls: list[Any]) -> list[dict[str, Any]]:
    """OpenAI tool calls (``arguments`` a JSON string) -> native ones (``arguments`` an object)."""
    struct = f"{CHAT}.messages.tool_calls"
    out = []
    for call in calls:
        if not isinstance(call, dict):
            raise BadRequest(f"json: cannot unmarshal {json_kind(call)} into Go struct field {CHAT}.messages.tool_calls of type openai.ToolCall")
        tc = Fields(call, struct)
        function = tc.object("function", "struct { Name string; Arguments string }")
        name = function.str("name") if function is not None else ""
        arguments = function.str("arguments") if function is not None else ""
        try:
            check_depth(arguments)  # a JSON document of its own, decoded here
            args = json.loads(arguments)
        except ValueError:
            raise BadRequest("invalid tool call arguments") from None
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise BadRequest("invalid tool call arguments")
        native: dict[str, Any] = {}
        if tc.str("id"):
            native["id"] = tc.str("id")
        native["function"] = {"index": 0, "name": name, "arguments": args}
        out.append(native)
    return out


def _name_from_tool_call_id(messages: list[Any], call_id: str) -> str:
    """The function name of the latest assistant tool call with this id ("last one wins")."""
    for msg in reversed(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("tool_calls"), list):
            continue
        for call in msg["tool_calls"]:
            if isinstance(call, dict) and call.get("id") == call_id and isinstance(call.get("function"), dict):
                name = call["function"].get("name")
                return name if isinstance(name, str) else ""
    return ""


def _native_message(role: str, content: str = "", **extra: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": role, "content": content}
    msg.update({k: v for k, v in extra.items() if v})  # Go's omitempty
    return msg


def _content_part(role: str, part: Any) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise BadRequest("invalid message format")
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise BadRequest("invalid message format")
        return _native_message(role, text)
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            raise BadRequest("invalid message format")
        return _native_message(role, images=[decode_image_url(url)])
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict):
            raise BadRequest("invalid input_audio format")
        data = audio.get("data")
        if not isinstance(data, str):
            raise BadRequest("invalid input_audio format: missing data")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest(f"invalid input_audio base64 data: {exc}") from None
        return _native_message(role, images=[base64.b64encode(raw).decode()])
    raise BadRequest("invalid message format")


def messages_to_native(messages: list[Any]) -> list[dict[str, Any]]:
    """Each OpenAI message becomes one native message, or one per content part when ``content`` is a list."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if not isinstance(m, dict):
            raise BadRequest(f"json: cannot unmarshal {json_kind(m)} into Go struct field {CHAT}.messages of type openai.Message")
        msg = Fields(m, f"{CHAT}.messages")
        role, reasoning, call_id = msg.str("role"), msg.str("reasoning"), msg.str("tool_call_id")
        raw_calls = msg.list("tool_calls", "[]openai.ToolCall")
        tool_name = ""
        if role.lower() == "tool":
            tool_name = msg.str("name") or (_name_from_tool_call_id(messages, call_id) if call_id else "")
        content = m.get("content")
        if isinstance(content, str):
            out.append(_native_message(
                role, content, thinking=reasoning, tool_calls=tool_calls_to_native(raw_calls),
                tool_name=tool_name, tool_call_id=call_id,
            ))
        elif isinstance(content, list):
            out.extend(_content_part(role, part) for part in content)
            # the parts may have made several messages: tool calls go on the last one
            if out and raw_calls:
                last = out[-1]
                last.update({k: v for k, v in {
                    "tool_calls": tool_calls_to_native(raw_calls), "tool_name": tool_name,
                    "tool_call_id": call_id, "thinking": reasoning,
                }.items() if v})
        else:
            if m.get("tool_calls") is None:  # content may be left out only when tool calls are given
                raise BadRequest(f"invalid message content type: {go_type(content)}")
            out.append(_native_message(
                role, thinking=reasoning, tool_calls=tool_calls_to_native(raw_calls), tool_call_id=call_id,
            ))
    return out


# -- the three request kinds ------------------------------------------------------------------------------
def chat_request(fields: Fields) -> Translated:
    """``POST /v1/chat/completions`` -> ``/api/chat``."""
    messages = fields.list("messages", "[]openai.Message")
    if not messages:
        raise BadRequest("[] is too short - 'messages'")
    native_messages = messages_to_native(messages)
    options: dict[str, Any] = {}
    stop = _stop(fields.raw("stop"), strict=False)
    if stop is not None:
        options["stop"] = stop
    # ``max_completion_tokens`` replaced ``max_tokens`` in OpenAI's chat API (newer SDKs send only it);
    # Ollama reads just ``max_tokens``, which still wins when both are present.
    max_tokens = _opt_int(fields, "max_tokens")
    if max_tokens is None:
        max_tokens = _opt_int(fields, "max_completion_tokens")
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    temperature = fields.opt_float("temperature")
    options["temperature"] = 1.0 if temperature is None else temperature
    seed = _opt_int(fields, "seed")
    if seed is not None:
        options["seed"] = seed
    for key in ("frequency_penalty", "presence_penalty"):
        value = fields.opt_float(key)
        if value is not None:
            options[key] = value
    top_p = fields.opt_float("top_p")
    options["top_p"] = 1.0 if top_p is None else top_p

    reasoning = fields.object("reasoning", "openai.Reasoning")
    effort = reasoning.str("effort") if reasoning is not None else fields.str("reasoning_effort")
    think = think_from_effort(effort)

    stream = fields.bool("stream")
    native: dict[str, Any] = {"model": fields.str("model"), "messages": native_messages, "stream": stream, "options": options}
    response_format = _format(fields)
    if response_format is not None:
        native["format"] = response_format
    tools = fields.list("tools", "[]api.Tool")
    for tool in tools:
        if not isinstance(tool, dict):
            raise mismatch(fields.struct, "tools", tool, "api.Tool")
    if tools:
        native["tools"] = tools
    if think is not None:
        native["think"] = think
    if fields.bool("logprobs"):
        native["logprobs"] = True
    top_logprobs = fields.int("top_logprobs")
    if top_logprobs:
        native["top_logprobs"] = top_logprobs
    if fields.bool("_debug_render_only"):
        native["_debug_render_only"] = True
    return Translated(native, native["model"], stream, _include_usage(fields))


def completion_request(fields: Fields) -> Translated:
    """``POST /v1/completions`` -> ``/api/generate``, one native request per prompt (the native body holds the
    first; ``prompts`` all of them). ``echo`` or token-id prompts make them ``raw`` (no template, the caller's
    own text or tokens are scored). Ollama reads one string prompt and ignores ``echo``."""
    prompts = parse_prompts(fields.raw("prompt"))
    echo = fields.bool("echo")
    tokenized = any(not isinstance(p, str) for p in prompts)
    options: dict[str, Any] = {}
    stop = _stop(fields.raw("stop"), strict=True)
    if stop is not None:
        options["stop"] = stop
    max_tokens = _opt_int(fields, "max_tokens")
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    temperature = fields.opt_float("temperature", "float32")
    options["temperature"] = 1.0 if temperature is None else temperature
    seed = _opt_int(fields, "seed")
    if seed is not None:
        options["seed"] = seed
    # non-pointer float32 fields in Ollama's struct: always sent, 0 when absent; top_p 0 means 1
    options["frequency_penalty"] = fields.opt_float("frequency_penalty", "float32") or 0.0
    options["presence_penalty"] = fields.opt_float("presence_penalty", "float32") or 0.0
    options["top_p"] = fields.opt_float("top_p", "float32") or 1.0

    stream = fields.bool("stream")
    first = prompts[0] if isinstance(prompts[0], str) else ""
    native: dict[str, Any] = {"model": fields.str("model"), "prompt": first, "stream": stream, "options": options}
    suffix = fields.str("suffix")
    if suffix and (echo or tokenized):
        raise BadRequest("suffix is not supported with echo or token-id prompts")
    if suffix:
        native["suffix"] = suffix
    if echo or tokenized:
        native["raw"] = True
    logprobs = _opt_int(fields, "logprobs")
    if logprobs is not None and logprobs > 0:
        native["logprobs"] = True
        native["top_logprobs"] = logprobs
    if fields.bool("_debug_render_only"):
        native["_debug_render_only"] = True
    return Translated(native, native["model"], stream, _include_usage(fields), prompts=prompts, echo=echo)


def embed_request(fields: Fields) -> Translated:
    """``POST /v1/embeddings`` -> ``/api/embed``; ``input: ""`` is one empty input, null or ``[]`` is refused."""
    encoding_format = fields.str("encoding_format")
    if encoding_format and encoding_format.lower() not in ("float", "base64"):
        raise BadRequest(
            f"Invalid value for 'encoding_format' = {encoding_format}. Supported values: ['float', 'base64']."
        )
    value = fields.raw("input")
    if value == "":
        value = [""]
    if value is None or value == []:
        raise BadRequest("invalid input")
    model = fields.str("model")
    native: dict[str, Any] = {"model": model, "input": value}
    dimensions = fields.int("dimensions")
    if dimensions:
        native["dimensions"] = dimensions
    return Translated(native, model, encoding_format=encoding_format.lower())
