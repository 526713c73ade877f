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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from aiohttp import web

from ..durations import parse_keep_alive
from ..engine.api import EmbedCall, EmbeddingFailed
from ..engine.options import MIN_NUM_CTX, resolve_options
from ..errors import BadRequest, InternalError, ModelFileNotFound, ModelNotFound
from ..options_schema import coerce_option
from ..store import StoredModel
from .decode import Fields, read_json
from .lookup import model_name, stored_model
from .state import SETTINGS, STORE, engine_of
from .streaming import json_response

log = logging.getLogger(__name__)

NAN_OR_INF = "embedding contains NaN or Inf values"
INVALID_INPUT = "invalid input type"


# -- pure helpers ------------------------------------------------------------------------------------
def shape_vectors(vectors: Sequence[Sequence[float]], dimensions: int) -> npt.NDArray[np.float32]:
    """Ollama's ``normalize`` of each vector (unit L2 norm, norm floored at 1e-12; NaN or Inf anywhere is
    an error); with ``0 < dimensions < width`` the first ``dimensions`` values are kept and normalized again
    (other values of ``dimensions`` are ignored, as Ollama ignores them). Float32 [N, D], as Ollama answers."""
    matrix = np.asarray(vectors, dtype=np.float64).reshape(len(vectors), -1)
    if not np.isfinite(matrix).all():
        raise BadRequest(NAN_OR_INF)
    out = _unit(matrix)
    if 0 < dimensions < out.shape[1]:
        out = _unit(out[:, :dimensions])
    return out.astype(np.float32)


def _unit(matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    norms: npt.NDArray[np.float64] = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def normalize(vec: Sequence[float]) -> list[float]:
    """One vector through :func:`shape_vectors` (no cut)."""
    return shape_vector(vec, 0)


def shape_vector(vec: Sequence[float], dimensions: int) -> list[float]:
    """One vector through :func:`shape_vectors`."""
    out: list[float] = shape_vectors([vec], dimensions)[0].tolist()
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


@dataclass(frozen=True)
class EmbedParsed:
    call: EmbedCall
    name: str  # the model as the request named it
    dimensions: int


def parse_embed(request: web.Request, fields: Fields) -> EmbedParsed:
    """``/api/embed``'s checks in Ollama's order: name, input type, model, options."""
    model_text = fields.str("model")
    truncate = fields.opt_bool("truncate")
    dimensions = fields.int("dimensions")
    options = fields.dict("options")
    keep_alive = parse_keep_alive(fields.raw("keep_alive"))
    if not model_text:
        raise ModelNotFound("")  # Ollama: 404 model '' not found
    model_name(model_text)
    texts = parse_input(fields.raw("input"))
    stored = stored_model(request.app[STORE], model_text, empty=ModelNotFound(""), missing=ModelFileNotFound)
    num_ctx = _num_ctx(request, stored, options)
    return EmbedParsed(EmbedCall(stored, tuple(texts), num_ctx, truncate is not False, keep_alive), model_text, dimensions)


async def run_embed(request: web.Request, parsed: EmbedParsed, started: float) -> dict[str, Any]:
    """``/api/embed``'s answer: every input embedded, L2-normalized (``dimensions`` cut first)."""
    try:
        result = await engine_of(request.app).embed(parsed.call)
    except EmbeddingFailed as exc:  # HEAD answers runner errors that carry no status with 400
        raise exc.cause or BadRequest(exc.message) from exc
    if not parsed.call.inputs:
        return {"model": parsed.name, "embeddings": []}
    body: dict[str, Any] = {
        "model": parsed.name,
        "embeddings": shape_vectors(result.vectors, parsed.dimensions),
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": int(result.load_duration * 1e9),
    }
    if result.prompt_eval_count:
        body["prompt_eval_count"] = result.prompt_eval_count
    return body


# -- handlers ----------------------------------------------------------------------------------------
async def embed(request: web.Request) -> web.Response:
    started = time.perf_counter()
    parsed = parse_embed(request, await read_json(request, "EmbedRequest"))
    return json_response(await run_embed(request, parsed, started), arrays=True)


async def embeddings(request: web.Request) -> web.Response:
    fields = await read_json(request, "EmbeddingRequest")
    model_text = fields.str("model")
    prompt = fields.str("prompt")
    options = fields.dict("options")
    keep_alive = parse_keep_alive(fields.raw("keep_alive"))
    stored = stored_model(request.app[STORE], model_text, empty=BadRequest("model is required"), missing=ModelFileNotFound)
    num_ctx = max(_num_ctx(request, stored, options), MIN_NUM_CTX)  # the runner's context
    call = EmbedCall(stored, (prompt,) if prompt else (), num_ctx, True, keep_alive)
    try:
        result = await engine_of(request.app).embed(call)
    except EmbeddingFailed as exc:  # the legacy handler answers every runner error with 500
        raise InternalError(exc.message) from exc
    if not prompt:
        return json_response({"embedding": []})
    vector = np.asarray(result.vectors[0], dtype=np.float32)
    if not np.isfinite(vector).all():
        raise InternalError(NAN_OR_INF)
    return json_response({"embedding": vector}, arrays=True)


def setup(app: web.Application) -> None:
    app.router.add_route("POST", "/api/embed", embed)
    app.router.add_route("POST", "/api/embeddings", embeddings)
