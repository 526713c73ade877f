"""``Scheduler``: which models are resident, for how long, and who waits.

Ollama's rules (server/sched.go): a request for a loaded model goes straight to its runner; one that needs
a load waits in a bounded queue (``OLLAMA_MAX_QUEUE``, then 503); at most ``OLLAMA_MAX_LOADED_MODELS``
stay loaded, the least recently used idle one is evicted for a new one; a runner whose last request ends
expires after that request's ``keep_alive`` (0 = now, negative = never).

Runners are keyed by their weights, not their name: ``pirate`` made ``FROM smollm2`` with a new system
prompt shares the loaded SmolLM2 instead of loading it twice.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import BadRequest, InternalError, ServerBusy
from ..names import ModelName
from ..settings import Settings
from ..store import ModelStore, StoredModel
from .threads import in_fresh_thread

if TYPE_CHECKING:
    from .embedder import Embedder
    from .loader import LoadedModel
    from .reranker import Reranker
    from .worker import ModelWorker

log = logging.getLogger(__name__)


def weights_key(model: StoredModel) -> str:
    gguf = model.gguf_layer
    if gguf is not None:
        return gguf.digest
    return "|".join(sorted(f"{rel}={layer.digest}" for rel, layer in model.hf_files.items()))


@dataclass
class Runner:
    key: str
    stored: StoredModel
    loaded: LoadedModel | None  # None once unloaded
    worker: ModelWorker | Embedder | Reranker | None  # the model's own: generation, embedding or reranking
    loaded_at: float = field(default_factory=time.time)
    refs: int = 0
    keep_alive: float = 300.0
    expires_at: float = 0.0  # wall clock; math.inf = never
    last_used: float = field(default_factory=time.monotonic)
    timer: asyncio.TimerHandle | None = None
    unloading: bool = False
    embedder: Embedder | None = None  # a completion model's Embedder over its weights, made on first use

    @property
    def name(self) -> ModelName:
        return self.stored.name

    @property
    def model(self) -> LoadedModel:
        if self.loaded is None:
            raise InternalError("model unloaded")
        return self.loaded

    def generator(self) -> ModelWorker:
        """The model's generation worker; a 400 for an embedding-only model."""
        from .worker import ModelWorker

        if not isinstance(self.worker, ModelWorker):
            raise InternalError(f"{self.name.display_shortest} was loaded as an embedding model and cannot generate")
        return self.worker

    def reranker(self) -> Reranker:
        """A cross-encoder's worker; a 400 in Ollama's form for any other model."""
        from .reranker import Reranker

        if not isinstance(self.worker, Reranker):
            raise BadRequest(f'"{self.name.display_shortest}" does not support rerank')
        return self.worker

    @property
    def reranks(self) -> bool:
        from .reranker import Reranker

        return isinstance(self.worker, Reranker)

    def embedding_worker(self) -> Embedder:
        """What embeds with this runner: an embedding model's own worker; for a completion model an
        ``Embedder`` over the same loaded weights, made on first use (Ollama embeds with any model)."""
        from .embedder import Embedder

        if isinstance(self.worker, Embedder):
            return self.worker
        if self.embedder is None:
            self.embedder = Embedder(self.model)
        return self.embedder


