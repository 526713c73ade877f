"""Native answers -> OpenAI answers: Ollama's ``ToChatCompletion``, ``ToStreamChunks``/``FinishChunk`` and its
``ChatWriter`` stream rules, ``ToCompletion``/``ToCompleteChunk``, ``ToListCompletion``, ``ToModel``,
``ToEmbeddingList`` and ``NewError``.

Pure functions and two small state machines over decoded JSON (no aiohttp), table-tested with the cases
of Ollama's ``openai_test.go`` and ``middleware/openai_test.go``. Dicts are built in the field order of
Ollama's Go structs, with the same ``omitempty`` choices, so the JSON reads the same.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

from ...names import ModelName

FINGERPRINT = "fp_ollama"
DONE = "[DONE]"  # the last SSE data frame of every successful stream

Frame = dict[str, Any] | str  # one SSE ``data:`` payload: a JSON object, or DONE

_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error"}


def dumps(obj: Any) -> bytes:
    """Compact JSON, as Go's encoder writes it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def sse(frame: Frame) -> bytes:
    """One server-sent event: ``data: <payload>`` and a blank line."""
    payload = frame.encode() if isinstance(frame, str) else dumps(frame)
    return b"data: " + payload + b"\n\n"


def error_body(status: int, message: str) -> dict[str, Any]:
    """``NewError``: the OpenAI envelope, its ``type`` chosen by the HTTP status."""
    return {"error": {"message": message, "type": _ERROR_TYPES.get(status, "api_error"), "param": None, "code": None}}


def unix_time(text: Any, default: int | None = None) -> int:
    """Seconds since the epoch of an RFC 3339 timestamp (Go's ``Time.Unix``); ``default`` (or now) when the
    value is missing, malformed or Go's zero time."""
    fallback = int(time.time()) if default is None else default
    match = _RFC3339.match(text) if isinstance(text, str) else None
    if match is None or match[1].startswith("0001-"):
        return fallback
    offset = "+00:00" if match[2] == "Z" else match[2]
    return int(datetime.fromisoformat(match[1] + offset).timestamp())


