"""Server limits through a dedicated real server process: OLLAMA_NUM_PARALLEL bounds the batch,
OLLAMA_MAX_QUEUE answers 503 beyond it, OLLAMA_MAX_LOADED_MODELS evicts the least recently used model."""

from __future__ import annotations

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
        r = httpx.post(f"{limited.url}/api/generate", json={"model": "tiny", "prompt": "hello", "stream": False, "options": {"num_predict": 400, "temperature": 1.0}}, timeout=120)
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
