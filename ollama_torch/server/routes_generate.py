"""``/api/generate``, ``/api/chat``, ``/api/ps``: Ollama's JSON <-> the engine's typed calls and chunks.

A request is validated in Ollama's order (name, capabilities, options, ``format``) into a
:class:`~ollama_torch.engine.api.GenerationCall` before anything runs, so those errors keep their status;
the engine's chunks become Ollama's NDJSON lines (``generate_line`` / ``chat_line``), and ``stream:false``
folds the same lines into one object. ``/v1`` builds its calls with the same parsers and reads the same
lines (``openai/routes.py``).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Literal

from aiohttp import web

from ..durations import parse_keep_alive
from ..engine.api import (
    Chat,
    Chunk,
    Completion,
    Content,
    Done,
    GenerationCall,
    GenerationOptions,
    JsonObject,
    Logprobs,
    Message,
    Thinking,
    TokenLogprob,
    ToolCall,
    ToolCalls,
)
from ..engine.grammar.format import parse_format
from ..engine.options import resolve_options
from ..errors import BadRequest, NotFound
from ..store import StoredModel
from . import show as show_mod
from .decode import Fields, json_kind, read_json
from .lookup import stored_model
from .state import SETTINGS, STORE, engine_of
from .streaming import json_response, respond

THINK_LEVELS = ("high", "medium", "low", "max")
Action = Literal["generate", "load", "unload", "render"]


def now_rfc3339() -> str:
    return show_mod.rfc3339(time.time(), local=False)


# -- request fields ----------------------------------------------------------------------------------------
def _parse_think(value: Any) -> bool | str | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value in THINK_LEVELS:
            return value
        raise BadRequest(f'invalid think value: "{value}" (must be "high", "medium", "low", "max", true, or false)')
    raise BadRequest('think must be a boolean or string ("high", "medium", "low", "max", true, or false)')


def _images(values: list[Any], field: str) -> tuple[bytes, ...]:
    out = []
    for v in values:
        if not isinstance(v, str):
            raise BadRequest(f"json: cannot unmarshal {type(v).__name__} into Go struct field {field} of type api.ImageData")
        try:
            out.append(base64.b64decode(v, validate=True))
        except (binascii.Error, ValueError):
            raise BadRequest("illegal base64 data in images") from None
    return tuple(out)


def _logprobs(fields: Fields) -> tuple[bool, int]:
    """``logprobs`` and ``top_logprobs`` (0..20; without ``logprobs`` it asks for nothing, as in Ollama)."""
    top = fields.int("top_logprobs")
    if not 0 <= top <= 20:
        raise BadRequest("top_logprobs must be between 0 and 20")
    return fields.bool("logprobs"), top


def _think(stored: StoredModel, model_text: str, requested: bool | str | None) -> bool | str | None:
    thinking = "thinking" in stored.capabilities
    if requested is None and thinking:
        return True  # Ollama turns thinking on by default for reasoning models
    if requested and not thinking:
        raise BadRequest(f'"{model_text}" does not support thinking')
    return requested


def _options(request: web.Request, stored: StoredModel, fields: Fields) -> GenerationOptions:
    settings = request.app[SETTINGS]
    opts = resolve_options(
        stored.params, fields.dict("options"), default_num_ctx=settings.default_num_ctx, model_max_ctx=stored.config.context_length
    )
    shift = fields.opt_bool("shift")
    return opts if shift is None else replace(opts, shift=shift)


@dataclass(frozen=True)
class Parsed:
    """A validated /api/generate or /api/chat request: what to do, and the call when it generates."""

    model: StoredModel
    name: str  # the model as the request named it (Ollama echoes it)
    action: Action
    keep_alive: float | None
    stream: bool = False
    call: GenerationCall | None = None  # None only for "unload"

    @property
    def generation(self) -> GenerationCall:
        if self.call is None:
            raise ValueError("an unload has no generation call")
        return self.call


def parse_generate(request: web.Request, fields: Fields, tokens: tuple[int, ...] = ()) -> Parsed:
    """``tokens``: a token-id prompt, which ``/v1/completions`` takes and the native API has no field for."""
    logprobs, top_logprobs = _logprobs(fields)
    model_text = fields.str("model")
    stored = stored_model(request.app[STORE], model_text, empty=NotFound("model '' not found"))
    keep_alive = parse_keep_alive(fields.raw("keep_alive"))
    prompt = fields.str("prompt")
    raw = fields.bool("raw")
    system, template, context = fields.str("system"), fields.str("template"), fields.list("context", "[]int")
    if prompt == "" and not tokens and keep_alive == 0:
        return Parsed(stored, model_text, "unload", keep_alive)
    if raw and (template or system or context):
        raise BadRequest("raw mode does not support template, system, or context")
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in context):
        raise BadRequest("json: cannot unmarshal context: must be an array of integers")
    caps = stored.capabilities
    suffix = fields.str("suffix")
    if "completion" not in caps:
        raise BadRequest(f'"{model_text}" does not support generate')
    if suffix and "insert" not in caps:
        raise BadRequest(f"{stored.name} does not support insert")
    think = _think(stored, model_text, _parse_think(fields.raw("think")))
    images = _images(fields.list("images"), "GenerateRequest.images")
    if images and "vision" not in caps:
        raise BadRequest(f'"{model_text}" does not support images')
    format_spec = parse_format(fields.raw("format"))
    opts = _options(request, stored, fields)
    stream = fields.bool("stream", True)
    completion = Completion(prompt, suffix, system, template, raw, tuple(int(t) for t in context), images, tokens)
    call = GenerationCall(
        stored, completion, opts, format_spec, think, fields.bool("truncate", True), logprobs, top_logprobs, keep_alive,
    )
    return Parsed(stored, model_text, _action(fields, prompt == "" and not images and not tokens), keep_alive, stream, call)


def _action(fields: Fields, empty: bool) -> Action:
    if empty:
        return "load"
    return "render" if fields.bool("_debug_render_only") else "generate"


def _tool_calls(values: Any, i: int) -> tuple[ToolCall, ...]:
    """Ollama's ``[]api.ToolCall`` of a request message (``arguments`` an object)."""
    struct = "ChatRequest.messages.tool_calls"
    if values is None:
        return ()
    if not isinstance(values, list):
        raise BadRequest(f"json: cannot unmarshal {json_kind(values)} into Go struct field {struct} of type []api.ToolCall")
    calls = []
    for raw in values:
        if not isinstance(raw, dict):
            raise BadRequest(f"json: cannot unmarshal {json_kind(raw)} into Go struct field {struct} of type api.ToolCall")
        call = Fields(raw, struct)
        function = call.dict("function", "api.ToolCallFunction")
        fn = Fields(function, f"{struct}.function")
        arguments = fn.dict("arguments", "api.ToolCallFunctionArguments")
        calls.append(ToolCall(fn.str("name"), arguments, call.str("id"), fn.int("index")))
    return tuple(calls)


