"""``GET /metrics`` over a scripted engine, parsed with prometheus-client's own parser: requests by route and
status, tokens in and out and prefix-cache hits by model, the latency histograms, and the engine's live
state from ``EngineAPI.status()``. ``tests/e2e/test_metrics.py`` scrapes the real server."""

from __future__ import annotations

import math
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ollama_torch.engine.api import RunnerStatus
from ollama_torch.names import ModelName

from .scripted import Client, ScriptedEngine, scripted_store, serve


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return parsed.get((name, frozenset(labels.items())), math.nan)


def test_requests_tokens_latency_and_engine_state(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False}
        for _ in range(2):
            assert (await client.post("/api/chat", json=body)).status == 200
        assert (await client.post("/v1/messages", json={"model": "m", "max_tokens": 5, "messages": body["messages"]})).status == 200
        assert (await client.post("/api/chat", json={**body, "model": "nope"})).status == 404
        assert (await client.get("/v1/models/some/long/name")).status == 404
        assert (await client.get("/no/such/path")).status == 404
        assert (await client.post("/api/embed", json={"model": "m", "input": ["a", "b"]})).status == 200
        stored = scripted_store(tmp_path).get(ModelName.parse("m"))
        engine.statuses = [RunnerStatus(stored, size=1000, size_vram=0, expires_at=0.0, context_length=4096, running=2,
                                        waiting=3, batch_size=8, kv_cache_bytes=256)]
        r = await client.get("/metrics")
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        parsed = samples(await r.text())
        requests = "ollama_torch_http_requests_total"
        assert value(parsed, requests, endpoint="/api/chat", method="POST", status="200") == 2
        assert value(parsed, requests, endpoint="/api/chat", method="POST", status="404") == 1
        assert value(parsed, requests, endpoint="/v1/messages", method="POST", status="200") == 1
        assert value(parsed, requests, endpoint="/v1/models/{model}", method="GET", status="404") == 1
        assert value(parsed, requests, endpoint="unmatched", method="GET", status="404") == 1
        assert value(parsed, "ollama_torch_http_requests_in_flight", endpoint="/api/chat") == 0
        assert value(parsed, "ollama_torch_http_requests_in_flight", endpoint="/metrics") == 1  # this scrape
        # three generations of the "hi" script (12 prompt tokens, 5 of them cached, 3 generated), one embed (4)
        assert value(parsed, "ollama_torch_prompt_tokens_total", model="m:latest") == 3 * 12 + 4
        assert value(parsed, "ollama_torch_generated_tokens_total", model="m:latest") == 3 * 3
        assert value(parsed, "ollama_torch_prefix_cache_hit_tokens_total", model="m:latest") == 3 * 5
        assert value(parsed, "ollama_torch_generations_total", model="m:latest", reason="stop") == 3
        assert value(parsed, "ollama_torch_time_to_first_token_seconds_count", model="m:latest") == 3
        assert value(parsed, "ollama_torch_inter_token_latency_seconds_count", model="m:latest") == 3  # 2 chunks each
        assert value(parsed, "ollama_torch_loaded_models") == 1
        for name, expected in (("running_requests", 2), ("queued_requests", 3), ("batch_capacity", 8),
                               ("model_memory_bytes", 1000), ("model_vram_bytes", 0), ("kv_cache_bytes", 256)):
            assert value(parsed, f"ollama_torch_{name}", model="m:latest") == expected, name
        r = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert r.headers["Content-Type"].startswith("application/openmetrics-text") and (await r.text()).endswith("# EOF\n")

    serve(tmp_path, check)


def test_refusals_count_and_metrics_need_the_key(tmp_path: Path) -> None:
    async def check(client: Client, engine: ScriptedEngine) -> None:
        assert (await client.get("/metrics")).status == 401
        assert (await client.get("/api/tags", headers={"Host": "evil.example"})).status == 403
        r = await client.get("/metrics", headers={"Authorization": "Bearer k"})
        parsed = samples(await r.text())
        assert value(parsed, "ollama_torch_http_requests_total", endpoint="/metrics", method="GET", status="401") == 1
        assert value(parsed, "ollama_torch_http_requests_total", endpoint="/api/tags", method="GET", status="403") == 1
        assert value(parsed, "ollama_torch_loaded_models") == 0

    serve(tmp_path, check, api_key="k")
