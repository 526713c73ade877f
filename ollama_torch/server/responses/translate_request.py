"""OpenAI Responses request bodies -> native ``/api/chat`` bodies: Ollama's ``openai.FromResponsesRequest``
and the decoding its ``ResponsesRequest`` types do (``openai/responses.go``).

Pure functions over decoded JSON (no aiohttp, no I/O), table-tested against the cases of Ollama's
``openai/responses_test.go``. Every error is a ``BadRequest`` with Ollama's text; the routes put it in the
OpenAI error envelope.

As Ollama: ``input`` is a string (one user message) or items: messages (``type`` may be left out when
``role`` is given; content a string or ``input_text``/``output_text``/``input_image`` parts), earlier
``function_call``s (merged into the assistant message before them) and their ``function_call_output``s
(``tool`` messages), ``reasoning`` items (the next assistant message's ``thinking``); ``instructions`` is
the first (system) message; ``temperature`` defaults to 1.0, ``top_p`` passes through, ``max_output_tokens``
is ``num_predict``, ``reasoning.effort`` is ``think``; ``text.format`` ``json_schema`` is ``format``;
``function`` tools pass through and ``namespace`` tools expand to their member functions.
Beyond Ollama: ``text.format`` ``json_object`` is ``format: "json"``; ``tool_choice`` (Ollama ignores it):
``none`` offers no tools, ``required`` requires a call and ``{"type": "function", "name": ...}`` a call of
that function, enforced by the constrained tool-call grammar where the model's markup allows it; a
``function_call_output`` names its tool (found from its call), for templates that print ``.ToolName``; the
built-in ``web_search`` tool is not offered (nothing here can search); and ``previous_response_id`` /
``conversation`` are refused with a 400, since responses are not stored (Ollama ignores them, and the
model would silently lose the conversation).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from ...errors import BadRequest
from ..decode import Fields, check_depth, json_kind
from ..openai.translate_request import decode_image_url, think_from_effort

log = logging.getLogger(__name__)

STRUCT = "ResponsesRequest"
NOT_STORED = "{field} is not supported: responses are not stored, send the whole conversation in input"
_CONTENT_TYPES = ("input_text", "output_text", "input_image", "input_file")


@dataclass(frozen=True)
class Translated:
    """A native ``/api/chat`` body plus the request, which every response object echoes."""

    native: dict[str, Any]
    model: str
    stream: bool
    request: dict[str, Any]
    require_tool_call: bool = False  # ``tool_choice`` ``required`` or one function: the answer starts with a call








# -- content and items ---------------------------------------------------------------------------------------
def _content_parts(parts: list[Any], where: str) -> tuple[str, list[str]]:
    """``convertResponsesContent``: text joined, ``data:`` image URLs decoded; files are refused.
    ``where`` prefixes decoding errors as Go's wrapped errors read (``input[0]: content``)."""
    text, images = [], []
    for j, part in enumerate(parts):
        if not isinstance(part, dict):
            raise BadRequest(f"{where}[{j}]: json: cannot unmarshal {json_kind(part)} into Go value of type openai.ResponsesContent")
        item = Fields(part, "ResponsesContent")
        kind = item.str("type")
        if kind not in _CONTENT_TYPES:
            raise BadRequest(f"{where}[{j}]: unknown content type: {kind}")
        if kind in ("input_text", "output_text"):
            text.append(item.str("text"))
        elif kind == "input_image":
            url = item.str("image_url")
            if url:  # a file_id alone is skipped, as Ollama does
                images.append(decode_image_url(url))
        else:
            raise BadRequest("file inputs are not currently supported")
    return "".join(text), images


def _parts_or_text(value: Any, where: str) -> tuple[str, list[str]]:
    """A message's ``content`` or a call output's ``output``: a string, or content parts."""
    if isinstance(value, str):
        return value, []
    if value is None:
        return "", []
    if not isinstance(value, list):
        raise BadRequest(f"{where} must be a string or array: json: cannot unmarshal {json_kind(value)} "
                         "into Go value of type []json.RawMessage")
    return _content_parts(value, where)


