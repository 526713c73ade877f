"""``POST /tokenize``, ``POST /detokenize``, ``GET /tokenizer_info`` (ollama-torch extension, not in Ollama):
the model's tokenizer, for clients that must count or build token-id prompts exactly as the server runs them.

In vLLM's shapes, which is what lm-evaluation-harness's remote tokenizer reads (``tokenizer_backend=remote``,
probed by default by ``local-completions``): ``{"prompt", "add_special_tokens"}`` -> ``{"tokens", "count",
"max_model_len"}``; ``{"tokens"}`` -> ``{"prompt"}``; ``/tokenizer_info`` the special tokens and the chat
template. llama.cpp's spellings are taken too (``content``, ``add_special``; ``/detokenize`` answers
``content`` beside ``prompt``). The tokenizer is the loaded runner's (the model is loaded for it), the one the
engine tokenizes prompts with.

``model`` names the model, as everywhere. lm-eval's remote tokenizer sends none (vLLM serves one model), so
without it the store's only model that generates is meant; when there are several, ``model`` is required:
guessing (say, whichever happens to be loaded) could hand out another model's token ids.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..engine.api import DetokenizeCall, TokenizeCall
from ..errors import BadRequest
from ..store import ModelStore, StoredModel
from .decode import Fields, read_json
from .lookup import stored_model
from .state import STORE, engine_of
from .streaming import json_response

MODEL_REQUIRED = "model is required: the store holds {n} models that generate; name one with \"model\""


def _only_generating_model(store: ModelStore) -> StoredModel:
    candidates = []
    for listed in store.list():
        model = store.get(listed.name)
        if "completion" in model.capabilities:
            candidates.append(model)
    if len(candidates) != 1:
        raise BadRequest(MODEL_REQUIRED.format(n=len(candidates)))
    return candidates[0]


async def _model(request: web.Request, text: str) -> StoredModel:
    store = request.app[STORE]
    if text:
        return stored_model(store, text, empty=BadRequest("model is required"))
    return await asyncio.to_thread(_only_generating_model, store)


def _token_ids(fields: Fields) -> tuple[int, ...]:
    values = fields.list("tokens", "[]int")
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in values):
        raise BadRequest("json: cannot unmarshal tokens: must be an array of integers")
    return tuple(values)


async def tokenize(request: web.Request) -> web.Response:
    fields = await read_json(request, "TokenizeRequest")
    text = fields.str("prompt") if fields.has("prompt") else fields.str("content")
    special = fields.opt_bool("add_special_tokens")
    if special is None:  # vLLM adds them unless told not to; llama.cpp (which sends ``content``) does not
        special = fields.bool("add_special", not (fields.has("content") and not fields.has("prompt")))
    pieces = fields.bool("return_token_strs")
    model = await _model(request, fields.str("model"))
    out = await engine_of(request.app).tokenize(TokenizeCall(model, text, special, pieces))
    body: dict[str, Any] = {"count": len(out.tokens), "max_model_len": out.context_length, "tokens": list(out.tokens),
                            "token_strs": list(out.pieces) if pieces else None}
    return json_response(body)


async def detokenize(request: web.Request) -> web.Response:
    fields = await read_json(request, "DetokenizeRequest")
    tokens = _token_ids(fields)
    model = await _model(request, fields.str("model"))
    text = await engine_of(request.app).detokenize(DetokenizeCall(model, tokens))
    return json_response({"prompt": text, "content": text})


async def tokenizer_info(request: web.Request) -> web.Response:
    model = await _model(request, request.query.get("model", ""))
    info = await engine_of(request.app).tokenizer_info(model)
    body: dict[str, Any] = {
        "tokenizer_class": info.tokenizer_class,
        "bos_token": info.bos_token,
        "eos_token": info.eos_token,
        "pad_token": info.pad_token,
        "unk_token": info.unk_token,
        "add_bos_token": info.add_bos_token,
        "model_max_length": info.context_length,
    }
    if info.chat_template is not None:
        body["chat_template"] = info.chat_template
    return json_response(body)


def setup(app: web.Application) -> None:
    app.router.add_route("POST", "/tokenize", tokenize)
    app.router.add_route("POST", "/detokenize", detokenize)
    app.router.add_route("GET", "/tokenizer_info", tokenizer_info)
