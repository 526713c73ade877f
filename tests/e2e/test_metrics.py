"""``GET /metrics`` scraped from the real server process after real requests, parsed with prometheus-client's
own parser: the counters move by what the requests did (tokens in and out as the answers report them,
prefix-cache hits, requests by route and status), the latency histograms count each generation, and the
engine's live state (the loaded model, its memory and KV cache) is there."""

from __future__ import annotations

import time
from collections import defaultdict

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


def scrape(http: httpx.Client) -> Samples:
    response = http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    out: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[sample.name][frozenset(sample.labels.items())] = sample.value
    return out


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(frozenset(labels.items()), 0.0)


def test_metrics_follow_the_requests(http: httpx.Client, smollm2: str) -> None:
    model = smollm2
    before = scrape(http)
    ask = [{"role": "user", "content": "Name a colour."}]
    chat = http.post("/api/chat", json={"model": model, "messages": ask, "stream": False, "options": {"temperature": 0, "num_predict": 6}}).json()
    again = http.post("/v1/chat/completions", json={"model": model, "messages": ask, "max_tokens": 6, "temperature": 0}).json()
    message = http.post("/v1/messages", json={"model": model, "max_tokens": 4, "messages": ask, "stream": True})
    assert message.status_code == 200
    assert http.post("/api/chat", json={"model": "no-such-model", "messages": ask}).status_code == 404
    after = scrape(http)

    def delta(name: str, **labels: str) -> float:
        return get(after, name, **labels) - get(before, name, **labels)

    requests = "ollama_torch_http_requests_total"
    assert delta(requests, endpoint="/api/chat", method="POST", status="200") == 1
    assert delta(requests, endpoint="/api/chat", method="POST", status="404") == 1
    assert delta(requests, endpoint="/v1/chat/completions", method="POST", status="200") == 1
    assert delta(requests, endpoint="/v1/messages", method="POST", status="200") == 1
    assert delta(requests, endpoint="/metrics", method="GET", status="200") == 1  # the first scrape
    usage = again["usage"]
    generated = chat["eval_count"] + usage["completion_tokens"] + 4
    assert delta("ollama_torch_generated_tokens_total", model=model) == generated
    # the whole prompt of each: /v1 reports it; the second was served from the prefix cache
    assert delta("ollama_torch_prompt_tokens_total", model=model) >= 2 * usage["prompt_tokens"]
    assert delta("ollama_torch_prefix_cache_hit_tokens_total", model=model) >= usage["prompt_tokens_details"]["cached_tokens"] > 0
    assert delta("ollama_torch_generations_total", model=model, reason="length") == 3
    assert delta("ollama_torch_time_to_first_token_seconds_count", model=model) == 3
    assert delta("ollama_torch_inter_token_latency_seconds_count", model=model) >= generated - 3 - 2  # stop strings hold some back
    assert get(after, "ollama_torch_time_to_first_token_seconds_sum", model=model) > 0
    assert get(after, "ollama_torch_loaded_models") >= 1
    assert get(after, "ollama_torch_model_memory_bytes", model=model) > 100e6  # SmolLM2-135M in float32
    assert get(after, "ollama_torch_kv_cache_bytes", model=model) > 0
    assert get(after, "ollama_torch_batch_capacity", model=model) == 8
    # the last request leaves its batch row just after its answer ends (the worker stores its prefix first)
    deadline = time.monotonic() + 10
    while get(after, "ollama_torch_running_requests", model=model) and time.monotonic() < deadline:
        time.sleep(0.05)
        after = scrape(http)
    assert get(after, "ollama_torch_running_requests", model=model) == 0 and get(after, "ollama_torch_queued_requests", model=model) == 0
    assert get(after, "ollama_torch_process_resident_memory_bytes") > 0
