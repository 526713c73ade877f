"""Tool calls as Ollama puts them on the wire, and the rules that turn a decoded JSON value into one.

The wire form (``api.ToolCall`` in Ollama's ``api/types.go``; ids from ``toolCallId()`` in
``server/routes.go``)::

    {"id": "call_k3j2h1g0", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}}}

``index`` counts the calls of one response from 0; ``arguments`` is always a JSON object whose key order
is the model's.  :func:`resolve_call` decides whether a decoded value *is* a call to one of the offered
tools; the parser calls it for every JSON value inside a tool-call block.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from typing import Any, TypedDict

from ..errors import OllamaError
from .jsonscan import loads

__all__ = [
    "CallShapeError",
    "ToolCall",
    "ToolCallFunction",
    "ToolCallParseError",
    "make_tool_call",
    "new_call_id",
    "resolve_call",
]

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class ToolCallFunction(TypedDict):
    index: int
    name: str
    arguments: dict[str, Any]


class ToolCall(TypedDict):
    id: str
    function: ToolCallFunction


class ToolCallParseError(OllamaError):
    """A clear tool-call block that could not be parsed, in the words of Ollama's builtin parsers.

    Only raised by a parser built with ``strict=True``; by default the block's text is returned as
    content instead (see :mod:`ollama_torch.tools.parser`). ``content`` and ``calls`` are what the
    failing ``add()``/``finish()`` had parsed before the failure: send them, then the error.
    """

    status = 500

    def __init__(self, raw: str, err: str, *, content: str = "", calls: list[ToolCall] | None = None) -> None:
        super().__init__(f"error parsing tool call: raw='{raw}', err={err}")
        self.raw = raw
        self.err = err
        self.content = content
        self.calls: list[ToolCall] = calls or []


class CallShapeError(ValueError):
    """A decoded JSON value that is not a call to one of the offered tools; the message says why."""


def new_call_id() -> str:
    """``call_`` and 8 characters of ``[a-z0-9]``, as Ollama's ``toolCallId()``."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def make_tool_call(index: int, name: str, arguments: dict[str, Any], call_id: str | None = None) -> ToolCall:
    return {
        "id": call_id if call_id is not None else new_call_id(),
        "function": {"index": index, "name": name, "arguments": arguments},
    }


def resolve_call(
    value: Any, tool_names: Collection[str], *, require_arguments: bool
) -> tuple[str, dict[str, Any]]:
    """The ``(name, arguments)`` a decoded JSON value calls, or :class:`CallShapeError`.

    Accepted shapes, in this order:

    1. ``{"name": <tool>, "arguments" | "parameters": {...}}``: Hermes/Qwen, Mistral, Llama 3.x. The
       arguments may also be a JSON *string* holding an object (as OpenAI sends them), or ``null`` /
       ``""`` for none. Without an arguments key the call has no arguments, unless
       ``require_arguments`` (bare JSON output, where only the full shape marks a call; this matches
       Ollama, which treats ``{"name": "get_temperature"}`` as content).
    2. ``{"function": {...}}`` (OpenAI's ``{"type": "function", "function": ...}``): shape 1 inside.
    3. ``{<tool>: {...}}``: a key equal to a tool name, as Ollama's ``findArguments`` accepts.
    """
    if not isinstance(value, dict):
        raise CallShapeError(f"expected a JSON object, got {type(value).__name__}")
    if "name" in value:
        name = value["name"]
        if not isinstance(name, str):
            raise CallShapeError("tool name must be a string")
        if name not in tool_names:
            raise CallShapeError(f"unknown tool {name!r}")
        for key in ("arguments", "parameters"):
            if key in value:
                args = _as_arguments(value[key], allow_empty=True)
                if args is None:
                    raise CallShapeError(f"{key!r} of {name!r} must be a JSON object")
                return name, args
        if require_arguments:
            raise CallShapeError(f"no arguments for {name!r}")
        return name, {}
    function = value.get("function")
    if isinstance(function, dict):
        return resolve_call(function, tool_names, require_arguments=require_arguments)
    for key, v in value.items():
        if key in tool_names:
            args = _as_arguments(v, allow_empty=False)
            if args is not None:
                return key, args
    raise CallShapeError("no tool name found")


def _as_arguments(value: Any, *, allow_empty: bool) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if allow_empty and (value is None or value == ""):
        return {}
    if isinstance(value, str):
        try:
            decoded = loads(value)
        except (ValueError, RecursionError):
            return None
        return decoded if isinstance(decoded, dict) else None
    return None
