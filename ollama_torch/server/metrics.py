"""``GET /metrics``: Prometheus metrics (prometheus-client, its text format; OpenMetrics when asked for).

Three sources, each where it is known:

* every HTTP answer, by a middleware (outermost, so refusals count too): requests by endpoint (the route's
  template, ``/v1/models/{model}``, not the raw path, so a scan cannot grow the label set) and status, their
  duration, and those in flight;
* every generation and embedding, by :class:`MeteredEngine`, which wraps the engine the routes call
  (``engine.api.EngineAPI``) and sees the typed chunks all translators see (native, ``/v1``, Anthropic,
  Responses): tokens in and out and prefix-cache hits by model (``Done``'s ``Stats``), time to the first
  chunk, and the time between chunks (one chunk per decode step, except text held back by a possible stop
  string or tag, whose tokens then arrive together);
* the live state of the engine, read at scrape time from ``EngineAPI.status()``: loaded models and their
  memory, the KV cache, requests running in each batch and waiting for one.

Each application has its own registry (no module-level state), with the process collector added.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from ..engine.api import (
    Chunk,
    Content,
    DetokenizeCall,
    Done,
    EmbedCall,
    Embeddings,
    EngineAPI,
    GenerationCall,
    Logprobs,
    Rendered,
    RerankCall,
    Reranked,
    RunnerStatus,
    Thinking,
    TokenizeCall,
    Tokenized,
    TokenizerInfo,
    ToolCalls,
)
from ..names import ModelName
from ..store import StoredModel

PREFIX = "ollama_torch"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# seconds; a first token includes queueing, loading and the prefill, so its range is wide
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
ITL_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def model_label(model: StoredModel) -> str:
    return model.name.display_shortest


class Metrics:
    """The registry of one application and the metrics the middleware and :class:`MeteredEngine` update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(f"{PREFIX}_http_requests", "HTTP requests answered, by route and status",
                                ["endpoint", "method", "status"], registry=r)
        self.in_flight = Gauge(f"{PREFIX}_http_requests_in_flight", "HTTP requests being answered (streams until their "
                               "last byte), by route", ["endpoint"], registry=r)
        self.request_seconds = Histogram(f"{PREFIX}_http_request_duration_seconds", "Time to answer an HTTP request "
                                         "(streams: to their last byte), by route", ["endpoint"], buckets=DURATION_BUCKETS,
                                         registry=r)
        self.prompt_tokens = Counter(f"{PREFIX}_prompt_tokens", "Tokens in: prompts of generations (the whole "
                                     "prompt), inputs of embeddings and reranked pairs, by model", ["model"], registry=r)
        self.generated_tokens = Counter(f"{PREFIX}_generated_tokens", "Tokens out: generated tokens, by model",
                                        ["model"], registry=r)
        self.cached_tokens = Counter(f"{PREFIX}_prefix_cache_hit_tokens", "Prompt tokens served from the prefix "
                                     "cache instead of being evaluated, by model", ["model"], registry=r)
        self.generations = Counter(f"{PREFIX}_generations", "Generations finished, by model and done_reason",
                                   ["model", "reason"], registry=r)
        self.ttft = Histogram(f"{PREFIX}_time_to_first_token_seconds", "From the call to the engine (queue, load "
                              "and prefill included) to the first generated chunk, by model", ["model"],
                              buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram(f"{PREFIX}_inter_token_latency_seconds", "Time between successive generated chunks "
                             "of a generation (one per decode step), by model", ["model"], buckets=ITL_BUCKETS, registry=r)
        self.engine: EngineAPI | None = None
        r.register(_EngineCollector(self))
        ProcessCollector(namespace=PREFIX, registry=r)


class _EngineCollector(Collector):
    """The engine's live state, read at every scrape from ``EngineAPI.status()``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return self._families([])

    def collect(self) -> Iterable[Metric]:
        engine = self.metrics.engine
        return self._families(engine.status() if engine is not None else [])

    @staticmethod
    def _families(statuses: list[RunnerStatus]) -> list[Metric]:
        loaded = GaugeMetricFamily(f"{PREFIX}_loaded_models", "Models loaded (runners resident in memory)",
                                   value=len(statuses))
        families = {
            "running": GaugeMetricFamily(f"{PREFIX}_running_requests", "Requests decoding in the model's batch "
                                         "(the running batch size)", labels=["model"]),
            "waiting": GaugeMetricFamily(f"{PREFIX}_queued_requests", "Requests waiting for a row in the model's "
                                         "batch (the queue depth)", labels=["model"]),
            "batch_size": GaugeMetricFamily(f"{PREFIX}_batch_capacity", "Rows in the model's batch "
                                            "(OLLAMA_NUM_PARALLEL)", labels=["model"]),
            "size": GaugeMetricFamily(f"{PREFIX}_model_memory_bytes", "Memory a loaded model holds: weights and "
                                      "KV cache", labels=["model"]),
            "size_vram": GaugeMetricFamily(f"{PREFIX}_model_vram_bytes", "Of that, on a GPU", labels=["model"]),
            "kv_cache_bytes": GaugeMetricFamily(f"{PREFIX}_kv_cache_bytes", "The model's batch KV cache",
                                                labels=["model"]),
        }
        for status in statuses:
            for field, family in families.items():
                family.add_metric([model_label(status.model)], float(getattr(status, field)))
        return [loaded, *families.values()]


class MeteredEngine:
    """The engine as the routes call it, observed: every chunk passes through unchanged."""

    def __init__(self, inner: EngineAPI, metrics: Metrics) -> None:
        self.inner, self.metrics = inner, metrics
        metrics.engine = inner

    async def generate(self, call: GenerationCall) -> AsyncIterator[Chunk]:
        model = model_label(call.model)
        m = self.metrics
        started = last = time.perf_counter()
        first = True
        chunks = self.inner.generate(call)
        try:
            async for chunk in chunks:
                if isinstance(chunk, (Content, Thinking, ToolCalls, Logprobs)):
                    now = time.perf_counter()
                    if first:
                        m.ttft.labels(model).observe(now - started)
                        first = False
                    else:
                        m.itl.labels(model).observe(now - last)
                    last = now
                elif isinstance(chunk, Done):
                    stats = chunk.stats
                    m.prompt_tokens.labels(model).inc(stats.prompt_tokens)
                    m.generated_tokens.labels(model).inc(stats.eval_count)
                    m.cached_tokens.labels(model).inc(stats.cached_tokens)
                    m.generations.labels(model, chunk.reason).inc()
                yield chunk
        finally:  # closed with this generator, so a client that goes away stops the generation at once
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def render(self, call: GenerationCall) -> Rendered:
        return await self.inner.render(call)

    async def embed(self, call: EmbedCall) -> Embeddings:
        result = await self.inner.embed(call)
        self.metrics.prompt_tokens.labels(model_label(call.model)).inc(result.prompt_eval_count)
        return result

    async def rerank(self, call: RerankCall) -> Reranked:
        result = await self.inner.rerank(call)
        self.metrics.prompt_tokens.labels(model_label(call.model)).inc(result.prompt_eval_count)
        return result

    async def tokenize(self, call: TokenizeCall) -> Tokenized:
        return await self.inner.tokenize(call)

    async def detokenize(self, call: DetokenizeCall) -> str:
        return await self.inner.detokenize(call)

    async def tokenizer_info(self, model: StoredModel) -> TokenizerInfo:
        return await self.inner.tokenizer_info(model)

    async def load(self, model: StoredModel, keep_alive: float | None) -> None:
        await self.inner.load(model, keep_alive)

    async def unload(self, model: StoredModel) -> None:
        await self.inner.unload(model)

    async def forget(self, name: ModelName) -> None:
        await self.inner.forget(name)

    def status(self) -> list[RunnerStatus]:
        return self.inner.status()

    async def close(self) -> None:
        await self.inner.close()


def _endpoint(request: web.Request) -> str:
    """The route's template (bounded: one per route), or ``unmatched`` when no route took the request."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def metrics_middleware(metrics: Metrics) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        endpoint = _endpoint(request)
        metrics.in_flight.labels(endpoint).inc()
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away (Ollama's status for a cancelled request)
            raise
        finally:
            metrics.in_flight.labels(endpoint).dec()
            metrics.requests.labels(endpoint, request.method, str(status)).inc()
            metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - started)

    return measure


def setup(app: web.Application, metrics: Metrics) -> None:
    async def scrape(request: web.Request) -> web.Response:
        """The text format (OpenMetrics when the scraper's ``Accept`` asks for it)."""
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(metrics.registry), headers={"Content-Type": content_type})

    app.router.add_route("GET", "/metrics", scrape)
