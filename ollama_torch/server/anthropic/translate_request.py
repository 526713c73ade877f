"""Anthropic Messages request bodies -> native ``/api/chat`` bodies: Ollama's ``anthropic.FromMessagesRequest``
and the checks its ``AnthropicMessagesMiddleware`` makes first, plus what Ollama leaves out.

Pure functions over decoded JSON (no aiohttp, no I/O), table-tested against the cases of Ollama's
``middleware/anthropic_test.go`` and ``anthropic/anthropic_test.go``. Every error is a ``BadRequest``
with Ollama's text; the routes put it in Anthropic's error shape.

As Ollama: ``system`` (a string or text blocks) becomes the first message; a message's text blocks are
joined, its images (base64 sources only) and ``tool_use`` blocks go on the same native message, its
``tool_result`` blocks become ``tool`` messages (before the text of a user turn); ``thinking`` blocks are
the message's ``thinking``; ``max_tokens`` is ``num_predict``, ``stop_sequences`` ``stop``, and
``temperature``/``top_p``/``top_k`` pass through when a client sends them (the current SDK no longer does);
``thinking.type`` and ``output_config.effort`` choose ``think``. Beyond Ollama: ``tool_choice`` (Ollama
ignores it: ``none`` offers no tools; ``any`` requires a call, ``tool`` a call of the named tool, enforced
by the constrained tool-call grammar where the model's markup allows it), ``output_config.format`` (a JSON
schema) is ``format``, a tool result's tool name is found from its ``tool_use`` (templates that print
``.ToolName`` need it), and Anthropic's built-in web search tool is not offered to the model (there is
no search to run it: it is dropped, and logged).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from typing import Any

from ...errors import BadRequest
from ..decode import Fields, json_kind, mismatch

log = logging.getLogger(__name__)

PACKAGE = "anthropic"
MESSAGES = "MessagesRequest"
COUNT_TOKENS = "CountTokensRequest"
_BLOCK_STRINGS = ("type", "text", "id", "name", "tool_use_id", "thinking", "signature")
_EFFORTS = ("high", "medium", "low", "max")


@dataclass(frozen=True)
class Translated:
    """A native ``/api/chat`` body plus what the Anthropic side needs to shape the answer."""

    native: dict[str, Any]
    model: str
    stream: bool = False
    stop_sequences: tuple[str, ...] = ()
    estimated_input_tokens: int = 0  # for ``message_start``, before the engine has counted (Ollama's len/4)
    require_tool_call: bool = False  # ``tool_choice`` ``any`` or ``tool``: the answer starts with a call


# -- decoding: the types Go's encoding/json checks before any conversion -----------------------------------






def _block(raw: Any) -> Fields:
    """One ``ContentBlock``, its typed fields checked (``content`` may be anything, as in Go)."""
    if not isinstance(raw, dict):
        raise BadRequest(f"json: cannot unmarshal {json_kind(raw)} into Go value of type anthropic.ContentBlock")
    block = Fields(raw, "ContentBlock")
    for key in _BLOCK_STRINGS:
        block.str(key)
    block.dict("input", "api.ToolCallFunctionArguments")
    block.opt_bool("is_error")
    source = block.object("source", "anthropic.ImageSource")
    if source is not None:
        for key in ("type", "media_type", "data", "url"):
            source.str(key)
    return block


def _message(raw: Any, struct: str) -> tuple[str, list[Fields]]:
    """``MessageParam``: a role and its blocks (a string ``content`` is one text block)."""
    if not isinstance(raw, dict):
        raise BadRequest(
            f"json: cannot unmarshal {json_kind(raw)} into Go struct field {struct}.messages of type anthropic.MessageParam"
        )
    role = Fields(raw, "MessageParam").str("role")
    content = raw.get("content")
    if isinstance(content, str):
        return role, [Fields({"type": "text", "text": content}, "ContentBlock")]
    if content is None:
        return role, []
    if not isinstance(content, list):
        raise BadRequest(f"json: cannot unmarshal {json_kind(content)} into Go value of type []anthropic.ContentBlock")
    return role, [_block(b) for b in content]


def _tools(fields: Fields) -> list[Fields]:
    out = []
    for raw in fields.list("tools", "[]anthropic.Tool"):
        if not isinstance(raw, dict):
            raise mismatch(fields.struct, "tools", raw, "anthropic.Tool")
        tool = Fields(raw, f"{fields.struct}.tools")
        for key in ("type", "name", "description"):
            tool.str(key)
        tool.int("max_uses")
        out.append(tool)
    return out


# -- conversion ---------------------------------------------------------------------------------------------
def system_text(system: Any) -> str:
    """A string, or the text of its text blocks (joined as Ollama joins them: directly); other types are
    ignored, as Ollama's type switch ignores them."""
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "".join(
            b["text"] for b in system if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    return ""


def image_data(source: Fields | None) -> str:
    """A base64 image source, decoded and re-encoded (what ``/api/chat`` takes); URLs and files are refused."""
    if source is None:
        raise BadRequest("invalid image source")
    kind = source.str("type")
    if kind != "base64":
        raise BadRequest(f"invalid image source type: {kind}. Only base64 images are supported.")
    try:
        return base64.b64encode(base64.b64decode(source.str("data"), validate=True)).decode()
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"invalid base64 image data: {exc}") from None


