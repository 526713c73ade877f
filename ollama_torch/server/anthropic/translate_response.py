"""The engine's typed chunks -> Anthropic's Messages answers: the SSE event sequence (Ollama's
``anthropic.StreamConverter``), the one-object message (the same events folded, as the SDK accumulates
them), and the error shape.

The stream: ``message_start`` (with the first chunk), then per block ``content_block_start``, its
``content_block_delta``s (``thinking_delta``, ``text_delta``, one ``input_json_delta`` per tool call) and
``content_block_stop``; a block closes when a chunk of another kind arrives; then ``message_delta`` (the
stop reason, the final usage) and ``message_stop``. An error after ``message_start`` is an ``error`` event.

Beyond Ollama: ``stop_reason`` is ``stop_sequence`` with ``stop_sequence`` set when one of the request's
``stop_sequences`` ended the output (Ollama answers ``end_turn``); usage splits the prompt as Anthropic
does, ``input_tokens`` (evaluated) plus ``cache_read_input_tokens`` (served from the prefix cache), and
``message_delta`` carries the final counts (``message_start`` has Ollama's estimate); thinking blocks carry
an empty ``signature`` (the SDK's ``ThinkingBlock`` requires the field; there is nothing to sign).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from ...engine.api import Chunk, Content, Done, Thinking, ToolCalls

Event = tuple[str, dict[str, Any]]  # (the SSE event name, its data: the same ``type``)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def new_id(prefix: str) -> str:
    """Ollama's ``generateID``: the prefix and 24 random hex digits."""
    return f"{prefix}_{secrets.token_hex(12)}"


def error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "api_error")


def error_body(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error (Ollama's ``NewError``): its ``type`` chosen by the HTTP status."""
    return {"type": "error", "error": {"type": error_type(status), "message": message}, "request_id": new_id("req")}


def stream_error(status: int, message: str) -> Event:
    """An error after the stream began, as Anthropic sends it (the SDK raises it as an ``APIStatusError``)."""
    return "error", {"type": "error", "error": {"type": error_type(status), "message": message}}


def sse(event: Event) -> bytes:
    name, data = event
    return f"event: {name}\ndata: ".encode() + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def usage(done: Done) -> dict[str, int]:
    """Anthropic's split of the prompt: evaluated, and read from the (prefix) cache; nothing is ever
    written to a cache the way Anthropic bills it."""
    stats = done.stats
    return {
        "input_tokens": max(0, stats.prompt_tokens - stats.cached_tokens),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": stats.cached_tokens,
        "output_tokens": stats.eval_count,
    }


class MessageStream:
    """Typed chunks in, Anthropic events out (``stream: true``; ``fold`` makes the ``stream: false`` answer)."""

    def __init__(self, message_id: str, model: str, estimated_input_tokens: int = 0,
                 stop_sequences: tuple[str, ...] = ()) -> None:
        self.id, self.model = message_id, model
        self.estimated_input_tokens = estimated_input_tokens
        self.stop_sequences = stop_sequences
        self.started = False
        self.open: str | None = None  # the kind of the block being written: "thinking" or "text"
        self.index = 0  # the index of the next block
        self.tool_used = False

    def feed(self, chunk: Chunk) -> list[Event]:
        events = self._start()
        if isinstance(chunk, Thinking) and chunk.text:
            events += self._delta("thinking", {"type": "thinking_delta", "thinking": chunk.text})
        elif isinstance(chunk, Content) and chunk.text:
            events += self._delta("text", {"type": "text_delta", "text": chunk.text})
        elif isinstance(chunk, ToolCalls):
            for call in chunk.calls:
                events += self._close()
                events.append(("content_block_start", {"type": "content_block_start", "index": self.index, "content_block": {
                    "type": "tool_use", "id": call.id or new_id("toolu"), "name": call.name, "input": {}}}))
                arguments = json.dumps(call.arguments, ensure_ascii=False, separators=(",", ":"))
                events.append(("content_block_delta", {"type": "content_block_delta", "index": self.index,
                                                       "delta": {"type": "input_json_delta", "partial_json": arguments}}))
                events.append(("content_block_stop", {"type": "content_block_stop", "index": self.index}))
                self.index += 1
                self.tool_used = True
        elif isinstance(chunk, Done):
            events += self._close()
            reason, sequence = self.stop_reason(chunk)
            events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
                                             "usage": usage(chunk)}))
            events.append(("message_stop", {"type": "message_stop"}))
        return events  # Logprobs: the Messages API has none

    def stop_reason(self, done: Done) -> tuple[str, str | None]:
        """Ollama's ``mapStopReason``, and ``stop_sequence`` when one of the request's stop strings ended it."""
        if self.tool_used:
            return "tool_use", None
        if done.reason == "length":
            return "max_tokens", None
        if done.stop_sequence and done.stop_sequence in self.stop_sequences:
            return "stop_sequence", done.stop_sequence
        return "end_turn", None

    def _start(self) -> list[Event]:
        if self.started:
            return []
        self.started = True
        message: dict[str, Any] = {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                   "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": self.estimated_input_tokens, "output_tokens": 0}}
        return [("message_start", {"type": "message_start", "message": message})]

    def _delta(self, kind: str, delta: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        if self.open != kind:
            events += self._close()
            block: dict[str, Any] = {"type": "text", "text": ""} if kind == "text" else {"type": "thinking", "thinking": "", "signature": ""}
            events.append(("content_block_start", {"type": "content_block_start", "index": self.index, "content_block": block}))
            self.open = kind
        events.append(("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta}))
        return events

    def _close(self) -> list[Event]:
        if self.open is None:
            return []
        self.open = None
        self.index += 1
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index - 1})]


def fold(events: list[Event]) -> dict[str, Any]:
    """The events of one message as the one ``message`` object (how the SDK accumulates a stream)."""
    message: dict[str, Any] = {}
    for _, data in events:
        kind = data["type"]
        if kind == "message_start":
            message = {**data["message"], "content": [], "usage": dict(data["message"]["usage"])}
        elif kind == "content_block_start":
            message["content"].append(dict(data["content_block"]))
        elif kind == "content_block_delta":
            block, delta = message["content"][data["index"]], data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "input_json_delta":
                block["input"] = json.loads(delta["partial_json"])
        elif kind == "message_delta":
            message.update(data["delta"])
            message["usage"] = dict(data["usage"])
    return message