class Scheduler:
    def __init__(self, settings: Settings, store: ModelStore) -> None:
        self.settings = settings
        self.store = store
        self.runners: dict[str, Runner] = {}
        self._loading: dict[str, asyncio.Future[Runner]] = {}  # loads in progress, by weights
        self._changed = asyncio.Event()
        self.pending = 0

    # -- acquiring and releasing -------------------------------------------------------------------------
    async def acquire(self, stored: StoredModel, keep_alive: float | None) -> tuple[Runner, float]:
        """The runner for ``stored``, loading it if needed; returns it with the seconds spent loading.

        The one admission check (Ollama's ``OLLAMA_MAX_QUEUE``): 503 when as many requests already wait,
        for a load or for a row in a loaded model's batch."""
        if self.waiting() >= self.settings.max_queue:
            raise ServerBusy()
        self.pending += 1
        started = time.perf_counter()
        key = weights_key(stored)
        try:
            while True:
                runner = self.runners.get(key)
                if runner is not None and not runner.unloading:
                    self._use(runner, stored, keep_alive)
                    return runner, time.perf_counter() - started  # tiny but real, as Ollama reports it
                if key in self._loading:
                    await self._load(key, stored)
                    continue
                if len(self.runners) + len(self._loading) >= self.settings.effective_max_loaded_models:
                    victim = self._pick_victim()
                    if victim is not None:
                        await self._unload(victim)
                    else:
                        self._changed.clear()
                        await self._changed.wait()
                    continue
                runner = await self._load(key, stored)
                self._use(runner, stored, keep_alive)
                return runner, time.perf_counter() - started
        finally:
            self.pending -= 1

    def waiting(self) -> int:
        """Requests waiting anywhere: for a load, or beyond the batch of the model they hold."""
        return self.pending + sum(max(0, r.refs - r.worker.max_rows) for r in self.runners.values() if r.worker)

    def _use(self, runner: Runner, stored: StoredModel, keep_alive: float | None) -> None:
        runner.refs += 1
        runner.stored = stored
        runner.keep_alive = self.settings.keep_alive if keep_alive is None else keep_alive
        runner.last_used = time.monotonic()
        runner.expires_at = self._deadline(runner.keep_alive)
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None

    def release(self, runner: Runner) -> None:
        runner.refs -= 1
        runner.last_used = time.monotonic()
        if runner.refs > 0:
            return
        runner.expires_at = self._deadline(runner.keep_alive)
        self._changed.set()
        if runner.keep_alive <= 0:
            asyncio.get_running_loop().create_task(self._unload(runner))
        elif math.isfinite(runner.keep_alive):
            runner.timer = asyncio.get_running_loop().call_later(runner.keep_alive, self._expire, runner)

    def _expire(self, runner: Runner) -> None:
        runner.timer = None
        if runner.refs == 0 and self.runners.get(runner.key) is runner:
            asyncio.get_running_loop().create_task(self._unload(runner))

    @staticmethod
    def _deadline(keep_alive: float) -> float:
        return math.inf if not math.isfinite(keep_alive) else time.time() + keep_alive

    def _pick_victim(self) -> Runner | None:
        idle = [r for r in self.runners.values() if r.refs == 0 and not r.unloading]
        return min(idle, key=lambda r: r.last_used) if idle else None

    # -- loading and unloading ---------------------------------------------------------------------------
    async def _load(self, key: str, stored: StoredModel) -> Runner:
        """Load on a thread. The load is registered when it completes even if the request that started it
        has gone away meanwhile (it then expires after the default keep-alive, like any idle runner)."""
        task = self._loading.get(key)
        if task is None:
            task = asyncio.ensure_future(in_fresh_thread(self._load_sync, key, stored))
            self._loading[key] = task
            task.add_done_callback(lambda t: self._loaded(key, t))
        return await asyncio.shield(task)

    def _loaded(self, key: str, task: asyncio.Future[Runner]) -> None:
        self._loading.pop(key, None)
        self._changed.set()
        if task.cancelled() or task.exception() is not None:
            return
        runner = task.result()
        self.runners[key] = runner
        runner.keep_alive = self.settings.keep_alive
        if runner.refs == 0 and math.isfinite(runner.keep_alive):
            # Whoever asked for it takes it at once (``_use`` cancels this); if they left, it expires.
            runner.timer = asyncio.get_running_loop().call_later(max(runner.keep_alive, 1.0), self._expire, runner)

    def _load_sync(self, key: str, stored: StoredModel) -> Runner:
        from .loader import load_model

        loaded = load_model(stored, self.settings, self.store)
        try:
            if loaded.kind == "embedding":
                from .embedder import Embedder

                worker: ModelWorker | Embedder | Reranker = Embedder(loaded)
            elif loaded.kind == "rerank":
                from .reranker import Reranker

                worker = Reranker(loaded)
            else:
                from .worker import ModelWorker

                worker = ModelWorker(loaded, self.settings.effective_num_parallel, prefill_chunk=self.settings.prefill_chunk,
                                     compile_dir=self.settings.compile_dir, compile_at_load=self.settings.compile is True)
        except BaseException:
            loaded.cleanup()
            raise
        return Runner(key=key, stored=stored, loaded=loaded, worker=worker)

    async def _unload(self, runner: Runner) -> None:
        if runner.unloading or self.runners.get(runner.key) is not runner:
            return
        runner.unloading = True
        if runner.timer is not None:
            runner.timer.cancel()
        del self.runners[runner.key]
        await asyncio.to_thread(self._close_sync, runner)
        log.info("unloaded %s", runner.name.display_shortest)
        self._changed.set()

    @staticmethod
    def _close_sync(runner: Runner) -> None:
        if runner.embedder is not None:
            runner.embedder.close()
        if runner.worker is not None:
            runner.worker.close()
        if runner.loaded is not None:
            runner.loaded.cleanup()
        runner.worker = runner.loaded = runner.embedder = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    async def unload_model(self, stored: StoredModel) -> None:
        """``keep_alive: 0`` with an empty prompt: unload now, or as soon as its requests finish."""
        runner = self.runners.get(weights_key(stored))
        if runner is None:
            return
        runner.keep_alive = 0
        runner.expires_at = time.time()
        if runner.refs == 0:
            await self._unload(runner)

    async def forget(self, name: ModelName) -> None:
        """A model was deleted: drop runners whose weights are no longer in the store."""
        for runner in list(self.runners.values()):
            gone = runner.stored.gguf_layer is not None and not self.store.blobs.exists(runner.stored.gguf_layer.digest)
            gone = gone or any(not self.store.blobs.exists(layer.digest) for layer in runner.stored.hf_files.values())
            if gone and runner.refs == 0:
                await self._unload(runner)

    async def close(self) -> None:
        for runner in list(self.runners.values()):
            await self._unload(runner)

    # -- introspection ----------------------------------------------------------------------------------
    def loaded_models(self) -> list[Runner]:
        return sorted(self.runners.values(), key=lambda r: r.expires_at, reverse=True)

    def num_ctx_for(self, runner: Runner) -> int:
        ctx = self.settings.default_num_ctx
        model_max = runner.model.context_length
        return min(ctx, model_max) if model_max else ctx
