"""``/api/embed`` and the legacy ``/api/embeddings``: validation in Ollama's order, then the model's Embedder.

Ollama's ``EmbedHandler`` (server/routes.go): decode -> model name -> input type -> model lookup ->
schedule (load) -> empty input answers ``{"model", "embeddings": []}`` -> embed every input -> L2-normalize
(``dimensions`` truncates, then normalizes again). ``EmbeddingsHandler`` answers one vector as the model
produces it, without the normalization. Neither asks the model for a capability: a completion model embeds
too (its last token's final hidden state, see ``engine.embedder``).

``num_ctx`` is taken as Ollama's handler reads it, unclamped: ``/api/embed`` truncates to it (0 or less
bounds nothing but leaves Ollama's minimum runner context of 4 tokens); the legacy ``/api/embeddings``
truncates silently to the runner's context, ``max(num_ctx, 4)``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any, Protocol

from aiohttp import web

from ..durations import parse_keep_alive
from ..engine.options import MIN_NUM_CTX, resolve_options
from ..errors import BadRequest, InternalError, ModelFileNotFound, ModelNotFound, OllamaError
from ..names import ModelName
from ..options_schema import coerce_option
from ..store import StoredModel
from .app import ENGINE, SETTINGS, STORE
from .decode import read_json
from .engine_api import EngineService
from .streaming import json_response

log = logging.getLogger(__name__)

NAN_OR_INF = "embedding contains NaN or Inf values"
INVALID_INPUT = "invalid input type"


class EmbedWorker(Protocol):
    """What a runner's worker must offer for these routes (``ollama_torch.engine.embedder.Embedder``)."""

    async def embed(self, texts: Sequence[str], *, truncate: bool = True, num_ctx: int | None = None) -> Any: ...


# -- pure helpers ------------------------------------------------------------------------------------
def normalize(vec: Sequence[float]) -> list[float]:
    """Ollama's ``normalize``: unit L2 norm (norm floored at 1e-12); NaN or Inf anywhere is an error."""
    total = math.fsum(v * v for v in vec)
    if not math.isfinite(total):
        raise BadRequest(NAN_OR_INF)
    scale = 1.0 / max(math.sqrt(total), 1e-12)
    return [v * scale for v in vec]


def shape_vector(vec: Sequence[float], dimensions: int) -> list[float]:
    """Normalize; with ``0 < dimensions < len(vec)`` keep the first ``dimensions`` values and normalize again.
    Other values of ``dimensions`` are ignored, as Ollama ignores them."""
    out = normalize(vec)
    if 0 < dimensions < len(out):
        out = normalize(out[:dimensions])
    return out


def parse_input(value: Any) -> list[str]:
    """``input``: a string (``""`` means none) or a list of strings; anything else is ``invalid input type``."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise BadRequest(INVALID_INPUT)


# -- shared steps ------------------------------------------------------------------------------------
def _lookup(request: web.Request, model_text: str, *, required: OllamaError) -> StoredModel:
    """Name rules, then the store: ``required`` for an empty name, 400 for an invalid one, and the
    scheduler's 404 (``model "x" not found, try pulling it first``) for a missing one."""
    if not model_text:
        raise required
    name = ModelName.parse(model_text)
    if not name.is_valid:
        raise BadRequest("invalid model name")
    try:
        return request.app[STORE].get(name)
    except ModelNotFound:
        raise ModelFileNotFound(model_text) from None


def _num_ctx(request: web.Request, stored: StoredModel, options: dict[str, Any]) -> int:
    """``num_ctx`` as Ollama's embed handler sees it: the request's option, else the model's parameter,
    else the server's default, not clamped (generation raises it to 4; the handler does not, so num_ctx 3
    keeps 3 tokens and 1 or 0 are errors). The other options are validated as for generation."""
    settings = request.app[SETTINGS]
    without = lambda opts: {k: v for k, v in opts.items() if k != "num_ctx"}  # noqa: E731
    resolve_options(without(stored.params), without(options), default_num_ctx=settings.default_num_ctx)
    for source in (options, stored.params):
        if source.get("num_ctx") is not None:
            try:
                return int(coerce_option("num_ctx", source["num_ctx"]))
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
    return settings.default_num_ctx


