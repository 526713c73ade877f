"""The engine's typed chunks -> OpenAI Responses answers: the streaming events (Ollama's
``ResponsesStreamConverter``) and the response object (``ToResponse``), which for ``stream: false`` is the
object the stream's last event carries, so both answers always agree.

The stream: ``response.created``, ``response.in_progress``; per output item ``response.output_item.added``,
its deltas, ``response.output_item.done``: a reasoning item (``reasoning_summary_text`` deltas; the
thinking also in ``encrypted_content``, which Ollama reads back as the next turn's thinking), a message
(``content_part.added``, ``output_text.delta``s, ``output_text.done``, ``content_part.done``), one
``function_call`` item per tool call (``function_call_arguments.delta``/``.done``); then
``response.completed``. Every event has its ``sequence_number``.

Beyond Ollama: the reasoning summary part has its ``reasoning_summary_part.added``/``.done`` events (as
OpenAI sends them); text before a tool call is its own message item, closed before the call's item opens
(Ollama gives both the same ``output_index``, which the SDK's stream accumulator refuses), and text after
it is kept (Ollama drops it); a generation cut by ``max_output_tokens`` ends ``incomplete``
(``response.incomplete``, ``incomplete_details.reason: max_output_tokens``; Ollama says ``completed``);
usage counts the whole prompt with the prefix-cache hits in ``input_tokens_details.cached_tokens``; an
error after the stream began is a ``response.failed`` event.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from ...engine.api import Chunk, Content, Done, Thinking, ToolCall, ToolCalls

Event = tuple[str, dict[str, Any]]  # (the SSE event name, its data: the same ``type``)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def sse(event: Event) -> bytes:
    name, data = event
    return f"event: {name}\ndata: ".encode() + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def usage(done: Done) -> dict[str, Any]:
    stats = done.stats
    return {
        "input_tokens": stats.prompt_tokens,
        "input_tokens_details": {"cached_tokens": stats.cached_tokens},
        "output_tokens": stats.eval_count,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": stats.prompt_tokens + stats.eval_count,
    }


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any, default: float) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def response_object(response_id: str, model: str, request: dict[str, Any], *, status: str, output: list[dict[str, Any]],
                    created_at: int, usage: dict[str, Any] | None = None, completed_at: int | None = None,
                    error: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``response`` (Ollama's ``ToResponse``/``buildResponseObject``): the output so far, and the
    request's settings echoed (defaults where it gave none)."""
    text = _dict(request.get("text"))
    fmt = _dict(text.get("format")) or {"type": "text"}
    reasoning = _dict(request.get("reasoning"))
    effort, summary = reasoning.get("effort") or None, reasoning.get("summary") or None
    instructions = request.get("instructions") or None
    tools = request.get("tools") if isinstance(request.get("tools"), list) else []
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": completed_at,
        "status": status,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": model,
        "previous_response_id": None,  # responses are not stored
        "instructions": instructions if isinstance(instructions, str) else None,
        "output": output,
        "error": error,
        "tools": tools,
        "tool_choice": request.get("tool_choice") if request.get("tool_choice") is not None else "auto",
        "truncation": request.get("truncation") if isinstance(request.get("truncation"), str) else "disabled",
        "parallel_tool_calls": True,
        "text": {"format": fmt},
        "top_p": _number(request.get("top_p"), 1.0),
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "top_logprobs": 0,
        "temperature": _number(request.get("temperature"), 1.0),
        "reasoning": {"effort": effort, "summary": summary} if effort or summary else None,
        "usage": usage,
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": None,
        "store": False,
        "background": request.get("background") is True,
        "service_tier": "default",
        "metadata": {},
        "safety_identifier": None,
        "prompt_cache_key": None,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


