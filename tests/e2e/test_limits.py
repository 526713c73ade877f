"""Server limits through a dedicated real server process: OLLAMA_NUM_PARALLEL bounds the batch,
OLLAMA_MAX_QUEUE answers 503 beyond it, OLLAMA_MAX_LOADED_MODELS evicts the least recently used model; a
very long chat is fitted to num_ctx in seconds."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import ollama
import pytest

from tests.e2e.conftest import upload_dir
from tests.server_process import ServerProcess, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("limits")
    env = {"OLLAMA_NUM_PARALLEL": "1", "OLLAMA_MAX_QUEUE": "1", "OLLAMA_MAX_LOADED_MODELS": "1"}
    server = start_server(root / "models", root / "server.log", env=env)
    yield server
    server.stop()


def test_queue_limit_and_lru(limited: ServerProcess, tiny_llama_dir: Path, tiny_bert_dir: Path) -> None:
    client = ollama.Client(host=limited.url, timeout=120)
    client.create(model="tiny", files=upload_dir(client, tiny_llama_dir))
    client.create(model="tiny-embed", files=upload_dir(client, tiny_bert_dir))
    client.generate(model="tiny", prompt="")  # load

    def generate(_: int) -> int:
        r = httpx.post(f"{limited.url}/api/generate", json={"model": "tiny", "prompt": "hello", "stream": False, "options": {"num_predict": 400, "temperature": 1.0, "seed": 7}}, timeout=120)
        if r.status_code == 503:
            assert r.json() == {"error": "server busy, please try again.  maximum pending requests exceeded"}
        return r.status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(generate, range(4)))
    assert statuses.count(200) >= 2 and 503 in statuses  # 1 running + 1 queued; the rest are refused
    engine = httpx.get(f"{limited.url}/api/x/engine").json()["models"]
    assert engine[0]["batch_size"] == 1

    loaded = [m["name"] for m in httpx.get(f"{limited.url}/api/ps").json()["models"]]
    assert loaded == ["tiny:latest"]
    client.embed(model="tiny-embed", input="hello")
    loaded = [m["name"] for m in httpx.get(f"{limited.url}/api/ps").json()["models"]]
    assert loaded == ["tiny-embed:latest"]  # OLLAMA_MAX_LOADED_MODELS=1: the idle one made room


def test_ten_thousand_messages_are_fitted_in_seconds(limited: ServerProcess, tiny_llama_dir: Path) -> None:
    """A chat of 10,000 messages is answered, cut as Ollama cuts it (the system message, then the newest
    messages that fit num_ctx), in seconds: fitting once re-rendered the history per dropped message and
    never answered."""
    from transformers import AutoTokenizer

    client = ollama.Client(host=limited.url, timeout=120)
    client.create(model="tiny", files=upload_dir(client, tiny_llama_dir))
    client.generate(model="tiny", prompt="")  # load, so the timing below is the request's own
    system = {"role": "system", "content": "You answer briefly."}
    history = [system] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}: the sky is blue because of Rayleigh scattering"}
        for i in range(10_000)
    ]
    num_ctx = 256
    body = {"model": "tiny", "messages": history, "stream": False, "options": {"num_ctx": num_ctx, "num_predict": 2, "temperature": 0}}
    with httpx.Client(base_url=limited.url, timeout=120) as http:
        started = time.perf_counter()
        r = http.post("/api/chat", json=body)
        elapsed = time.perf_counter() - started
        assert r.status_code == 200, r.text
        print(f"10,000 messages answered in {elapsed:.2f} s")
        assert elapsed < 20, elapsed
        assert 0 < r.json()["prompt_eval_count"] <= num_ctx
        rendered = http.post("/api/chat", json={**body, "_debug_render_only": True}).json()["_debug_info"]["rendered_template"]
    first = min(int(i) for i in re.findall(r"message (\d+):", rendered))
    assert rendered.startswith("<|im_start|>system\nYou answer briefly.<|im_end|>") and "message 9999:" in rendered
    # Ollama's cut: the first one that fits, so one message more would not.
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)

    def tokens_from(i: int) -> int:
        text = tokenizer.apply_chat_template([system, *history[1 + i :]], tokenize=False, add_generation_prompt=True)
        assert isinstance(text, str)
        return len(tokenizer.encode(text, add_special_tokens=False))

    assert tokens_from(first) <= num_ctx < tokens_from(first - 1)