def _messages(fields: Fields) -> tuple[Message, ...]:
    out = []
    for i, m in enumerate(fields.list("messages", "[]api.Message")):
        if not isinstance(m, dict):
            raise BadRequest("json: cannot unmarshal messages: each message must be an object")
        for key in ("role", "content", "thinking", "tool_name", "tool_call_id"):
            if m.get(key) is not None and not isinstance(m[key], str):
                value = m[key]
                kind = "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__
                raise BadRequest(f"json: cannot unmarshal {kind} into Go struct field ChatRequest.messages.{key} of type string")
        images: tuple[bytes, ...] = ()
        if m.get("images") is not None:
            raw_images = m["images"] if isinstance(m["images"], list) else [m["images"]]
            images = _images(raw_images, f"ChatRequest.messages[{i}].images")
        out.append(Message(
            role=str(m.get("role") or "").lower(),
            content=m.get("content") or "",
            images=images,
            thinking=m.get("thinking") or "",
            tool_calls=_tool_calls(m.get("tool_calls"), i),
            tool_name=m.get("tool_name") or "",
            tool_call_id=m.get("tool_call_id") or "",
        ))
    return tuple(out)


def _tools(fields: Fields) -> tuple[JsonObject, ...]:
    tools = fields.list("tools", "api.Tools")
    for tool in tools:
        if not isinstance(tool, dict):
            raise BadRequest(f"json: cannot unmarshal {json_kind(tool)} into Go struct field ChatRequest.tools of type api.Tool")
    return tuple(tools)


