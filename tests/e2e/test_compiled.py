"""``OLLAMA_TORCH_COMPILE=1`` through the real server: the load compiles the decode step (logged, with
its time in ``load_duration``), the step is saved in ``<models>/compiled/<versions>`` with inductor's kernels
(what other versions left there is removed) and a reload after an unload loads it, and every answer is Transformers' own greedy output: one stream decoding through the compiled step,
and two streams together (a batch of two, compiled as its own bucket, then the longer one goes on alone,
in the bucket of one, over the same cache), and the reloaded step after a long answer, on buffers wider than
the next answer's window; a LoRA model on the same base leaves the base's batches on the compiled step."""

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

    models = compiled_server.models
    stale = models / "compiled" / "torch-2.0.0-transformers-4.40.0"  # what an older torch left: removed at the load
    stale.mkdir(parents=True)
    (stale / "decode-0.pt2").write_bytes(b"old")
    (models / "compiled" / "decode-1.pt2").write_bytes(b"old")  # the layout before per-version directories
    client = ollama.Client(host=compiled_server.url, timeout=600)
    client.create(model="tiny", files=upload_dir(client, tiny_llama_dir))
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    reference = greedy_reference(tiny_llama_dir)

    def run(prompt: str, n: int) -> tuple[list[int], ollama.GenerateResponse]:
        done = client.generate(model="tiny", prompt=prompt, template="{{ .Prompt }}",
                               options={"temperature": 0, "num_predict": n, "num_ctx": 1024})
        assert done.context is not None
        return list(done.context[len(tok(prompt)["input_ids"]):]), done

    # past the cache's first capacity: its buffers grow (this prompt's answer does not end sooner; the next
    # requests' windows are then narrower than the buffers)
    tokens, first = run("The lighthouse keeper", 300)
    assert len(tokens) == 300 and tokens == reference("The lighthouse keeper", 300)
    import torch
    import transformers

    versions = f"torch-{torch.__version__}-transformers-{transformers.__version__}".replace("+", "_")
    assert [p.name for p in (models / "compiled").iterdir()] == [versions]  # the stale ones are gone
    assert any((models / "compiled").rglob("*.py")) or any((models / "compiled").rglob("*.so"))  # inductor's kernels
    assert first.load_duration is not None and first.load_duration > 0

    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(run, p, n) for p, n in (("Once upon a time", 40), ("The lighthouse keeper", 200))]
        results = [f.result()[0] for f in runs]
    assert results == [reference("Once upon a time", 40), reference("The lighthouse keeper", 200)]

    client.generate(model="tiny", prompt="", keep_alive=0)  # unload; the next request loads it again
    tokens, _ = run("The lighthouse keeper", 300)
    assert len(tokens) == 300 and tokens == reference("The lighthouse keeper", 300)
    # the loaded step on buffers the long answer left wider than the next one's window (it failed there, and
    # the model decoded eager from then on)
    tokens, _ = run("Once upon a time", 40)
    assert tokens == reference("Once upon a time", 40)
    log = compiled_server.log()
    assert log.count("decode step compiled in") == 2, log
    # the first load compiled the step ahead of time and saved it; the reload loaded it from its file
    assert "(1 rows: compiled, 2 rows: compiled)" in log and "(1 rows: loaded, 2 rows: loaded)" in log, log
    assert len(list((models / "compiled").rglob("decode-*.pt2"))) == 2  # OLLAMA_NUM_PARALLEL=4: buckets 1 and 2
    assert not compiled_server.compiled_decode_fallback(), log
    assert "FutureWarning" not in log, log  # Transformers' deprecation of the cache argument we pass (loader.py)



def test_an_adapter_on_the_resident_base_leaves_its_batches_compiled(compiled_server: ServerProcess, tiny_llama_dir: Path,
                                                                    tmp_path: Path) -> None:
    """A LoRA model on the compiled base: its rows decode eager (PEFT's greedy tokens), the base's batches stay on the
    compiled step once the adapter is on the shared model (its layers' ``forward`` routed, the module tree the step
    was traced on unchanged: swapping modules broke the step and sent the model eager for good), alone and beside
    an adapter row in a batch, and give Transformers' greedy tokens."""
    from transformers import AutoTokenizer

    from tests.lora_support import peft_greedy, train_lora

    client = ollama.Client(host=compiled_server.url, timeout=600)
    client.create(model="tiny-base", files=upload_dir(client, tiny_llama_dir))
    adapter = train_lora(tiny_llama_dir, tmp_path / "qv", seed=5)
    files = {p.name: client.create_blob(p) for p in sorted(adapter.iterdir()) if p.name.startswith("adapter_")}
    client.create(model="tiny-lora", from_="tiny-base", adapters=files)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    reference = greedy_reference(tiny_llama_dir)
    prompt = "Once upon a time"
    ids = list(tok(prompt)["input_ids"])

    def run(model: str, n: int) -> list[int]:
        done = client.generate(model=model, prompt=prompt, template="{{ .Prompt }}",
                               options={"temperature": 0, "num_predict": n, "num_ctx": 1024})
        assert done.context is not None
        return list(done.context[len(ids):])

    assert run("tiny-base", 30) == reference(prompt, 30)  # the base's steps compiled (or loaded) first
    with_adapter = peft_greedy(tiny_llama_dir, [adapter], ids, 30)
    assert with_adapter != reference(prompt, 30)  # the adapter really changes the output
    assert run("tiny-lora", 30) == with_adapter
    assert run("tiny-base", 30) == reference(prompt, 30)
    with ThreadPoolExecutor(2) as pool:  # a batch of an adapter row and a base row, then the base alone
        lora, base = pool.submit(run, "tiny-lora", 20), pool.submit(run, "tiny-base", 60)
        assert (lora.result(), base.result()) == (with_adapter[:20], reference(prompt, 60))
    assert not compiled_server.compiled_decode_fallback(), compiled_server.log()


