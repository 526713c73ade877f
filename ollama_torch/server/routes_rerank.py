"""``POST /api/rerank`` and ``POST /v1/rerank``: documents ranked by a cross-encoder's relevance to a query.

Ollama has no reranking; this is the request and answer that llama.cpp's server, vLLM, Jina and LocalAI
share, so their clients work unchanged::

    {"model", "query", "documents": [str, ...], "top_n"?, "return_documents"?}
    -> {"model", "results": [{"index", "relevance_score", "document": {"text"}}], "usage": {...}}

Results come best first (equal scores keep the documents' order). Where those servers differ, the choice:

- ``top_n``: absent or null means every document; more than there are documents means every document
  (llama.cpp, vLLM and Cohere all clamp); below 1 is a 400 (llama.cpp's rule; vLLM reads 0 as "all").
- ``document``: ``{"text": ...}`` as vLLM, Jina, Cohere and LocalAI give it, included by default (vLLM
  always, Jina and llama.cpp's rerank fork by default); ``return_documents: false`` leaves it out.
- ``usage``: ``prompt_tokens`` and ``total_tokens`` (llama.cpp gives both, vLLM the latter): the tokens
  of every (query, document) pair after truncation, special tokens included.
- ``documents`` must be strings. Every pair is truncated to the model's limit (``longest_first``, as
  sentence-transformers' ``CrossEncoder`` does), never refused for its length.

The two paths take the same body and give the same answer; errors come in each API's own envelope:
``{"error": "..."}`` on ``/api``, OpenAI's ``{"error": {"message", "type", ...}}`` on ``/v1`` (as llama.cpp
and vLLM answer there). A model without the ``rerank`` capability is a 400 in Ollama's form,
``"<model>" does not support rerank``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..durations import parse_keep_alive
from ..engine.api import RerankCall, Reranked
from ..errors import BadRequest, OllamaError
from .decode import Fields, json_kind, read_json
from .lookup import stored_model
from .openai.routes import error_answer
from .state import STORE, engine_of
from .streaming import json_response

MODEL_REQUIRED = "model is required"
QUERY_TYPE = '"query" must be a string'
DOCUMENTS_TYPE = '"documents" must be a non-empty array of strings'
RETURN_DOCUMENTS_TYPE = '"return_documents" must be a boolean'


@dataclass(frozen=True)
class RerankParsed:
    call: RerankCall
    name: str  # the model as the request named it
    return_documents: bool


def _documents(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise BadRequest(DOCUMENTS_TYPE)
    for i, document in enumerate(value):
        if not isinstance(document, str):
            raise BadRequest(f"{DOCUMENTS_TYPE}; documents[{i}] is {json_kind(document)}")
    return tuple(value)


def _top_n(value: Any) -> int | None:
    if value is None:
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and isinstance(value, int) and value >= 1:
        return value
    raise BadRequest(f'"top_n" must be a positive integer, got {value if number else json_kind(value)}')


def parse_rerank(request: web.Request, fields: Fields) -> RerankParsed:
    """Every field checked before the model is looked up, then the model and its capability."""
    model_text = fields.str("model")
    query = fields.raw("query")
    if not isinstance(query, str):
        raise BadRequest(QUERY_TYPE)
    documents = _documents(fields.raw("documents"))
    top_n = _top_n(fields.raw("top_n"))
    return_documents = fields.raw("return_documents")
    if return_documents is not None and not isinstance(return_documents, bool):
        raise BadRequest(RETURN_DOCUMENTS_TYPE)
    keep_alive = parse_keep_alive(fields.raw("keep_alive"))
    stored = stored_model(request.app[STORE], model_text, empty=BadRequest(MODEL_REQUIRED))
    if "rerank" not in stored.capabilities:
        raise BadRequest(f'"{model_text}" does not support rerank')
    call = RerankCall(stored, query, documents, top_n, keep_alive)
    return RerankParsed(call, model_text, return_documents is not False)


def rerank_body(parsed: RerankParsed, reranked: Reranked) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    for ranked in reranked.results:
        result: dict[str, Any] = {"index": ranked.index, "relevance_score": ranked.relevance_score}
        if parsed.return_documents:
            result["document"] = {"text": parsed.call.documents[ranked.index]}
        results.append(result)
    tokens = reranked.prompt_eval_count
    return {"model": parsed.name, "results": results, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def _answer(request: web.Request) -> dict[str, Any]:
    parsed = parse_rerank(request, await read_json(request, "RerankRequest"))
    return rerank_body(parsed, await engine_of(request.app).rerank(parsed.call))


# -- handlers ----------------------------------------------------------------------------------------
async def rerank(request: web.Request) -> web.Response:
    return json_response(await _answer(request))


async def rerank_v1(request: web.Request) -> web.Response:
    try:
        return json_response(await _answer(request))
    except OllamaError as exc:
        return error_answer(exc)


def setup(app: web.Application) -> None:
    app.router.add_route("POST", "/api/rerank", rerank)
    app.router.add_route("POST", "/v1/rerank", rerank_v1)