def _engine(request: web.Request) -> EngineService:
    engine = request.app.get(ENGINE)
    if engine is None:
        raise InternalError("the inference engine is not available")
    return engine


async def _acquire(engine: EngineService, stored: StoredModel, keep_alive: float | None) -> tuple[Any, float]:
    try:
        result: tuple[Any, float] = await engine.acquire(stored, keep_alive)
    except OllamaError:
        raise
    except Exception as exc:  # a load failure: Ollama's handleScheduleError default branch
        log.exception("loading %s failed", stored.name)
        raise InternalError(str(exc) or type(exc).__name__) from exc
    return result


def _worker(runner: Any, stored: StoredModel) -> EmbedWorker:
    """The runner's embedding worker (a completion model's is made over its weights on first use)."""
    make = getattr(runner, "embedding_worker", None)
    worker = make() if callable(make) else getattr(runner, "worker", None)
    if worker is None or not hasattr(worker, "embed"):
        raise InternalError(f"{stored.name} cannot embed")
    embed_worker: EmbedWorker = worker
    return embed_worker


# -- handlers ----------------------------------------------------------------------------------------
async def embed(request: web.Request) -> web.Response:
    started = time.perf_counter()
    fields = await read_json(request, "EmbedRequest")
    model_text = fields.str("model")
    truncate = fields.opt_bool("truncate")
    dimensions = fields.int("dimensions")
    options = fields.dict("options")
    keep_alive = parse_keep_alive(fields.raw("keep_alive"))
    if not model_text:
        raise ModelNotFound("")  # Ollama: 404 model '' not found
    if not ModelName.parse(model_text).is_valid:
        raise BadRequest("invalid model name")
    texts = parse_input(fields.raw("input"))
    stored = _lookup(request, model_text, required=ModelNotFound(""))
    num_ctx = _num_ctx(request, stored, options)

    engine = _engine(request)
    runner, _ = await _acquire(engine, stored, keep_alive)
    loaded_at = time.perf_counter()
    try:
        if not texts:
            return json_response({"model": model_text, "embeddings": []})
        try:
            result = await _worker(runner, stored).embed(texts, truncate=truncate is not False, num_ctx=num_ctx)
        except OllamaError:
            raise
        except Exception as exc:  # HEAD answers runner errors that carry no status with 400
            log.exception("embedding with %s failed", stored.name)
            raise BadRequest(str(exc).strip() or type(exc).__name__) from exc
    finally:
        engine.release(runner)
    embeddings = [shape_vector(vec, dimensions) for vec in result.vectors]
    body: dict[str, Any] = {
        "model": model_text,
        "embeddings": embeddings,
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": int((loaded_at - started) * 1e9),
    }
    if result.prompt_eval_count:
        body["prompt_eval_count"] = result.prompt_eval_count
    return json_response(body)


async def embeddings(request: web.Request) -> web.Response:
    fields = await read_json(request, "EmbeddingRequest")
    model_text = fields.str("model")
    prompt = fields.str("prompt")
    options = fields.dict("options")
    keep_alive = parse_keep_alive(fields.raw("keep_alive"))
    stored = _lookup(request, model_text, required=BadRequest("model is required"))
    num_ctx = max(_num_ctx(request, stored, options), MIN_NUM_CTX)  # the runner's context

    engine = _engine(request)
    runner, _ = await _acquire(engine, stored, keep_alive)
    try:
        if not prompt:
            return json_response({"embedding": []})
        try:
            result = await _worker(runner, stored).embed([prompt], truncate=True, num_ctx=num_ctx)
        except Exception as exc:  # the legacy handler answers every runner error with 500
            message = exc.message if isinstance(exc, OllamaError) else (str(exc).strip() or type(exc).__name__)
            raise InternalError(message) from exc
    finally:
        engine.release(runner)
    vector = result.vectors[0]
    if not math.isfinite(math.fsum(v * v for v in vector)):
        raise InternalError(NAN_OR_INF)
    return json_response({"embedding": vector})


def setup(app: web.Application) -> None:
    app.router.add_route("POST", "/api/embed", embed)
    app.router.add_route("POST", "/api/embeddings", embeddings)