def test_unset_a_cpu_compiles_in_the_background_while_the_model_serves(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """``OLLAMA_TORCH_COMPILE`` unset: the first load serves at once, eager, while a thread compiles the step;
    an unload and a reload meanwhile serve too; once the compile is logged the compiled step serves; a reload
    then finds the step saved and loads it (also off the load's path). Every answer is Transformers' greedy one."""
    import time

    from transformers import AutoTokenizer

    server = start_server(tmp_path / "models", tmp_path / "server.log", env={"OLLAMA_TORCH_COMPILE": "", "OLLAMA_NUM_PARALLEL": "2"})
    try:
        client = ollama.Client(host=server.url, timeout=600)
        client.create(model="tiny", files=upload_dir(client, tiny_llama_dir))
        tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
        reference = greedy_reference(tiny_llama_dir)

        def run(prompt: str, n: int) -> list[int]:
            done = client.generate(model="tiny", prompt=prompt, template="{{ .Prompt }}",
                                   options={"temperature": 0, "num_predict": n, "num_ctx": 1024})
            assert done.context is not None
            return list(done.context[len(tok(prompt)["input_ids"]):])

        assert run("Why is the sea blue?", 40) == reference("Why is the sea blue?", 40)
        log = server.log()
        assert "decode step compiled in" not in log, log  # the answer did not wait for the compile
        client.generate(model="tiny", prompt="", keep_alive=0)  # unloaded while it compiles: the reload serves too
        assert run("Why is the sea blue?", 40) == reference("Why is the sea blue?", 40)
        deadline = time.monotonic() + 600
        while "decode step compiled in" not in server.log() and time.monotonic() < deadline:
            assert run("Once upon a time", 8) == reference("Once upon a time", 8)  # served (eager) meanwhile
            time.sleep(1)
        assert run("The lighthouse keeper", 120) == reference("The lighthouse keeper", 120)  # compiled
        log = server.log()
        assert "in the background, serving uncompiled" in log, log
        assert "rows: compiled)" in log or "rows: loaded)" in log, log  # loaded: the unloaded model's compile saved it
        assert not server.compiled_decode_fallback() and "Traceback" not in log, log

        client.generate(model="tiny", prompt="", keep_alive=0)  # unload; the reload loads the saved step
        before = len(server.log())
        assert run("Why is the sea blue?", 40) == reference("Why is the sea blue?", 40)
        while "decode step compiled in" not in server.log()[before:] and time.monotonic() < deadline:
            time.sleep(0.2)
        reload = server.log()[before:]
        assert "loading its saved decode steps" in reload and "(1 rows: loaded)" in reload, reload
        assert "in the background" not in reload, reload
    finally:
        server.stop()


def test_without_a_cpp_compiler_the_model_serves_uncompiled(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """A machine without g++ (inductor's CPU kernels are C++): one clear log line, no traceback, and the model
    serves; nothing is written under ``<models>/compiled``."""
    import time

    from transformers import AutoTokenizer

    server = start_server(tmp_path / "models", tmp_path / "server.log",
                          env={"OLLAMA_TORCH_COMPILE": "", "CXX": str(tmp_path / "no-such-compiler")})
    try:
        client = ollama.Client(host=server.url, timeout=600)
        client.create(model="tiny", files=upload_dir(client, tiny_llama_dir))
        reference = greedy_reference(tiny_llama_dir)
        done = client.generate(model="tiny", prompt="Why is the sea blue?", template="{{ .Prompt }}",
                               options={"temperature": 0, "num_predict": 20})
        prompt_tokens = len(AutoTokenizer.from_pretrained(tiny_llama_dir)("Why is the sea blue?")["input_ids"])
        assert done.context is not None and list(done.context[prompt_tokens:]) == reference("Why is the sea blue?", 20)
        deadline = time.monotonic() + 120  # the load serves first; the background thread finds no compiler
        while "inductor finds no C++ compiler" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        log = server.log()
        assert "inductor finds no C++ compiler" in log and "Traceback" not in log, log
        assert not (server.models / "compiled").exists()
    finally:
        server.stop()
