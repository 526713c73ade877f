"""``Engine``: the one object the HTTP layer calls (``engine.api.EngineAPI``).

Every call is three verbs: acquire the model's runner from the ``Scheduler`` (loading it if needed, the one
place that answers 503 when too many requests wait), run the work on the model's own thread, release the
runner (its keep-alive starts). Routes get typed chunks and results back; runners, loaded models and
workers stay in here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from ..errors import BadRequest, InternalError, OllamaError
from ..names import ModelName
from ..settings import Settings
from ..store import ModelStore, StoredModel
from . import tokenization
from .api import (
    Chunk,
    DetokenizeCall,
    EmbedCall,
    EmbeddingFailed,
    Embeddings,
    GenerationCall,
    Rendered,
    RerankCall,
    Reranked,
    RunnerStatus,
    TokenizeCall,
    Tokenized,
    TokenizerInfo,
)
from .generation import prepare, render, stream
from .loader import LoadedModel
from .lora import AdapterRef, adapter_refs
from .reranker import rank
from .scheduler import Runner, Scheduler
from .threads import in_fresh_thread
from .worker import ModelWorker

log = logging.getLogger(__name__)
T = TypeVar("T")


class Engine:
    def __init__(self, settings: Settings, store: ModelStore) -> None:
        self.settings = settings
        self.scheduler = Scheduler(settings, store)

    # -- generation --------------------------------------------------------------------------------------
    async def generate(self, call: GenerationCall) -> AsyncIterator[Chunk]:
        runner, load_seconds = await self._acquire(call.model, call.keep_alive)
        try:
            worker = runner.generator()
            adapters = await self._adapters(call.model)
            prepared = await _on_thread(prepare, runner.model, call)
            async for chunk in stream(worker, call, prepared, load_seconds, adapters):
                yield chunk
        finally:
            self.scheduler.release(runner)

    async def render(self, call: GenerationCall) -> Rendered:
        return await self._with_runner(call.model, call.keep_alive, lambda runner: _on_thread(render, runner.model, call))

    # -- embeddings ----------------------------------------------------------------------------------------
    async def embed(self, call: EmbedCall) -> Embeddings:
        runner, load_seconds = await self._acquire(call.model, call.keep_alive)
        try:
            if not call.inputs:
                return Embeddings((), 0, load_seconds)
            if runner.reranks:  # a cross-encoder scores pairs; it has no sentence vector to give
                raise BadRequest(f'"{call.model.name.display_shortest}" does not support embedding')
            try:
                adapters = await self._adapters(call.model)
                result = await runner.embedding_worker().embed(call.inputs, truncate=call.truncate, num_ctx=call.num_ctx, adapters=adapters)
            except OllamaError as exc:
                raise EmbeddingFailed(exc.message, exc) from exc
            except Exception as exc:
                log.exception("embedding with %s failed", call.model.name)
                raise EmbeddingFailed(str(exc).strip() or type(exc).__name__) from exc
        finally:
            self.scheduler.release(runner)
        return Embeddings(tuple(tuple(v) for v in result.vectors), result.prompt_eval_count, load_seconds)

    # -- reranking -------------------------------------------------------------------------------------------
    async def rerank(self, call: RerankCall) -> Reranked:
        runner, load_seconds = await self._acquire(call.model, call.keep_alive)
        try:
            reranker = runner.reranker()
            try:
                result = await reranker.score(call.query, call.documents)
            except OllamaError:
                raise
            except Exception as exc:
                log.exception("reranking with %s failed", call.model.name)
                raise InternalError(str(exc).strip() or type(exc).__name__) from exc
        finally:
            self.scheduler.release(runner)
        return Reranked(rank(result.scores, call.top_n), result.prompt_eval_count, load_seconds)

    # -- the tokenizer (engine/tokenization.py): the loaded runner's, the one its generations use -----------
    async def tokenize(self, call: TokenizeCall) -> Tokenized:
        return await self._with_runner(call.model, None, lambda r: in_fresh_thread(tokenization.tokenize, r.model, call))

    async def detokenize(self, call: DetokenizeCall) -> str:
        return await self._with_runner(call.model, None, lambda r: in_fresh_thread(tokenization.detokenize, r.model, call.tokens))

    async def tokenizer_info(self, model: StoredModel) -> TokenizerInfo:
        return await self._with_runner(model, None, lambda r: in_fresh_thread(tokenization.info, r.model))

    # -- residency -----------------------------------------------------------------------------------------
    async def load(self, model: StoredModel, keep_alive: float | None) -> None:
        runner, _ = await self._acquire(model, keep_alive)
        self.scheduler.release(runner)

    async def unload(self, model: StoredModel) -> None:
        await self.scheduler.unload_model(model)

    async def forget(self, name: ModelName) -> None:
        await self.scheduler.forget(name)

    def status(self) -> list[RunnerStatus]:
        return [self._status(r) for r in self.scheduler.loaded_models() if r.loaded is not None]

    async def close(self) -> None:
        await self.scheduler.close()

    # -- helpers ---------------------------------------------------------------------------------------------
    async def _acquire(self, model: StoredModel, keep_alive: float | None) -> tuple[Runner, float]:
        try:
            return await self.scheduler.acquire(model, keep_alive)
        except OllamaError:
            raise
        except Exception as exc:  # a load failure: Ollama's handleScheduleError default branch
            log.exception("loading %s failed", model.name)
            raise InternalError(str(exc) or type(exc).__name__) from exc

    async def _with_runner(self, model: StoredModel, keep_alive: float | None, work: Callable[[Runner], Awaitable[T]]) -> T:
        runner, _ = await self._acquire(model, keep_alive)
        try:
            return await work(runner)
        finally:
            self.scheduler.release(runner)

    async def _adapters(self, model: StoredModel) -> tuple[AdapterRef, ...]:
        """The model's LoRA adapters as directories the engine loads (made once, off the event loop)."""
        if not model.adapters:
            return ()
        return await asyncio.to_thread(adapter_refs, self.scheduler.store, model)

    def _status(self, runner: Runner) -> RunnerStatus:
        loaded, worker = runner.model, runner.worker
        generating = isinstance(worker, ModelWorker)
        cache = worker.cache_bytes() if isinstance(worker, ModelWorker) else 0
        size = loaded.size_bytes + cache
        return RunnerStatus(
            model=runner.stored,
            size=size,
            size_vram=size if loaded.device.type == "cuda" else 0,
            expires_at=runner.expires_at if math.isfinite(runner.expires_at) else math.inf,
            context_length=self.scheduler.num_ctx_for(runner),
            running=worker.running if isinstance(worker, ModelWorker) else 0,
            waiting=max(0, worker.active - worker.running) if isinstance(worker, ModelWorker) else 0,
            batch_size=worker.max_rows if worker is not None else 0,
            kv_cache_bytes=cache if generating else 0,
        )


async def _on_thread(fn: Callable[[LoadedModel, GenerationCall, threading.Event], T], loaded: LoadedModel, call: GenerationCall) -> T:
    """Prompt work on a fresh thread; cancelled (the client left) it stops at its next render."""
    cancel = threading.Event()
    return await in_fresh_thread(fn, loaded, call, cancel, cancel=cancel)