def _tool_result_content(content: Any) -> tuple[str, list[str]]:
    """A ``tool_result``'s ``content``: a string, or text and image blocks (others skipped)."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        return "", []
    text, images = [], []
    for item in content:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "text" and isinstance(item.get("text"), str):
            text.append(item["text"])
        elif item.get("type") == "image":
            source = item.get("source")
            if not isinstance(source, dict):
                raise BadRequest("invalid tool_result image source")
            typed = {k: v for k, v in source.items() if k in ("type", "media_type", "data") and isinstance(v, str)}
            images.append(image_data(Fields(typed, "ImageSource")))
    return "".join(text), images


def _web_search_result_text(content: Any) -> str:
    """A ``web_search_tool_result`` from an earlier turn, as Ollama writes it for the model."""
    if isinstance(content, str):
        return content
    items = content if isinstance(content, list) else [content]
    lines = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "web_search_tool_result_error":
            code = item.get("error_code")
            return f"web_search_tool_result_error: {code}" if isinstance(code, str) and code else "web_search_tool_result_error"
        if item.get("type") == "web_search_result":
            lines.append(f"- {item.get('title', '')}: {item.get('url', '')}\n")
    return "".join(lines)


def _tool_call(block: Fields) -> dict[str, Any]:
    return {"id": block.str("id"), "function": {"name": block.str("name"), "arguments": block.dict("input")}}


def convert_message(role: str, blocks: list[Fields], tool_names: dict[str, str]) -> list[dict[str, Any]]:
    """One Anthropic message -> native messages (Ollama's ``convertMessage``). ``tool_names`` maps the ids
    of earlier ``tool_use`` blocks to their names, and learns this message's."""
    role = role.lower()
    text: list[str] = []
    images: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    thinking = ""
    for block in blocks:
        kind = block.str("type")
        if kind == "text":
            text.append(block.str("text"))
        elif kind == "image":
            images.append(image_data(block.object("source", "anthropic.ImageSource")))
        elif kind in ("tool_use", "server_tool_use"):
            if kind == "tool_use" and not block.str("id"):
                raise BadRequest("tool_use block missing required 'id' field")
            if kind == "tool_use" and not block.str("name"):
                raise BadRequest("tool_use block missing required 'name' field")
            calls.append(_tool_call(block))
            tool_names[block.str("id")] = block.str("name")
        elif kind in ("tool_result", "web_search_tool_result"):
            if kind == "tool_result":
                content, result_images = _tool_result_content(block.raw("content"))
            else:
                content, result_images = _web_search_result_text(block.raw("content")), []
            result: dict[str, Any] = {"role": "tool", "content": content}
            if result_images:
                result["images"] = result_images
            call_id = block.str("tool_use_id")
            if tool_names.get(call_id):
                result["tool_name"] = tool_names[call_id]
            if call_id:
                result["tool_call_id"] = call_id
            results.append(result)
        elif kind == "thinking":
            thinking = block.str("thinking")
        # redacted_thinking, document, search_result, ...: not something a local model can read; skipped
    out: list[dict[str, Any]] = []
    if role == "user":
        out += results  # a user turn answers the calls first, then says more
    if text or images or calls or thinking:
        message: dict[str, Any] = {"role": role, "content": "".join(text)}
        message.update({k: v for k, v in {"images": images, "tool_calls": calls, "thinking": thinking}.items() if v})
        out.append(message)
    if role != "user":
        out += results
    return out


def convert_tool(tool: Fields) -> dict[str, Any] | None:
    """An Anthropic tool as a native one; None for the built-in web search (nothing here can search)."""
    kind, name = tool.str("type"), tool.str("name")
    if kind.startswith("web_search"):
        log.warning("the %s tool is not offered to the model: ollama-torch has no web search", kind)
        return None
    schema = tool.raw("input_schema")
    if schema is not None and not isinstance(schema, dict):
        raise BadRequest(
            f'invalid input_schema for tool "{name}": json: cannot unmarshal {json_kind(schema)} '
            "into Go value of type api.ToolFunctionParameters"
        )
    function: dict[str, Any] = {"name": name, "description": tool.str("description"), "parameters": schema or {}}
    return {"type": "function", "function": function}


def choose_tools(tools: list[dict[str, Any]], choice: Fields | None) -> tuple[list[dict[str, Any]], bool]:
    """``tool_choice`` -> (the tools offered, whether a call is required): ``auto`` offers all, ``none`` none,
    ``any`` all with a call required, ``tool`` only the named one, called."""
    if choice is None:
        return tools, False
    kind = choice.str("type")
    choice.str("name")
    choice.opt_bool("disable_parallel_tool_use")
    if kind == "none":
        return [], False
    if kind == "tool":
        name = choice.str("name")
        chosen = [t for t in tools if t["function"]["name"] == name]
        if not chosen:
            raise BadRequest(f'tool_choice names the tool "{name}", which is not in tools')
        return chosen, True
    return tools, kind == "any" and bool(tools)


def think_value(thinking: Fields | None, output_config: Fields | None) -> bool | str | None:
    """``thinking.type`` (enabled/disabled; ``adaptive`` leaves the model's default), else
    ``output_config.effort`` as a level (``xhigh`` is ``high``, as in Ollama)."""
    if thinking is not None:
        thinking.int("budget_tokens")
        kind = thinking.str("type")
        if kind == "enabled":
            return True
        if kind == "disabled":
            return False
    effort = output_config.str("effort").strip().lower() if output_config is not None else ""
    effort = "high" if effort == "xhigh" else effort
    return effort if effort in _EFFORTS else None


def output_format(output_config: Fields | None) -> Any:
    """``output_config.format`` ``{"type": "json_schema", "schema": ...}`` as the native ``format``."""
    if output_config is None:
        return None
    fmt = output_config.object("format", "anthropic.OutputFormat")
    if fmt is None or fmt.str("type") != "json_schema":
        return None
    return fmt.raw("schema")


def estimate_tokens(system: Any, messages: list[tuple[str, list[Fields]]], tools: list[Fields]) -> int:
    """Ollama's ``EstimateCountTokens``: a quarter of the characters (at least 1), for ``message_start``
    before the engine has counted; the final count comes in ``message_delta``."""
    total = len(system_text(system)) if isinstance(system, (str, list)) else 0
    for role, blocks in messages:
        total += len(role)
        for block in blocks:
            total += len(block.str("text")) + len(block.str("thinking"))
            if block.str("type") in ("tool_use", "tool_result"):
                total += len(json.dumps(block.data, separators=(",", ":"), default=str))
    for tool in tools:
        schema = tool.raw("input_schema")
        total += len(tool.str("name")) + len(tool.str("description")) + (len(json.dumps(schema)) if schema else 0)
    return max(total // 4, 1 if messages or system is not None else 0)


# -- the two request kinds ---------------------------------------------------------------------------------
def _chat(fields: Fields, max_tokens: int | None) -> tuple[dict[str, Any], list[tuple[str, list[Fields]]], list[Fields], bool]:
    """The native body's messages, tools, think and format, shared by messages and count_tokens (which has
    no ``max_tokens``: None). Every field's type is checked before any value is, as Go decodes first."""
    messages = [_message(m, fields.struct) for m in fields.list("messages", "[]anthropic.MessageParam")]
    tools = _tools(fields)
    choice = fields.object("tool_choice", "anthropic.ToolChoice")
    thinking = fields.object("thinking", "anthropic.ThinkingConfig")
    output_config = fields.object("output_config", "anthropic.OutputConfig")
    if not fields.str("model"):
        raise BadRequest("model is required")
    if max_tokens is not None and max_tokens <= 0:
        raise BadRequest("max_tokens is required and must be positive")
    if not messages:
        raise BadRequest("messages is required")
    native_messages: list[dict[str, Any]] = []
    system = system_text(fields.raw("system"))
    if system:
        native_messages.append({"role": "system", "content": system})
    names: dict[str, str] = {}
    for role, blocks in messages:
        native_messages.extend(convert_message(role, blocks, names))
    native_tools, require_call = choose_tools([t for t in map(convert_tool, tools) if t is not None], choice)
    native: dict[str, Any] = {"model": fields.str("model"), "messages": native_messages}
    if native_tools:
        native["tools"] = native_tools
    think = think_value(thinking, output_config)
    if think is not None:
        native["think"] = think
    fmt = output_format(output_config)
    if fmt is not None:
        native["format"] = fmt
    return native, messages, tools, require_call


def messages_request(fields: Fields) -> Translated:
    """``POST /v1/messages`` -> ``/api/chat``."""
    max_tokens = fields.int("max_tokens")
    stream = fields.bool("stream")
    temperature, top_p = fields.opt_float("temperature"), fields.opt_float("top_p")
    top_k = fields.int("top_k") if fields.has("top_k") else None
    stop = fields.list_str("stop_sequences")
    fields.object("metadata", "anthropic.Metadata")
    native, messages, tools, require_call = _chat(fields, max_tokens)
    options: dict[str, Any] = {"num_predict": max_tokens}
    for key, value in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k)):
        if value is not None:
            options[key] = value
    if stop:
        options["stop"] = stop
    native["options"] = options
    native["stream"] = stream
    estimate = estimate_tokens(fields.raw("system"), messages, tools)
    return Translated(native, native["model"], stream, tuple(stop), estimate, require_call)


def count_tokens_request(fields: Fields) -> Translated:
    """``POST /v1/messages/count_tokens``: the same conversation, to be rendered and counted."""
    native, _, _, require_call = _chat(fields, None)
    return Translated(native, native["model"], require_tool_call=require_call)
