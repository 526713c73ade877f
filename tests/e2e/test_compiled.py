"""``OLLAMA_TORCH_COMPILE=1`` through the real server: the load compiles the decode step (logged, with
its time in ``load_duration``), the step is saved in ``<models>/compiled`` with inductor's kernels and a
reload after an unload loads it, and every answer is Transformers' own greedy output: one stream decoding through the compiled step,
and two streams together (a batch of two, compiled as its own bucket, then the longer one goes on alone,
in the bucket of one, over the same cache)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ollama
import pytest

from tests.e2e.conftest import greedy_reference, upload_dir
from tests.server_process import ServerProcess, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compiled_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("compiled")
    server = start_server(root / "models", root / "server.log", env={"OLLAMA_TORCH_COMPILE": "1", "OLLAMA_NUM_PARALLEL": "4"})
    yield server
    server.stop()


def test_compiled_decode_gives_transformers_greedy_tokens(compiled_server: ServerProcess, tiny_llama_dir: Path) -> None:
    from transformers import AutoTokenizer

    client = ollama.Client(host=compiled_server.url, timeout=600)
    client.create(model="tiny", files=upload_dir(client, tiny_llama_dir))
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    reference = greedy_reference(tiny_llama_dir)

    def run(prompt: str, n: int) -> tuple[list[int], ollama.GenerateResponse]:
        done = client.generate(model="tiny", prompt=prompt, template="{{ .Prompt }}",
                               options={"temperature": 0, "num_predict": n, "num_ctx": 1024})
        assert done.context is not None
        return list(done.context[len(tok(prompt)["input_ids"]):]), done

    tokens, first = run("Why is the sea blue?", 300)  # past the cache's first capacity: its buffers grow
    assert tokens == reference("Why is the sea blue?", 300)
    models = compiled_server.models
    assert any((models / "compiled").rglob("*.py")) or any((models / "compiled").rglob("*.so"))  # inductor's kernels
    assert first.load_duration is not None and first.load_duration > 0

    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(run, p, n) for p, n in (("Once upon a time", 40), ("The lighthouse keeper", 200))]
        results = [f.result()[0] for f in runs]
    assert results == [reference("Once upon a time", 40), reference("The lighthouse keeper", 200)]

    client.generate(model="tiny", prompt="", keep_alive=0)  # unload; the next request loads it again
    tokens, _ = run("Why is the sea blue?", 60)
    assert tokens == reference("Why is the sea blue?", 60)
    log = compiled_server.log()
    assert log.count("decode step compiled in") == 2, log
    # the first load compiled the step ahead of time and saved it; the reload loaded it from its file
    assert "(1 rows: compiled, 2 rows: compiled)" in log and "(1 rows: loaded, 2 rows: loaded)" in log, log
    assert len(list((models / "compiled").glob("decode-*.pt2"))) == 2  # OLLAMA_NUM_PARALLEL=4: buckets 1 and 2
    assert not compiled_server.compiled_decode_fallback(), log