def _message(item: Fields, i: int) -> dict[str, Any]:
    text, images = _parts_or_text(item.raw("content"), f"input[{i}]: content")
    out: dict[str, Any] = {"role": item.str("role"), "content": text}
    if images:
        out["images"] = images
    return out


def _arguments(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        check_depth(text)
        args = json.loads(text)
    except (ValueError, BadRequest) as exc:
        raise BadRequest(f"failed to parse function call arguments: {exc}") from None
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise BadRequest(
            f"failed to parse function call arguments: json: cannot unmarshal {json_kind(args)} into Go value of type api.ToolCallFunctionArguments"
        )
    return args


def _item_kind(raw: Any, i: int) -> str:
    if not isinstance(raw, dict):
        raise BadRequest(f"input[{i}]: json: cannot unmarshal {json_kind(raw)} into Go value of type openai.ResponsesInputItem")
    item = Fields(raw, "ResponsesInputItem")
    kind, role = item.str("type"), item.str("role")
    if not kind and role:
        return "message"
    if not kind:
        raise BadRequest(f"input[{i}]: input item missing required 'type' field")
    if kind not in ("message", "function_call", "function_call_output", "reasoning", "web_search_call"):
        raise BadRequest(f'input[{i}]: unknown input item type: "{kind}"')
    return kind


def _reasoning_text(item: Fields) -> str:
    """What a reasoning item carries back: ``encrypted_content`` (where our answers put the thinking, as
    Ollama's do), else its summary's text."""
    encrypted = item.str("encrypted_content")
    if encrypted:
        return encrypted
    summary = item.list("summary", "[]openai.ResponsesReasoningSummary")
    return "".join(s["text"] for s in summary if isinstance(s, dict) and isinstance(s.get("text"), str))


def input_messages(value: Any) -> list[dict[str, Any]]:
    """``input`` -> native messages (the merging rules of Ollama's ``FromResponsesRequest``)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}] if value else []
    if not isinstance(value, list):
        raise BadRequest(f"input must be a string or array: json: cannot unmarshal {json_kind(value)} into Go value of type []json.RawMessage")
    kinds = [_item_kind(raw, i) for i, raw in enumerate(value)]
    messages: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # call_id -> function name
    thinking = ""  # a reasoning item waiting for its assistant message
    for i, (raw, kind) in enumerate(zip(value, kinds, strict=True)):
        item = Fields(raw, "ResponsesInputItem")
        if kind == "reasoning":
            thinking = _reasoning_text(item)
        elif kind == "message":
            msg = _message(item, i)
            if msg["role"] == "assistant" and thinking:
                msg["thinking"], thinking = thinking, ""
            answered = Fields(value[i + 1], "ResponsesInputItem").str("call_id") if i + 1 < len(value) and kinds[i + 1] == "function_call_output" else ""
            last = messages[-1] if messages else None
            if (msg["role"] == "assistant" and answered and last is not None and last["role"] == "assistant"
                    and any(c.get("id") == answered for c in last.get("tool_calls", ()))):
                # an assistant message replayed between a call and its output stays with the call
                last["content"] = "\n".join(t for t in (last["content"], msg["content"]) if t)
                if msg.get("images"):
                    last.setdefault("images", []).extend(msg["images"])
                if msg.get("thinking"):
                    last["thinking"] = msg["thinking"]
                continue
            messages.append(msg)
        elif kind == "function_call":
            call_id, name = item.str("call_id"), item.str("name")
            call = {"id": call_id, "function": {"name": name, "arguments": _arguments(item.str("arguments"))}}
            names[call_id] = name
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
                if thinking:
                    messages[-1]["thinking"], thinking = thinking, ""
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call], **({"thinking": thinking} if thinking else {})})
                thinking = ""
        elif kind == "function_call_output":
            content, images = _parts_or_text(item.raw("output"), f"input[{i}]: output")
            call_id = item.str("call_id")
            result: dict[str, Any] = {"role": "tool", "content": content}
            if images:
                result["images"] = images
            if names.get(call_id):
                result["tool_name"] = names[call_id]
            result["tool_call_id"] = call_id
            messages.append(result)
        # web_search_call: history metadata (the assistant message after it carries what the search found)
    if thinking:
        messages.append({"role": "assistant", "content": "", "thinking": thinking})
    return messages


# -- tools ------------------------------------------------------------------------------------------------------
def convert_tools(raw_tools: list[Any], struct: str = f"{STRUCT}.tools") -> list[dict[str, Any]]:
    """``function`` tools as native tools; a ``namespace`` expands to its members, named ``<ns>.<name>``."""
    out: list[dict[str, Any]] = []
    for raw in raw_tools:
        if not isinstance(raw, dict):
            raise BadRequest(f"json: cannot unmarshal {json_kind(raw)} into Go struct field {struct} of type openai.ResponsesTool")
        tool = Fields(raw, struct)
        kind, name = tool.str("type"), tool.str("name")
        parameters = tool.dict("parameters", "map[string]interface {}")
        description = tool.str("description")
        tool.opt_bool("strict")
        if kind == "web_search":
            log.warning("the web_search tool is not offered to the model: ollama-torch has no web search")
            continue
        if kind == "namespace":
            for member in convert_tools(tool.list("tools", "[]openai.ResponsesTool"), struct):
                function = member["function"]
                if name and not function["name"].startswith(name + "."):
                    function["name"] = f"{name}.{function['name']}"
                out.append(member)
            continue
        out.append({"type": kind, "function": {"name": name, "description": description, "parameters": parameters}})
    return out


def choose_tools(tools: list[dict[str, Any]], choice: Any) -> tuple[list[dict[str, Any]], bool]:
    """``tool_choice`` -> (the tools offered, whether a call is required): ``auto`` offers all, ``none``
    none, ``required`` all with a call required, ``{"type": "function", "name": ...}`` that one, called."""
    if choice == "none":
        return [], False
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        chosen = [t for t in tools if t["function"]["name"] == name]
        if not chosen:
            raise BadRequest(f'tool_choice names the function "{name}", which is not in tools')
        return chosen, True
    return tools, choice == "required" and bool(tools)


def text_format(fields: Fields) -> Any:
    text = fields.object("text", "openai.ResponsesText")
    fmt = text.object("format", "openai.ResponsesTextFormat") if text is not None else None
    if fmt is None:
        return None
    kind = fmt.str("type")
    fmt.str("name")
    fmt.opt_bool("strict")
    if kind == "json_schema":
        return fmt.raw("schema")
    if kind == "json_object":
        return "json"
    return None


# -- the request -----------------------------------------------------------------------------------------------
def responses_request(fields: Fields) -> Translated:
    """``POST /v1/responses`` -> ``/api/chat``."""
    model, instructions = fields.str("model"), fields.str("instructions")
    stream = fields.bool("stream")
    fields.bool("background")
    temperature, top_p = fields.opt_float("temperature"), fields.opt_float("top_p")
    max_output = fields.int("max_output_tokens") if fields.has("max_output_tokens") else None
    reasoning = fields.object("reasoning", "openai.ResponsesReasoning")
    effort = reasoning.str("effort") if reasoning is not None else ""
    if reasoning is not None:
        reasoning.str("summary")
    fields.str("truncation")
    raw_tools = fields.list("tools", "[]openai.ResponsesTool")
    fmt = text_format(fields)
    for field in ("previous_response_id", "conversation"):
        if fields.raw(field) is not None:
            raise BadRequest(NOT_STORED.format(field=field))
    messages = ([{"role": "system", "content": instructions}] if instructions else []) + input_messages(fields.raw("input"))
    options: dict[str, Any] = {"temperature": 1.0 if temperature is None else temperature}
    if top_p is not None:
        options["top_p"] = top_p
    if max_output is not None:
        options["num_predict"] = max_output
    native: dict[str, Any] = {"model": model, "messages": messages, "options": options, "stream": stream}
    think = think_from_effort(effort)
    tools, require_call = choose_tools(convert_tools(raw_tools), fields.raw("tool_choice"))
    if tools:
        native["tools"] = tools
    if fmt is not None:
        native["format"] = fmt
    if think is not None:
        native["think"] = think
    return Translated(native, model, stream, fields.data, require_call)