def parse_chat(request: web.Request, fields: Fields) -> Parsed:
    logprobs, top_logprobs = _logprobs(fields)
    model_text = fields.str("model")
    stored = stored_model(request.app[STORE], model_text, empty=BadRequest("model is required"))
    keep_alive = parse_keep_alive(fields.raw("keep_alive"))
    messages = _messages(fields)
    if not messages and keep_alive == 0:
        return Parsed(stored, model_text, "unload", keep_alive)
    caps = stored.capabilities
    tools = _tools(fields)
    if "completion" not in caps:
        raise BadRequest(f'"{model_text}" does not support chat')
    if tools and "tools" not in caps:
        raise BadRequest(f"{stored.name} does not support tools")
    think = _think(stored, model_text, _parse_think(fields.raw("think")))
    if any(m.images for m in messages) and "vision" not in caps:
        raise BadRequest(f'"{model_text}" does not support images')
    format_spec = parse_format(fields.raw("format"))
    opts = _options(request, stored, fields)
    stream = fields.bool("stream", True)
    call = GenerationCall(
        stored, Chat(messages, tools), opts, format_spec, think, fields.bool("truncate", True), logprobs, top_logprobs,
        keep_alive,
    )
    return Parsed(stored, model_text, _action(fields, not messages), keep_alive, stream, call)


# -- chunks -> lines ---------------------------------------------------------------------------------------
def metrics(done: Done, started: float) -> dict[str, int]:
    stats = done.stats
    values = {
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": int(stats.load_duration * 1e9),
        "prompt_eval_count": stats.prompt_eval_count,
        "prompt_eval_duration": int(stats.prompt_eval_duration * 1e9),
        "eval_count": stats.eval_count,
        "eval_duration": int(stats.eval_duration * 1e9),
    }
    return {k: v for k, v in values.items() if v}  # Ollama's omitempty


def _logprob_entries(entries: tuple[TokenLogprob, ...]) -> list[JsonObject]:
    return [e.as_json() for e in entries]


def tool_call_json(call: ToolCall) -> JsonObject:
    return {"id": call.id, "function": {"index": call.index, "name": call.name, "arguments": call.arguments}}


def generate_line(parsed: Parsed, chunk: Chunk, started: float) -> dict[str, Any] | None:
    """One ``/api/generate`` NDJSON line for ``chunk`` (None: nothing to send)."""
    head: dict[str, Any] = {"model": parsed.name, "created_at": now_rfc3339()}
    if isinstance(chunk, Done):
        final = {**head, "response": "", "done": True, "done_reason": chunk.reason}
        request = parsed.generation.input
        if not (isinstance(request, Completion) and request.raw):
            final["context"] = list(chunk.context)
        return final | metrics(chunk, started)
    if isinstance(chunk, ToolCalls):
        return None  # /api/generate offers no tools
    line = {**head, "response": chunk.text if isinstance(chunk, Content) else ""}
    if isinstance(chunk, Thinking):
        line["thinking"] = chunk.text
    line["done"] = False
    entries = chunk.entries if isinstance(chunk, Logprobs) else chunk.logprobs
    if entries:
        line["logprobs"] = _logprob_entries(entries)
    return line


def chat_line(parsed: Parsed, chunk: Chunk, started: float) -> dict[str, Any]:
    """One ``/api/chat`` NDJSON line for ``chunk``."""
    head: dict[str, Any] = {"model": parsed.name, "created_at": now_rfc3339()}
    if isinstance(chunk, Done):
        return {**head, "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": chunk.reason} | metrics(chunk, started)
    message: dict[str, Any] = {"role": "assistant", "content": chunk.text if isinstance(chunk, Content) else ""}
    if isinstance(chunk, Thinking):
        message["thinking"] = chunk.text
    if isinstance(chunk, ToolCalls):
        message["tool_calls"] = [tool_call_json(c) for c in chunk.calls]
    line = {**head, "message": message, "done": False}
    entries = chunk.entries if isinstance(chunk, Logprobs) else chunk.logprobs
    if entries:
        line["logprobs"] = _logprob_entries(entries)
    return line


