"""Chunked prefill through the real server: a long prompt arriving while other streams decode is read a
chunk per step (OLLAMA_TORCH_PREFILL_CHUNK=32 here, to force many chunks on a tiny model), and every answer
is still Transformers' own greedy output: the long one (its cache built in chunks, then joined to the batch)
and the streams that kept decoding meanwhile."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ollama
import pytest

from tests.e2e.conftest import greedy_reference, upload_dir
from tests.server_process import ServerProcess, start_server

pytestmark = pytest.mark.slow
LONG = " ".join(f"The lighthouse keeper counted ship number {i} and wrote it in the log." for i in range(8))


@pytest.fixture(scope="module")
def chunked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("chunked")
    server = start_server(root / "models", root / "server.log", env={"OLLAMA_TORCH_PREFILL_CHUNK": "32"})
    yield server
    server.stop()


def test_long_prompt_read_in_chunks_while_others_decode(chunked_server: ServerProcess, tiny_llama_dir: Path) -> None:
    from transformers import AutoTokenizer

    client = ollama.Client(host=chunked_server.url, timeout=600)
    client.create(model="tiny", files=upload_dir(client, tiny_llama_dir))
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    reference = greedy_reference(tiny_llama_dir)

    def run(prompt: str, n: int, started: threading.Event | None = None) -> list[int]:
        c = ollama.Client(host=chunked_server.url, timeout=600)
        done = None
        for part in c.generate(model="tiny", prompt=prompt, template="{{ .Prompt }}", stream=True,  # its context back
                               options={"temperature": 0, "num_predict": n, "num_ctx": 512}):
            if started is not None:
                started.set()  # decoding
            done = part
        n_prompt = len(tok(prompt)["input_ids"])
        assert done is not None and done.context is not None
        assert done.prompt_eval_count == n_prompt  # every prompt token evaluated, in chunks or not
        return list(done.context[n_prompt:])

    assert len(tok(LONG)["input_ids"]) > 300  # ten chunks and more
    client.generate(model="tiny", prompt="", keep_alive="5m")
    short = ["Hello! How are you?", "Why is the sea blue?", "Once upon a time"]
    with ThreadPoolExecutor(4) as pool:
        events = [threading.Event() for _ in short]
        decoding = [pool.submit(run, p, 400, e) for p, e in zip(short, events, strict=True)]
        assert all(e.wait(60) for e in events)  # they are decoding when the long prompt arrives
        long = pool.submit(run, LONG, 24)
        results = [f.result() for f in decoding]
        long_result = long.result()
    for prompt, got in zip(short, results, strict=True):
        assert got == reference(prompt, 400), prompt
    assert long_result == reference(LONG, 24)
    log = chunked_server.log()
    assert "step failed" not in log
    assert re.search(r"reading a \d+-token prompt in chunks of 32 while [123] rows decode", log)