def usage(native: dict[str, Any]) -> dict[str, int]:
    """Ollama's ``toUsage``: the native counts (``prompt_eval_count`` is what was evaluated)."""
    prompt, completion = int(native.get("prompt_eval_count", 0)), int(native.get("eval_count", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def token_usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    """OpenAI's usage: the whole prompt (Ollama reports only what was evaluated after a prefix-cache hit),
    and the part the cache served in ``prompt_tokens_details.cached_tokens``, as OpenAI always sends it."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens, "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def tool_calls_to_openai(calls: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Native tool calls -> OpenAI ones: ``arguments`` becomes a compact JSON string, ``index`` is the
    native ``function.index``."""
    out = []
    for call in calls:
        function = call.get("function", {})
        out.append({
            "id": call.get("id", ""),
            "index": function.get("index", 0),
            "type": "function",
            "function": {"name": function.get("name", ""), "arguments": dumps(function.get("arguments", {})).decode()},
        })
    return out


def _logprobs(native: dict[str, Any]) -> dict[str, Any] | None:
    entries = native.get("logprobs")
    return {"content": entries} if entries else None


# -- chat ---------------------------------------------------------------------------------------------------
def chat_completion(completion_id: str, native: dict[str, Any], counted: dict[str, Any] | None = None) -> dict[str, Any]:
    """A folded (``stream:false``) native chat answer as a ``chat.completion``; ``counted`` is the usage when
    the engine's counts are known (``token_usage``), else it is read off the native answer."""
    message = native.get("message", {})
    calls = tool_calls_to_openai(message.get("tool_calls", []))
    reason: str | None = native.get("done_reason") or None
    if reason == "stop" and calls:
        reason = "tool_calls"
    out_message: dict[str, Any] = {"role": message.get("role", ""), "content": message.get("content", "")}
    if message.get("thinking"):
        out_message["reasoning"] = message["thinking"]
    if calls:
        out_message["tool_calls"] = calls
    choice: dict[str, Any] = {"index": 0, "message": out_message, "finish_reason": reason}
    logprobs = _logprobs(native)
    if logprobs:
        choice["logprobs"] = logprobs
    out = {
        "id": completion_id,
        "object": "chat.completion",
        "created": unix_time(native.get("created_at")),
        "model": native.get("model", ""),
        "system_fingerprint": FINGERPRINT,
        "choices": [choice],
        "usage": counted or usage(native),
    }
    if native.get("_debug_info"):
        out["_debug_info"] = native["_debug_info"]
    return out


def _chunk(completion_id: str, native: dict[str, Any], created: int, delta: dict[str, Any], logprobs: Any = None,
           finish_reason: str | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    if logprobs:
        choice["logprobs"] = logprobs
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": native.get("model", ""),
        "system_fingerprint": FINGERPRINT,
        "choices": [choice],
    }


def stream_chunks(completion_id: str, native: dict[str, Any], include_role: bool, created: int) -> list[dict[str, Any]]:
    """``ToStreamChunks``: one chunk per native line, or two when it carries thinking *and* content or tool
    calls (reasoning first, with the role and the logprobs; then content/tool calls). ``content`` is always
    present (``""`` included) except in the reasoning half of a split."""
    message = native.get("message", {})
    content, thinking = message.get("content", ""), message.get("thinking", "")
    calls = tool_calls_to_openai(message.get("tool_calls", []))
    role = {"role": "assistant"} if include_role else {}
    logprobs = _logprobs(native)
    if not (thinking and (content or calls)):
        delta: dict[str, Any] = {**role, "content": content}
        if thinking:
            delta["reasoning"] = thinking
        if calls:
            delta["tool_calls"] = calls
        return [_chunk(completion_id, native, created, delta, logprobs)]
    reasoning = _chunk(completion_id, native, created, {**role, "reasoning": thinking}, logprobs)
    rest: dict[str, Any] = {"content": content}
    if calls:
        rest["tool_calls"] = calls
    return [reasoning, _chunk(completion_id, native, created, rest)]


def finish_chunk(completion_id: str, native: dict[str, Any], tool_call_sent: bool, created: int) -> dict[str, Any]:
    """``FinishChunk``: an empty delta with the finish reason; only ``stop`` becomes ``tool_calls``."""
    reason = native.get("done_reason") or "stop"
    if reason == "stop" and tool_call_sent:
        reason = "tool_calls"
    return _chunk(completion_id, native, created, {}, finish_reason=reason)


def stream_error(message: str) -> dict[str, Any]:
    """An error after the stream began. Ollama's writer drops it (it decodes the error line as an empty
    chunk); we send the OpenAI error object, which the official SDKs raise as ``APIError``."""
    return error_body(500, message)


class ChatStream:
    """``ChatWriter`` for ``stream:true``: native NDJSON lines in, SSE frames out.

    Role only on the first chunk; one ``created`` (the first line's) for the whole stream; the metrics-only
    trailer is not sent as an empty content chunk (unless nothing was sent yet); then a dedicated finish
    chunk, the usage chunk (``choices: []``) when ``stream_options.include_usage``, and ``[DONE]``.
    """

    def __init__(self, completion_id: str, include_usage: bool = False) -> None:
        self.id = completion_id
        self.include_usage = include_usage
        self.created: int | None = None
        self.first_sent = False
        self.tool_call_sent = False
        self.finished = False
        self.counted: dict[str, Any] | None = None  # the engine's usage, set before the last line

    def feed(self, native: dict[str, Any]) -> list[Frame]:
        if "error" in native:
            self.finished = True
            return [stream_error(str(native["error"]))]
        if self.created is None:
            self.created = unix_time(native.get("created_at"))
        message = native.get("message", {})
        done = bool(native.get("done"))
        trailer = done and self.first_sent and not (
            message.get("content") or message.get("thinking") or message.get("tool_calls") or native.get("logprobs")
        )
        frames: list[Frame] = []
        if not trailer:
            for chunk in stream_chunks(self.id, native, not self.first_sent, self.created):
                if chunk["choices"][0]["delta"].get("tool_calls"):
                    self.tool_call_sent = True
                frames.append(chunk)
            self.first_sent = True
        if done:
            finish = finish_chunk(self.id, native, self.tool_call_sent, self.created)
            frames.append(finish)
            if self.include_usage:
                frames.append({**finish, "choices": [], "usage": self.counted or usage(native)})
            frames.append(DONE)
            self.finished = True
        return frames


# -- completions --------------------------------------------------------------------------------------------
def _completion_choice(native: dict[str, Any], offset: int = 0, index: int = 0) -> dict[str, Any]:
    choice = {"text": native.get("response", ""), "index": index, "finish_reason": native.get("done_reason") or None}
    logprobs = completion_logprobs(native.get("logprobs") or [], offset)  # Ollama drops them here; we pass them on
    if logprobs:
        choice["logprobs"] = logprobs
    return choice


def completion_logprobs(entries: list[dict[str, Any]], offset: int = 0) -> dict[str, Any] | None:
    """Native entries in the legacy completions shape (``tokens``, ``token_logprobs``, ``top_logprobs`` as
    token -> logprob maps, ``text_offset`` in characters from the start of the completion). An entry whose
    ``logprob`` is None (an echoed prompt's first token, which nothing precedes) has ``null`` alternatives,
    as OpenAI wrote it."""
    if not entries:
        return None
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e.get("token", ""))
    out: dict[str, Any] = {
        "tokens": [e.get("token", "") for e in entries],
        "token_logprobs": [e.get("logprob") for e in entries],
        "top_logprobs": [
            None if e.get("logprob") is None else {t.get("token", ""): t.get("logprob") for t in e.get("top_logprobs", ())}
            for e in entries
        ],
        "text_offset": offsets,
    }
    return out


def completion(completion_id: str, native: dict[str, Any], counted: dict[str, Any] | None = None) -> dict[str, Any]:
    """``ToCompletion``: a folded native generate answer as a ``text_completion`` (``counted``: as for chat)."""
    return completion_choices(completion_id, [native], counted)


def completion_choices(completion_id: str, natives: Sequence[dict[str, Any]], counted: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``text_completion`` for several prompts: one folded native answer per prompt, in prompt order, each
    a choice with its ``index``; ``counted`` is the usage of all of them (else the natives' counts, added)."""
    first = natives[0]
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": unix_time(first.get("created_at")),
        "model": first.get("model", ""),
        "system_fingerprint": FINGERPRINT,
        "choices": [_completion_choice(native, 0, i) for i, native in enumerate(natives)],
        "usage": counted or add_usage([usage(n) for n in natives]),
    }


def add_usage(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The usage of several generations: counts added, ``prompt_tokens_details`` when any part has it."""
    total: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    cached = [p["prompt_tokens_details"]["cached_tokens"] for p in parts if "prompt_tokens_details" in p]
    for part in parts:
        for key in total:
            total[key] += int(part.get(key, 0))
    if cached:
        total["prompt_tokens_details"] = {"cached_tokens": sum(cached)}
    return total


class CompletionStream:
    """``CompleteWriter`` for ``stream:true``: every native line is one chunk (stamped now, as Ollama does),
    its choice numbered by its prompt (``index``: the lines of several prompts come interleaved); with
    ``include_usage`` each chunk carries a zero usage and the end adds a usage chunk; once every prompt is
    done, ``[DONE]``."""

    def __init__(self, completion_id: str, include_usage: bool = False, prompts: int = 1) -> None:
        self.id = completion_id
        self.include_usage = include_usage
        self.finished = False
        self.offsets = [0] * prompts  # characters sent so far per choice (``text_offset`` of the logprobs)
        self.usages: list[dict[str, Any] | None] = [None] * prompts  # each prompt's native counts, once done
        self.counted: dict[str, Any] | None = None  # the engine's usage of all prompts, set before the last line

    def feed(self, native: dict[str, Any], now: int | None = None, index: int = 0) -> list[Frame]:
        if "error" in native:
            self.finished = True
            return [stream_error(str(native["error"]))]
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "text_completion",
            "created": int(time.time()) if now is None else now,
            "choices": [_completion_choice(native, self.offsets[index], index)],
            "model": native.get("model", ""),
            "system_fingerprint": FINGERPRINT,
        }
        self.offsets[index] += sum(len(e.get("token", "")) for e in native.get("logprobs") or ())
        if self.include_usage:
            chunk["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        frames: list[Frame] = [chunk]
        if native.get("done"):
            self.usages[index] = usage(native)
        if native.get("done") and all(u is not None for u in self.usages):
            if self.include_usage:
                total = self.counted or add_usage([u for u in self.usages if u is not None])
                frames.append({**chunk, "choices": [], "usage": total})
            frames.append(DONE)
            self.finished = True
        return frames


# -- models and embeddings ------------------------------------------------------------------------------------
def owned_by(model: str) -> str:
    """The namespace of the name, Ollama's defaults filled in (``library`` for a bare name)."""
    return ModelName.parse(model).namespace


def model_list(tags: dict[str, Any]) -> dict[str, Any]:
    """``ToListCompletion``. Ollama answers ``"data": null`` when no model exists (a Go nil slice); we answer
    ``[]``, which is what OpenAI's schema and every client expect."""
    data = []
    for entry in tags.get("models") or []:
        model_id = entry.get("model") or entry.get("name", "")
        data.append({"id": model_id, "object": "model", "created": unix_time(entry.get("modified_at"), 0), "owned_by": owned_by(model_id)})
    return {"object": "list", "data": data}


def model(show: dict[str, Any], name: str) -> dict[str, Any]:
    """``ToModel``: the id is the name as the client gave it."""
    return {"id": name, "object": "model", "created": unix_time(show.get("modified_at"), 0), "owned_by": owned_by(name)}


def floats_to_base64(values: Sequence[float]) -> str:
    """Little-endian float32s, base64-encoded (OpenAI's ``encoding_format: base64``)."""
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


def embedding_list(model_name: str, native: dict[str, Any], encoding_format: str = "") -> dict[str, Any]:
    """``ToEmbeddingList``; ``encoding_format`` other than ``base64`` (any case) means floats."""
    as_base64 = encoding_format.lower() == "base64"
    vectors = native.get("embeddings")  # a list, a float32 array (the server's), or null
    data = [
        {"object": "embedding", "embedding": floats_to_base64(vec) if as_base64 else vec, "index": i}
        for i, vec in enumerate([] if vectors is None else vectors)
    ]
    tokens = int(native.get("prompt_eval_count", 0))
    return {"object": "list", "data": data, "model": model_name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
