"""``/api/generate``, ``/api/chat`` and ``/api/ps``: validation in Ollama's order, then the scheduler.

Errors that can be known before anything is generated (names, capabilities, options, ``format``) are
raised before the first line so they keep their status; later ones end the stream with an error line.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from ..durations import parse_keep_alive
from ..engine.grammar_format import parse_format
from ..engine.options import GenerationOptions, resolve_options
from ..engine.prompt import BuiltPrompt, PromptJob
from ..engine.requests import DoneEvent, ErrorEvent, TextEvent
from ..errors import BadRequest, InternalError, ModelNotFound, NotFound, OllamaError
from ..names import ModelName
from ..shaping import ResponseShaper, Shaped, plan_response
from ..store import StoredModel
from . import show as show_mod
from .app import ENGINE, SETTINGS, STORE
from .decode import Fields, read_json
from .streaming import json_response, respond

THINK_LEVELS = ("high", "medium", "low", "max")


def now_rfc3339() -> str:
    return show_mod.rfc3339(time.time(), local=False)


def _parse_think(value: Any) -> bool | str | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value in THINK_LEVELS:
            return value
        raise BadRequest(f'invalid think value: "{value}" (must be "high", "medium", "low", "max", true, or false)')
    raise BadRequest('think must be a boolean or string ("high", "medium", "low", "max", true, or false)')


def _images(values: list[Any], field: str) -> list[bytes]:
    out = []
    for v in values:
        if not isinstance(v, str):
            raise BadRequest(f"json: cannot unmarshal {type(v).__name__} into Go struct field {field} of type api.ImageData")
        try:
            out.append(base64.b64decode(v, validate=True))
        except (binascii.Error, ValueError):
            raise BadRequest("illegal base64 data in images") from None
    return out


def _logprobs(fields: Fields) -> tuple[bool, int]:
    """``logprobs`` and ``top_logprobs`` (0..20; without ``logprobs`` it asks for nothing, as in Ollama)."""
    top = fields.int("top_logprobs")
    if not 0 <= top <= 20:
        raise BadRequest("top_logprobs must be between 0 and 20")
    return fields.bool("logprobs"), top


def _model(request: web.Request, text: str) -> StoredModel:
    name = ModelName.parse(text)
    if not name.is_valid:
        raise BadRequest("invalid model name")
    try:
        return request.app[STORE].get(name)
    except ModelNotFound:
        raise ModelNotFound(text) from None


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
    extra = dict(opts.extra)
    shift = fields.opt_bool("shift")
    if shift is not None:
        extra["shift"] = shift
    return GenerationOptions(**{**opts.__dict__, "extra": extra})


def _shaper(built: BuiltPrompt, think: bool | str | None, tools: list[dict[str, Any]] | None) -> ResponseShaper:
    return ResponseShaper.from_plan(plan_response(built, think, tools))


def _metrics(done: DoneEvent, started: float, load_seconds: float) -> dict[str, int]:
    values = {
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": int(load_seconds * 1e9),
        "prompt_eval_count": done.prompt_eval_count,
        "prompt_eval_duration": int(done.prompt_eval_duration * 1e9),
        "eval_count": done.eval_count,
        "eval_duration": int(done.eval_duration * 1e9),
    }
    return {k: v for k, v in values.items() if v}  # Ollama's omitempty


async def _run(
    request: web.Request, stored: StoredModel, job: PromptJob, opts: GenerationOptions, format_spec: Any,
    keep_alive: float | None, started: float, *, debug_render: bool = False,
) -> AsyncIterator[tuple[str, Any]]:
    """Acquire the model, run the job, yield ("prompt", built) / ("shaped", Shaped) / ("done", metrics)."""
    scheduler = request.app[ENGINE]
    runner, load_seconds = await scheduler.acquire(stored, keep_alive)
    try:
        shaper: ResponseShaper | None = None
        async for event in scheduler.generate(runner, stored, job, opts, format_spec):
            if isinstance(event, BuiltPrompt):
                yield "prompt", event
                if debug_render:
                    return
                shaper = _shaper(event, job.think, job.tools)
            elif isinstance(event, TextEvent):
                assert shaper is not None
                pieces = shaper.add(event.text)
                if event.logprobs:  # with the first piece; alone when the text is held back (Ollama sends those too)
                    pieces = pieces or [Shaped()]
                    pieces[0].logprobs = event.logprobs
                for shaped in pieces:
                    yield "shaped", shaped
            elif isinstance(event, DoneEvent):
                assert shaper is not None
                for shaped in shaper.finish():
                    yield "shaped", shaped
                yield "done", (event, _metrics(event, started, load_seconds))
            elif isinstance(event, ErrorEvent):
                err = event.error
                raise err if isinstance(err, OllamaError) else InternalError(f"an error was encountered while running the model: {err}")
    finally:
        scheduler.release(runner)


# -- /api/generate ---------------------------------------------------------------------------------------
async def generate(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    fields = await read_json(request, "GenerateRequest")
    logprobs, top_logprobs = _logprobs(fields)
    model_text = fields.str("model")
    if not model_text:
        raise NotFound("model '' not found")
    stored = _model(request, model_text)
    keep_alive = parse_keep_alive(fields.raw("keep_alive"))
    prompt = fields.str("prompt")
    name = model_text  # Ollama echoes the model as the request named it
    if prompt == "" and keep_alive == 0:
        await request.app[ENGINE].unload_model(stored)
        return json_response({"model": name, "created_at": now_rfc3339(), "response": "", "done": True, "done_reason": "unload"})
    raw = fields.bool("raw")
    system, template, context = fields.str("system"), fields.str("template"), fields.list("context", "[]int")
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
    if prompt == "" and not images:
        scheduler = request.app[ENGINE]
        runner, _ = await scheduler.acquire(stored, keep_alive)
        scheduler.release(runner)
        return json_response({"model": name, "created_at": now_rfc3339(), "response": "", "done": True, "done_reason": "load"})
    job = PromptJob(
        kind="generate", prompt=prompt, suffix=suffix, system=system, template=template, raw=raw,
        context=[int(t) for t in context], images=images, think=think, truncate=fields.bool("truncate", True),
        logprobs=logprobs, top_logprobs=top_logprobs,
    )
    debug = fields.bool("_debug_render_only")

    async def events() -> AsyncIterator[dict[str, Any]]:
        async for kind, value in _run(request, stored, job, opts, format_spec, keep_alive, started, debug_render=debug):
            if kind == "prompt" and debug:
                yield {"model": name, "created_at": now_rfc3339(), "response": "", "done": True,
                       "_debug_info": {"rendered_template": value.text, "image_count": len(value.images)}}
            elif kind == "shaped" and (value.content or value.thinking or value.logprobs):
                chunk: dict[str, Any] = {"model": name, "created_at": now_rfc3339(), "response": value.content}
                if value.thinking:
                    chunk["thinking"] = value.thinking
                chunk["done"] = False
                if value.logprobs:
                    chunk["logprobs"] = value.logprobs
                yield chunk
            elif kind == "done":
                done, metrics = value
                final: dict[str, Any] = {"model": name, "created_at": now_rfc3339(), "response": "", "done": True, "done_reason": done.reason}
                if not raw:
                    final["context"] = done.tokens
                final.update(metrics)
                yield final

    return await respond(request, events(), stream=stream, fold=_fold_generate, charset="utf-8")


def _fold_generate(chunks: list[dict[str, Any]]) -> dict[str, Any]:
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


# -- /api/chat ---------------------------------------------------------------------------------------------
def _messages(fields: Fields) -> list[dict[str, Any]]:
    out = []
    for i, m in enumerate(fields.list("messages", "[]api.Message")):
        if not isinstance(m, dict):
            raise BadRequest("json: cannot unmarshal messages: each message must be an object")
        msg = {k: v for k, v in m.items() if v is not None}
        for key in ("role", "content", "thinking", "tool_name", "tool_call_id"):
            if key in msg and not isinstance(msg[key], str):
                kind = "number" if isinstance(msg[key], (int, float)) and not isinstance(msg[key], bool) else type(msg[key]).__name__
                raise BadRequest(f"json: cannot unmarshal {kind} into Go struct field ChatRequest.messages.{key} of type string")
        msg["role"] = str(m.get("role", "")).lower()
        msg.setdefault("content", "")
        if "images" in msg:
            msg["images"] = _images(msg["images"] if isinstance(msg["images"], list) else [msg["images"]], f"ChatRequest.messages[{i}].images")
        out.append(msg)
    return out


async def chat(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    fields = await read_json(request, "ChatRequest")
    logprobs, top_logprobs = _logprobs(fields)
    model_text = fields.str("model")
    if not model_text:
        raise BadRequest("model is required")
    stored = _model(request, model_text)
    keep_alive = parse_keep_alive(fields.raw("keep_alive"))
    messages = _messages(fields)
    empty = {"role": "assistant", "content": ""}
    if not messages and keep_alive == 0:
        await request.app[ENGINE].unload_model(stored)
        return json_response({"model": model_text, "created_at": now_rfc3339(), "message": empty, "done": True, "done_reason": "unload"})
    caps = stored.capabilities
    tools = fields.list("tools", "api.Tools") or None
    if "completion" not in caps:
        raise BadRequest(f'"{model_text}" does not support chat')
    if tools and "tools" not in caps:
        raise BadRequest(f"{stored.name} does not support tools")
    think = _think(stored, model_text, _parse_think(fields.raw("think")))
    if any(m.get("images") for m in messages) and "vision" not in caps:
        raise BadRequest(f'"{model_text}" does not support images')
    format_spec = parse_format(fields.raw("format"))
    opts = _options(request, stored, fields)
    stream = fields.bool("stream", True)
    if not messages:
        scheduler = request.app[ENGINE]
        runner, _ = await scheduler.acquire(stored, keep_alive)
        scheduler.release(runner)
        return json_response({"model": model_text, "created_at": now_rfc3339(), "message": empty, "done": True, "done_reason": "load"})
    job = PromptJob(
        kind="chat", messages=messages, tools=tools, think=think, truncate=fields.bool("truncate", True),
        logprobs=logprobs, top_logprobs=top_logprobs,
    )
    debug = fields.bool("_debug_render_only")

    async def events() -> AsyncIterator[dict[str, Any]]:
        index = 0
        async for kind, value in _run(request, stored, job, opts, format_spec, keep_alive, started, debug_render=debug):
            if kind == "prompt" and debug:
                yield {"model": model_text, "created_at": now_rfc3339(), "message": empty, "done": True,
                       "_debug_info": {"rendered_template": value.text, "image_count": len(value.images)}}
            elif kind == "shaped":
                message: dict[str, Any] = {"role": "assistant", "content": value.content}
                if value.thinking:
                    message["thinking"] = value.thinking
                if value.tool_calls:
                    for call in value.tool_calls:
                        call["function"]["index"] = index
                        index += 1
                    message["tool_calls"] = value.tool_calls
                if value.content or value.thinking or value.tool_calls or value.logprobs:
                    chunk = {"model": model_text, "created_at": now_rfc3339(), "message": message, "done": False}
                    if value.logprobs:
                        chunk["logprobs"] = value.logprobs
                    yield chunk
            elif kind == "done":
                done, metrics = value
                yield {"model": model_text, "created_at": now_rfc3339(), "message": dict(empty), "done": True,
                       "done_reason": done.reason, **metrics}

    return await respond(request, events(), stream=stream, fold=_fold_chat, charset="utf-8")


def _fold_chat(chunks: list[dict[str, Any]]) -> dict[str, Any]:
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


# -- /api/ps -----------------------------------------------------------------------------------------------
async def ps(request: web.Request) -> web.Response:
    scheduler = request.app[ENGINE]
    models = []
    for runner in scheduler.loaded_models():
        stored = runner.stored
        size = runner.loaded.size_bytes + (runner.worker.cache_bytes() if hasattr(runner.worker, "cache_bytes") else 0)
        expires = runner.expires_at
        expires_text = show_mod.rfc3339(expires) if expires != float("inf") else _far_future()
        models.append({
            "name": stored.name.display_shortest,
            "model": stored.name.display_shortest,
            "size": size,
            "digest": stored.digest,
            "details": {**show_mod.details(stored), "parent_model": ""},
            "expires_at": expires_text,
            "size_vram": size if runner.loaded.device.type == "cuda" else 0,
            "context_length": scheduler.num_ctx_for(runner),
        })
    return json_response({"models": models})


async def engine_stats(request: web.Request) -> web.Response:
    """ollama-torch extension (not in Ollama): per loaded model, requests in the batch and waiting."""
    models = []
    for runner in request.app[ENGINE].loaded_models():
        worker = runner.worker
        models.append({
            "name": runner.stored.name.display_shortest,
            "running": getattr(worker, "running", 0),
            "waiting": max(0, getattr(worker, "active", 0) - getattr(worker, "running", 0)),
            "batch_size": getattr(worker, "max_rows", 0),
            "kv_cache_bytes": worker.cache_bytes() if hasattr(worker, "cache_bytes") else 0,
        })
    return json_response({"models": models})


def _far_future() -> str:
    # Ollama's "forever" is now + MaxInt64 ns, which lands in year 2318; print a fixed far-future time.
    return datetime(2318, 1, 1, tzinfo=timezone.utc).astimezone().isoformat()


def setup(app: web.Application) -> None:
    app.router.add_route("POST", "/api/generate", generate)
    app.router.add_route("POST", "/api/chat", chat)
    app.router.add_route("GET", "/api/ps", ps)
    app.router.add_route("GET", "/api/x/engine", engine_stats)