async def single_answer(request: web.Request, parsed: Parsed, chat: bool) -> dict[str, Any] | None:
    """The one-object answer of a request that generates nothing (unload, load, render), after doing it;
    None for a generation."""
    engine = engine_of(request.app)
    head: dict[str, Any] = {"model": parsed.name, "created_at": now_rfc3339()}
    empty: dict[str, Any] = {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
    if parsed.action == "unload":
        await engine.unload(parsed.model)
        return {**head, **empty, "done": True, "done_reason": "unload"}
    if parsed.action == "load":
        await engine.load(parsed.model, parsed.keep_alive)
        return {**head, **empty, "done": True, "done_reason": "load"}
    if parsed.action == "render":
        rendered = await engine.render(parsed.generation)
        return {**head, **empty, "done": True,
                "_debug_info": {"rendered_template": rendered.text, "image_count": rendered.image_count}}
    return None


async def _answer(request: web.Request, parsed: Parsed, line: Callable[[Parsed, Chunk, float], dict[str, Any] | None],
                  fold: Callable[[list[dict[str, Any]]], dict[str, Any]], chat: bool, started: float) -> web.StreamResponse:
    if parsed.action in ("load", "unload"):
        body = await single_answer(request, parsed, chat)
        assert body is not None
        return json_response(body)

    async def lines() -> AsyncIterator[dict[str, Any]]:
        if parsed.action == "render":
            body = await single_answer(request, parsed, chat)
            assert body is not None
            yield body
            return
        async for chunk in engine_of(request.app).generate(parsed.generation):
            out = line(parsed, chunk, started)
            if out is not None:
                yield out

    return await respond(request, lines(), stream=parsed.stream, fold=fold, charset="utf-8")


# -- /api/generate -------------------------------------------------------------------------------------------
async def generate(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    parsed = parse_generate(request, await read_json(request, "GenerateRequest"))
    return await _answer(request, parsed, generate_line, fold_generate, False, started)


def fold_generate(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    if not chunks:
        return {}
    final = dict(chunks[-1])
    final["response"] = "".join(c.get("response", "") for c in chunks)
    thinking = "".join(c.get("thinking", "") for c in chunks)
    if thinking:
        final["thinking"] = thinking
    _fold_logprobs(final, chunks)
    return final


def _fold_logprobs(final: dict[str, Any], chunks: list[dict[str, Any]]) -> None:
    logprobs = [entry for c in chunks for entry in c.get("logprobs", ())]
    if logprobs:
        final["logprobs"] = logprobs


# -- /api/chat -------------------------------------------------------------------------------------------------
async def chat(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    parsed = parse_chat(request, await read_json(request, "ChatRequest"))
    return await _answer(request, parsed, chat_line, fold_chat, True, started)


def fold_chat(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    if not chunks:
        return {}
    final = dict(chunks[-1])
    message: dict[str, Any] = {"role": "assistant", "content": "".join(c["message"].get("content", "") for c in chunks)}
    thinking = "".join(c["message"].get("thinking", "") for c in chunks)
    if thinking:
        message["thinking"] = thinking
    calls = [call for c in chunks for call in c["message"].get("tool_calls", [])]
    if calls:
        message["tool_calls"] = calls
    final["message"] = message
    _fold_logprobs(final, chunks)
    return final


# -- /api/ps -----------------------------------------------------------------------------------------------------
async def ps(request: web.Request) -> web.Response:
    models = []
    for status in engine_of(request.app).status():
        stored = status.model
        expires = status.expires_at
        models.append({
            "name": stored.name.display_shortest,
            "model": stored.name.display_shortest,
            "size": status.size,
            "digest": stored.digest,
            "details": {**show_mod.details(stored), "parent_model": ""},
            "expires_at": show_mod.rfc3339(expires) if expires != float("inf") else _far_future(),
            "size_vram": status.size_vram,
            "context_length": status.context_length,
        })
    return json_response({"models": models})


async def engine_stats(request: web.Request) -> web.Response:
    """ollama-torch extension (not in Ollama): per loaded model, requests in the batch and waiting."""
    models = [
        {
            "name": s.model.name.display_shortest,
            "running": s.running,
            "waiting": s.waiting,
            "batch_size": s.batch_size,
            "kv_cache_bytes": s.kv_cache_bytes,
        }
        for s in engine_of(request.app).status()
    ]
    return json_response({"models": models})


def _far_future() -> str:
    # Ollama's "forever" is now + MaxInt64 ns, which lands in year 2318; print a fixed far-future time.
    return datetime(2318, 1, 1, tzinfo=timezone.utc).astimezone().isoformat()


def setup(app: web.Application) -> None:
    app.router.add_route("POST", "/api/generate", generate)
    app.router.add_route("POST", "/api/chat", chat)
    app.router.add_route("GET", "/api/ps", ps)
    app.router.add_route("GET", "/api/x/engine", engine_stats)