class ResponseStream:
    """Typed chunks in, Responses events out; ``final`` is the last response object (``stream: false``)."""

    def __init__(self, response_id: str, model: str, request: dict[str, Any]) -> None:
        self.id, self.model, self.request = response_id, model, request
        self.created_at = int(time.time())
        self.sequence = 0
        self.started = False
        self.output: list[dict[str, Any]] = []  # the finished items
        self.open: str | None = None  # "reasoning" or "message": the item being written
        self.item_id = ""
        self.text = ""  # of the open item
        self.final: dict[str, Any] | None = None

    def _event(self, kind: str, **data: Any) -> Event:
        event = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return kind, event

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(self.id, self.model, self.request, status=status, output=list(self.output),
                               created_at=self.created_at, **extra)

    def feed(self, chunk: Chunk) -> list[Event]:
        events = self._start()
        if isinstance(chunk, Thinking) and chunk.text:
            events += self._reasoning(chunk.text)
        elif isinstance(chunk, Content) and chunk.text:
            events += self._message(chunk.text)
        elif isinstance(chunk, ToolCalls):
            events += self._close()
            for call in chunk.calls:
                events += self._function_call(call)
        elif isinstance(chunk, Done):
            incomplete = chunk.reason == "length"
            events += self._close("incomplete" if incomplete else "completed")
            status = "incomplete" if incomplete else "completed"
            self.final = self._response(status, usage=usage(chunk), completed_at=int(time.time()))
            events.append(self._event(f"response.{status}", response=self.final))
        return events  # Logprobs: not sent (Ollama sends none either)

    def answer(self) -> dict[str, Any]:
        """The ``stream: false`` answer: the final response, with an empty message when the model said nothing
        and called nothing (Ollama's ``ToResponse`` always answers a message then; its stream, like ours, has
        no item for it)."""
        assert self.final is not None, "the engine's chunks end with Done"
        if any(item["type"] in ("message", "function_call") for item in self.final["output"]):
            return self.final
        status = "incomplete" if self.final["status"] == "incomplete" else "completed"
        empty = {"id": new_id("msg"), "type": "message", "status": status, "role": "assistant", "content": [_text_part("")]}
        return {**self.final, "output": [*self.final["output"], empty]}

    def failed(self, message: str) -> list[Event]:
        """The stream's end after an error: the open item finished, the output so far, ``status: failed``."""
        events = self._close("incomplete")
        self.final = self._response("failed", error={"code": "server_error", "message": message})
        return [*events, self._event("response.failed", response=self.final)]

    # -- items ---------------------------------------------------------------------------------------------
    def _start(self) -> list[Event]:
        if self.started:
            return []
        self.started = True
        return [self._event("response.created", response=self._response("in_progress")),
                self._event("response.in_progress", response=self._response("in_progress"))]

    def _reasoning(self, text: str) -> list[Event]:
        events: list[Event] = self._close() if self.open != "reasoning" else []
        index = len(self.output)  # the open item's place: after every finished one
        if self.open != "reasoning":
            self.open, self.item_id, self.text = "reasoning", new_id("rs"), ""
            events.append(self._event("response.output_item.added", output_index=index,
                                      item={"id": self.item_id, "type": "reasoning", "summary": []}))
            events.append(self._event("response.reasoning_summary_part.added", item_id=self.item_id, output_index=index,
                                      summary_index=0, part={"type": "summary_text", "text": ""}))
        self.text += text
        events.append(self._event("response.reasoning_summary_text.delta", item_id=self.item_id, output_index=index,
                                  summary_index=0, delta=text))
        return events

    def _message(self, text: str) -> list[Event]:
        events: list[Event] = self._close() if self.open != "message" else []
        index = len(self.output)  # the open item's place: after every finished one
        if self.open != "message":
            self.open, self.item_id, self.text = "message", new_id("msg"), ""
            events.append(self._event("response.output_item.added", output_index=index, item={
                "id": self.item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}))
            events.append(self._event("response.content_part.added", item_id=self.item_id, output_index=index,
                                      content_index=0, part=_text_part("")))
        self.text += text
        events.append(self._event("response.output_text.delta", item_id=self.item_id, output_index=index,
                                  content_index=0, delta=text, logprobs=[]))
        return events

    def _function_call(self, call: ToolCall) -> list[Event]:
        index = len(self.output)
        arguments = json.dumps(call.arguments, ensure_ascii=False, separators=(",", ":"))
        item = {"id": new_id("fc"), "type": "function_call", "status": "completed", "call_id": call.id or new_id("call"),
                "name": call.name, "arguments": arguments}
        self.output.append(item)
        return [
            self._event("response.output_item.added", output_index=index, item={**item, "status": "in_progress", "arguments": ""}),
            self._event("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=arguments),
            self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index, arguments=arguments),
            self._event("response.output_item.done", output_index=index, item=item),
        ]

    def _close(self, status: str = "completed") -> list[Event]:
        """Finish the open item (``status``: a message cut by ``max_output_tokens`` is ``incomplete``)."""
        index, item_id, text = len(self.output), self.item_id, self.text
        if self.open == "reasoning":
            item: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": text}],
                                    "encrypted_content": text}
            events = [
                self._event("response.reasoning_summary_text.done", item_id=item_id, output_index=index, summary_index=0, text=text),
                self._event("response.reasoning_summary_part.done", item_id=item_id, output_index=index, summary_index=0,
                            part={"type": "summary_text", "text": text}),
            ]
        elif self.open == "message":
            item = {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": [_text_part(text)]}
            events = [
                self._event("response.output_text.done", item_id=item_id, output_index=index, content_index=0, text=text, logprobs=[]),
                self._event("response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=_text_part(text)),
            ]
        else:
            return []
        self.open = None
        self.output.append(item)
        events.append(self._event("response.output_item.done", output_index=index, item=item))
        return events
